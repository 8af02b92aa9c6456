"""The domain-alignment experiment on a tiny UG-VAE trained on two synthetic image folders."""

import json
import os

import pytest
import torch

from tests.helpers import fail_at_figure, files_under, train_small_images, write_domain
from ugvae import progress
from ugvae import run as cli
from ugvae.errors import ConfigError, RunError
from ugvae.experiments import domain_alignment
from ugvae.experiments.domain_alignment import DomainAlignmentSettings
from ugvae.experiments.group_features import encode_groups
from ugvae.guide import build
from ugvae.trained import load_run

TINY = dict(z_dim=2, beta_dim=2, K=3, hidden=16)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("domains")
    return write_domain(root / "dark", 40, 30), write_domain(root / "bright", 40, 220, seed=1)


@pytest.fixture(scope="module")
def mixture_runs(tmp_path_factory, folders):
    dark, bright = folders
    runs = tmp_path_factory.mktemp("runs")
    dataset = f"folder:{dark}+folder:{bright}"
    return train_small_images(runs, dataset), train_small_images(runs, dataset, model="vae", epochs=1)


def experiment(run_dir: str, **settings) -> domain_alignment.DomainAlignmentResult:
    return domain_alignment.domain_alignment(load_run(run_dir), DomainAlignmentSettings(**settings))


@pytest.mark.slow
def test_figures_and_accuracy_table(mixture_runs, capsys, monkeypatch):
    monkeypatch.setattr(progress, "DELAY_S", 0)
    run_dir, vae_dir = mixture_runs
    # Through the command line: --baseline-runs and --probe-sizes are lists.
    argv = ["experiment", "domain-alignment", "--run", run_dir, "--baseline-runs", vae_dir, "--num-groups", "8"]
    assert cli.main([*argv, "--steps", "3", "--probe-sizes", "1", "4"]) == 0
    out = os.path.join(run_dir, "experiments", "domain-alignment")
    captured = capsys.readouterr()
    assert "domain accuracy: 100% (8/8 probes)" in captured.err  # 4 codes x 2 probe sizes
    printed = captured.out.splitlines()
    assert printed[0] == "accuracy telling pure dark from pure bright groups, at group sizes [1, 4]:"
    assert printed[-1] == f"figures and numbers in {out}" and len(printed) == 2 + 4
    for name in ("cross_domain.png", "within_domain.png", "beta_tsne.png"):
        with open(os.path.join(out, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(out, "domain_alignment.json")) as f:
        result = json.load(f)
    changes = result["interpolation_mean_abs_pixel_change"]
    assert list(changes) == ["(a) dark -> bright", "(b) dark -> dark"]  # folders named by their last part
    assert all(v >= 0 for change in changes.values() for v in change.values())
    rows = {row["model"]: row for row in result["accuracy_table"]}
    assert list(rows) == ["ugvae", "vae", "untrained ugvae", "none"]
    assert rows["vae"]["code"] == "group mean of E q(z|x)" and rows["vae"]["run"] == str(vae_dir)
    for row in rows.values():
        assert set(row["accuracy"]) == {"1", "4"}
        assert all(0.0 <= a <= 1.0 for a in row["accuracy"].values())
    # The domains differ in background brightness, which any sensible group code sees.
    assert rows["none"]["accuracy"]["4"] == 1.0
    assert rows["ugvae"]["accuracy"]["4"] >= 0.9


def test_interpolation_grid_corners_are_the_two_posteriors(mixture_runs):
    trained = load_run(mixture_runs[0])
    model, guide = trained.model, trained.guide
    x = torch.rand(2, 4, 1, 8, 8)
    grid, betas = domain_alignment.interpolation(model, guide, x[0], x[1], steps=3)
    assert grid.shape == (9, 1, 8, 8) and betas.shape == (3, 2)
    beta = guide.global_posterior(x)[0]
    z = guide.local_posterior(x)[0][:, 0]
    torch.testing.assert_close(grid[0], model.decode(z[0], beta[0]))
    torch.testing.assert_close(grid[8], model.decode(z[1], beta[1]))
    torch.testing.assert_close(grid[2], model.decode(z[1], beta[0]))  # first row: beta_1, z moves
    torch.testing.assert_close(betas[1], beta.mean(0))
    changes = domain_alignment.endpoint_changes(grid.view(3, 3, 1, 8, 8))
    z_path = torch.stack([z[0], z.mean(0), z[1]])
    expected = (model.decode(z_path, beta[1]) - model.decode(z_path, beta[0])).abs().mean()
    assert changes["beta_1 -> beta_2"] == pytest.approx(expected.item(), rel=1e-4)


def test_models_without_beta_are_coded_by_the_mean_local_posterior(tiny_cfg):
    _, guide = build(tiny_cfg, "vae")
    images = torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8)
    groups = torch.arange(10).view(2, 5)
    codes = encode_groups(guide, images, groups).loc
    expected = guide.local_posterior(images[groups].float() / 255)[0].mean(1)
    torch.testing.assert_close(codes, expected)


def test_classifier_accuracy_is_chance_without_signal_and_perfect_with_it():
    a, b = torch.randn(40, 3), torch.randn(40, 3)
    assert domain_alignment.domain_accuracy(a, b)[0] < 0.75
    assert domain_alignment.domain_accuracy(a, b + 10)[0] == 1.0


def test_a_run_without_two_domains_is_refused(tmp_path, folders, mixture_runs):
    with pytest.raises(RunError, match="not on two datasets"):
        experiment(train_small_images(tmp_path, f"folder:{folders[0]}", epochs=1))
    with pytest.raises(RunError, match="no global latent.*`baseline_runs`"):
        experiment(mixture_runs[1])


def test_the_result_holds_the_numbers_of_the_json_and_bad_settings_name_their_field(mixture_runs, capsys):
    run_dir = mixture_runs[0]
    result = experiment(run_dir, num_groups=4, steps=2, probe_sizes=[2], group_size=2)
    with open(os.path.join(result.out_dir, "domain_alignment.json")) as f:
        saved = json.load(f)
    assert result.probe_sizes == [2] and saved["group_size"] == 2
    assert [row["model"] for row in result.accuracy_table] == ["ugvae", "untrained ugvae", "none"]
    assert [row["accuracy"]["2"] for row in saved["accuracy_table"]] == [
        row["accuracy"][2] for row in result.accuracy_table
    ]
    assert [os.path.basename(f) for f in result.files] == [
        "cross_domain.png",
        "within_domain.png",
        "beta_tsne.png",
        "domain_alignment.json",
    ]
    with pytest.raises(ConfigError, match="`steps` must be between 2 and 64, got 1"):
        experiment(run_dir, steps=1)
    assert cli.main(["experiment", "domain-alignment", "--run", run_dir, "--num-groups", "1"]) == 2
    assert "error: --num-groups must be between 2 and 65536, got 1" in capsys.readouterr().err


def test_a_killed_run_leaves_no_output_that_looks_complete(mixture_runs, monkeypatch):
    """Issue 29 D10: the figures were in RUN/experiments/domain-alignment/ before its JSON."""
    experiments = os.path.join(mixture_runs[0], "experiments")
    before = files_under(experiments)
    fail_at_figure(monkeypatch, 2)
    with pytest.raises(RuntimeError, match="killed"):
        experiment(mixture_runs[0], num_groups=4, steps=2, probe_sizes=[2], group_size=2)
    assert files_under(experiments) == before
