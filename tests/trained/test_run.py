"""`Run`: one owner of a run's config, identity and files, and the Python face of a trained run."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

import ugvae
from tests.helpers import tiny_train
from ugvae.data import load_dataset, seeded_partition, to_unit_float
from ugvae.errors import DataError, RunError
from ugvae.trained import Run, load_run, upgrade_run
from ugvae.trained.checkpoint import OlderCheckpoints

FIXTURE_V1 = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "run-v1")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return tiny_train(tmp_path_factory, "ugvae")


@pytest.fixture(scope="module")
def test_groups(trained):
    test = load_dataset("synthetic:200", "test")
    return to_unit_float(test.images[seeded_partition(len(test), 4)[:3]])  # (3, 4, 1, 28, 28)


def test_the_package_offers_the_api_by_name():
    assert ugvae.load_run is load_run and ugvae.Run is Run
    assert {"fit", "resume", "load_run", "Run", "TrainConfig", "ModelConfig"} <= set(dir(ugvae))


def test_embed_gives_the_guides_posteriors_for_one_or_several_groups(trained, test_groups):
    run = load_run(trained)
    e = run.embed(test_groups)
    posterior = run.guide.global_posterior(test_groups)
    np.testing.assert_allclose(e.beta_loc, posterior.loc.numpy(), atol=1e-5)
    np.testing.assert_allclose(e.beta_scale, posterior.scale.numpy(), atol=1e-5)
    assert e.z_loc.shape == (12, 2) and e.pi.shape == (12, 3) and list(e.group_size) == [4, 4, 4]
    one = run.embed(test_groups[1])  # (B, C, H, W): one group
    np.testing.assert_allclose(one.beta_loc[0], e.beta_loc[1], atol=1e-5)
    assert set(e.arrays()) >= {"beta_loc", "z_loc", "pi", "group_source", "sample_name"}


def test_sample_reconstruct_and_evaluate(trained, test_groups):
    run = load_run(trained)
    drawn = run.sample(3, 5, seed=1)
    assert drawn.images.shape == (3, 5, 1, 28, 28) and drawn.sources == ["p(beta)"] * 3
    like = run.sample(2, 4, beta_from=test_groups)  # two groups for each of the three sets
    e = run.embed(test_groups)
    torch.testing.assert_close(like.beta, torch.from_numpy(e.beta_loc).repeat_interleave(2, 0), atol=1e-5, rtol=0)
    assert run.reconstruct(test_groups).shape == test_groups.shape

    scores = run.evaluate(samples=3)
    assert scores["iwae"] > scores["test_elbo"] and scores["step"] == run.step and scores["run_id"] == run.run_id
    # The test ELBO of the last epoch (summary.json) is the one `evaluate` gives: same groups, same draws.
    summary = json.load(open(run.path("summary.json")))
    assert scores["test_elbo"] == pytest.approx(summary["test_elbo"], rel=1e-6)


@pytest.mark.parametrize(
    "images, words",
    [
        (torch.zeros(0, 4, 1, 28, 28), ["shaped (G, B, 1, 28, 28)", "B >= 1"]),
        (torch.zeros(2, 4, 1, 32, 32), ["shaped", "got (2, 4, 1, 32, 32)"]),
        (torch.zeros(2, 4, 1, 28, 28, dtype=torch.int64), ["floats in [0, 1] or uint8", "int64"]),
        (torch.full((2, 4, 1, 28, 28), 255.0), ["[0, 1]", "divide 0..255"]),
        ([[0.5]], ["a folder or a tensor"]),
    ],
    ids=["empty", "wrong size", "wrong dtype", "0..255 floats", "a list"],
)
@pytest.mark.parametrize("method", ["embed", "reconstruct"])
def test_bad_images_are_refused_with_a_data_error_naming_the_fix(trained, images, words, method):
    run = load_run(trained)
    with pytest.raises(DataError) as e:
        getattr(run, method)(images)
    assert isinstance(e.value, ValueError) and all(word in str(e.value) for word in words)


def test_reconstruct_takes_one_group_or_pixels_and_gives_groups_in_unit_range(trained):
    run = load_run(trained)
    pixels = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    from_pixels = run.reconstruct(pixels)
    from_floats = run.reconstruct(pixels.unsqueeze(0).double() / 255)
    assert from_pixels.shape == (1, 4, 1, 28, 28) and from_pixels.dtype == torch.float32
    assert 0 <= from_pixels.min() and from_pixels.max() <= 1
    torch.testing.assert_close(from_pixels, from_floats)


def test_a_run_reads_its_config_once_and_resolves_the_guide_name_once(trained, monkeypatch):
    reads = []
    real_open = os.open

    def counting_open(path, *args, **kwargs):  # files.read_json opens with os.open (O_NOFOLLOW)
        if str(path).endswith("config.json"):
            reads.append(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("os.open", counting_open)
    run = Run.open(trained)
    run.load_weights(), run.embed(torch.zeros(1, 2, 1, 28, 28)), run.sample(1, 2)
    assert len(reads) == 1 and run.guide_name == "structured" and run.model_name == "ugvae"


def test_a_run_made_before_run_ids_gets_one_once_and_keeps_its_checkpoints(tmp_path):
    run_dir = shutil.copytree(FIXTURE_V1, tmp_path / "v1")
    config = (run_dir / "config.json").read_text()
    with pytest.raises(OlderCheckpoints, match="ugvae upgrade"):
        Run.open(run_dir).load_weights()
    assert (run_dir / "config.json").read_text() == config  # a command that fails writes nothing
    first = upgrade_run(run_dir).adopted_id
    assert first and upgrade_run(run_dir).adopted_id is None  # once
    again = Run.open(run_dir)
    assert again.run_id == first and again.load_weights().step == 8


def test_open_refuses_what_is_no_run(tmp_path):
    with pytest.raises(RunError, match="no config.json"):
        Run.open(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(RunError, match="corrupt"):
        Run.open(tmp_path)


@pytest.mark.slow
def test_a_run_made_before_run_ids_extends_twice(tmp_path, one_thread):
    """Issue 22 (3): extending such a run gave it a new id at each call, after which no command
    accepted its checkpoints. Now it gets one id, once, and every later command uses its checkpoints."""
    from ugvae.train import resume

    run_dir = str(shutil.copytree(FIXTURE_V1, tmp_path / "v1"))
    upgrade_run(run_dir)
    first = resume(run_dir, epochs=2)
    second = resume(run_dir, epochs=3)
    assert first.run_id == second.run_id == json.load(open(os.path.join(run_dir, "config.json")))["run_id"]
    trained = load_run(run_dir)
    assert trained.step == 24 and json.load(open(trained.path("summary.json")))["epochs"] == 3


def test_opening_a_trained_run_and_embedding_loads_no_training_loop_and_no_pickle_reader(small_run, tmp_path):
    """Issue 26: `ugvae.load_run(RUN).embed(FOLDER)` imported 55 modules, the training loops among them."""
    from PIL import Image

    from tests.helpers import run_python

    for name in ("a", "b"):
        (tmp_path / "sets" / name).mkdir(parents=True)
        for i in range(2):
            Image.new("L", (28, 28), color=40 * i + 20).save(tmp_path / "sets" / name / f"{i}.png")
    code = (
        "import sys, ugvae\n"
        "ugvae.load_run(sys.argv[1]).embed(sys.argv[2])\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('ugvae'))))\n"
    )
    proc = run_python(code, small_run, tmp_path / "sets")
    assert proc.returncode == 0, proc.stderr
    loaded = proc.stdout.split()
    assert "ugvae.trained.run" in loaded and "ugvae.trained.inference" in loaded
    assert not [m for m in loaded if m == "ugvae.train" or m.startswith("ugvae.train.")], loaded
    assert "ugvae.trained.checkpoint.upgrade" not in loaded  # the one pickle reader loads only when asked for
