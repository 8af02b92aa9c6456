"""`python run.py --dataset mnist` end to end on the offline digits: files, figures, learning."""

import json
import math
import os

import pytest
from PIL import Image

from ugvae import run
from ugvae.trained.metrics import read_metrics

pytestmark = pytest.mark.slow  # every test here trains or spawns processes


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("runs")
    assert (
        run.main(
            ["--dataset", "mnist", "--epochs", "4", "--runs-dir", str(runs_dir), "--quiet", "--checkpoint-every", "50"]
        )
        == 0
    )
    (run_dir,) = [os.path.join(runs_dir, d) for d in os.listdir(runs_dir)]
    return run_dir


def test_run_directory_holds_every_output(mnist_run):
    assert os.path.basename(mnist_run).startswith("mnist-ugvae-")
    for name in ("config.json", "metrics.csv", "summary.json", "loss_curve.png", "reconstructions.png", "samples.png"):
        assert os.path.isfile(os.path.join(mnist_run, name)), name
    checkpoints = os.listdir(os.path.join(mnist_run, "checkpoints"))
    assert checkpoints and all(c.endswith(".safetensors") for c in checkpoints)
    config = json.load(open(os.path.join(mnist_run, "config.json")))
    assert config["model"]["K"] == 10 and config["train"]["group_size"] == 128


def test_figures_are_real_images(mnist_run):
    for name in ("loss_curve.png", "reconstructions.png", "samples.png"):
        image = Image.open(os.path.join(mnist_run, name)).convert("L")
        assert min(image.size) > 100
        lo, hi = image.getextrema()
        assert hi - lo > 100, f"{name} is blank"


def test_test_elbo_improves_every_epoch_and_usage_is_logged(mnist_run):
    rows = read_metrics(os.path.join(mnist_run, "metrics.csv"))
    epochs = [r for r in rows if not math.isnan(r["test_elbo"])]
    assert [r["epoch"] for r in epochs] == [0, 1, 2, 3]
    elbos = [r["test_elbo"] for r in epochs]
    assert all(b > a for a, b in zip(elbos, elbos[1:])), elbos
    assert all(0 <= r["cluster_entropy"] <= math.log(10) + 1e-6 for r in epochs)
    assert all(1 <= r["clusters_used"] <= 10 for r in epochs)
    steps = [r for r in rows if math.isnan(r["test_elbo"])]
    assert len(steps) >= 10  # a row per logged step


def test_load_run_restores_the_trained_weights(mnist_run):
    from ugvae import load_run

    config = load_run(mnist_run)

    assert config.train_cfg.dataset == "mnist" and config.model_cfg.K == 10
    summary = json.load(open(os.path.join(mnist_run, "summary.json")))
    assert summary["epochs"] == 4 and summary["test_elbo"] == pytest.approx(
        read_metrics(os.path.join(mnist_run, "metrics.csv"))[-1]["test_elbo"]
    )
