"""Interpolation grids: the latents of section 4.1, the files written, the choice of clusters."""

import dataclasses
import json
import os

import pytest
import torch
from PIL import Image

from tests.helpers import fail_at_figure, files_under, tiny_train
from ugvae import progress
from ugvae import run as cli
from ugvae.data import load_dataset
from ugvae.errors import ConfigError, RunError
from ugvae.experiments import interpolation
from ugvae.experiments.interpolation import InterpolationSettings
from ugvae.guide import build
from ugvae.model import MLVAEModel, UGVAEModel
from ugvae.trained import load_run
from ugvae.trained.outputs import latest_output


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return tiny_train(tmp_path_factory, "ugvae")


def run_experiment(run_dir: str, **settings) -> interpolation.InterpolationResult:
    return interpolation.interpolation(load_run(run_dir), InterpolationSettings(**settings))


def test_rows_move_beta_diagonally_and_columns_move_z_around_the_cluster_mean(tiny_cfg):
    model = UGVAEModel(tiny_cfg)
    z, beta = interpolation.interpolation_latents(model, cluster=2, rows=5, cols=7)
    assert z.shape == (5, 7, tiny_cfg.z_dim) and beta.shape == (5, 7, tiny_cfg.beta_dim)
    assert torch.allclose(beta[:, 0, :], torch.linspace(-1, 1, 5)[:, None].expand(5, tiny_cfg.beta_dim))
    assert torch.equal(beta[:, 0], beta[:, -1])
    mu_z = model.prior_components(beta[:, 0]).loc[:, 2]
    assert torch.allclose(z[:, 3], mu_z, atol=1e-6)  # the middle column is mu_z^(d)(beta)
    assert torch.allclose(z - mu_z[:, None], torch.linspace(-3, 3, 7)[None, :, None].expand_as(z), atol=1e-5)
    z0, _ = interpolation.interpolation_latents(MLVAEModel(tiny_cfg), cluster=0, rows=5, cols=7)
    assert torch.allclose(z0[:, 3], torch.zeros(5, tiny_cfg.z_dim))  # ML-VAE: around its N(0, I) prior
    images = interpolation.interpolation_grid(model, 2, 5, 7)
    assert images.shape == (5, 7) + tiny_cfg.x_shape
    assert torch.allclose(images[4, 0], model.decode(z[4, 0], beta[4, 0]))


def test_posterior_centre_shifts_the_rows_to_the_mean_of_q_beta(tiny_run):
    config = load_run(tiny_run)

    model, guide = config.model, config.guide
    images = load_dataset(config.train_cfg.dataset, "test").images
    centre = interpolation.posterior_centre(guide, images, config.train_cfg.group_size)
    _, beta = interpolation.interpolation_latents(model, 0, rows=3, cols=2, beta_centre=centre)
    torch.testing.assert_close(beta[1, 0], centre)  # the middle row is the posterior mean
    result = run_experiment(tiny_run, beta_centre="posterior", rows=3, cols=3)
    saved = json.load(open(os.path.join(result.out_dir, "interpolation.json")))
    assert saved["beta_centre"] == pytest.approx(centre.tolist(), abs=1e-6)


def test_grid_effects_tell_rows_from_columns():
    rows_only = torch.linspace(0, 1, 4)[:, None, None].expand(4, 5, 3)
    effects = interpolation.grid_effects(rows_only)
    assert effects["z_effect"] == 0 and effects["beta_effect"] == pytest.approx(1 / 3)


def test_writes_one_png_per_cluster_a_summary_and_json(tiny_run, capsys, monkeypatch):
    monkeypatch.setattr(progress, "DELAY_S", 0)  # show the progress of this quick run
    # Through the command line: flags to settings, the run loaded on the default device, the report.
    assert cli.main(["experiment", "interpolation", "--run", tiny_run, "--rows", "4", "--cols", "5"]) == 0
    out = latest_output(os.path.join(tiny_run, "experiments"), "interpolation")
    result = json.load(open(os.path.join(out, "interpolation.json")))
    captured = capsys.readouterr()
    printed = captured.out.splitlines()
    assert printed[-1] == f"wrote {out}" and len(printed) == 1 + len(result["grids"])
    assert "interpolation grids: 100% (3/3 grids)" in captured.err
    assert len(result["grids"]) == 3 and result["rows"] == 4 and result["cols"] == 5
    for grid in result["grids"]:
        assert grid["file"] == f"cluster_{grid['cluster']}.png" and os.path.isfile(os.path.join(out, grid["file"]))
        assert grid["z_effect"] > 0 and grid["beta_effect"] >= 0
    image = Image.open(os.path.join(out, "summary.png")).convert("L")
    assert min(image.size) > 200 and image.getextrema()[1] - image.getextrema()[0] > 100
    written = run_experiment(tiny_run, clusters=["all"], rows=2, cols=2)
    saved = json.load(open(os.path.join(written.out_dir, "interpolation.json")))
    assert sorted(g["cluster"] for g in saved["grids"]) == [0, 1, 2]
    # A new folder, the earlier one as it was: a rerun never mixes its files with another's.
    assert written.out_dir == latest_output(os.path.dirname(out), "interpolation") != out
    assert len(json.load(open(os.path.join(out, "interpolation.json")))["grids"]) == 3
    assert all(os.path.isfile(f) for f in written.files)
    assert [os.path.basename(f) for f in written.files] == [
        "cluster_0.png",
        "cluster_1.png",
        "cluster_2.png",
        "summary.png",
        "interpolation.json",
    ]
    assert run_experiment(tiny_run, clusters=[1], rows=2, cols=2).grids[0]["cluster"] == 1  # ints from Python


def test_bad_settings_name_the_field_and_the_command_line_shows_its_flag(tiny_run, capsys):
    with pytest.raises(ConfigError, match="`rows` must be between 2 and 64, got 1"):
        run_experiment(tiny_run, rows=1)
    assert cli.main(["experiment", "interpolation", "--run", tiny_run, "--clusters", "7"]) == 2
    assert "error: --clusters 7 is outside 0..2; the run has K=3" in capsys.readouterr().err


@pytest.mark.slow
def test_an_mlvae_run_gets_one_grid_around_the_prior_of_z(tmp_path_factory):
    mlvae_run = tiny_train(tmp_path_factory, "mlvae")
    run_experiment(mlvae_run, rows=3, cols=3)
    out = os.path.join(mlvae_run, "experiments", "interpolation")
    (grid,) = json.load(open(os.path.join(out, "interpolation.json")))["grids"]
    assert grid["cluster"] == 0 and grid["file"] == "cluster_0.png"  # its prior of z is a mixture of one
    assert os.path.isfile(os.path.join(out, "cluster_0.png")) and os.path.isfile(os.path.join(out, "summary.png"))


def test_default_clusters_are_the_most_used_and_bad_choices_are_refused():
    usage = lambda: torch.tensor([0.1, 0.5, 0.05, 0.35])  # noqa: E731
    assert interpolation.choose_clusters(None, 4, usage) == [1, 3, 0]
    assert interpolation.choose_clusters(["2", "0"], 4, usage) == [2, 0]
    with pytest.raises(ConfigError, match="`clusters` 4 is outside 0..3; the run has K=4"):
        interpolation.choose_clusters(["4"], 4, usage)
    with pytest.raises(ConfigError, match="`clusters` takes cluster numbers or 'all'"):
        interpolation.choose_clusters(["first"], 4, usage)


def test_a_run_without_global_latent_is_refused(tiny_run):
    trained = load_run(tiny_run)
    trained._trained = (*build(trained.model_cfg, "vae"), trained.step)
    trained.train_cfg = dataclasses.replace(trained.train_cfg, model="vae")
    with pytest.raises(RunError, match="the vae run .* has no global latent beta, so there is no beta to interpolate"):
        interpolation.interpolation(trained, InterpolationSettings())


def test_a_killed_run_leaves_no_output_that_looks_complete(tiny_run, monkeypatch):
    """Issue 29 D10: interpolation wrote RUN/experiments/interpolation/ file by file, so a kill left old
    and new grids mixed; now the folder appears whole, or not at all."""
    experiments = os.path.join(tiny_run, "experiments")
    before = files_under(experiments)
    fail_at_figure(monkeypatch, 2)
    with pytest.raises(RuntimeError, match="killed"):
        run_experiment(tiny_run, rows=2, cols=2)
    assert files_under(experiments) == before
