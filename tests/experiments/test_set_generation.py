"""The set-generation experiment on tiny runs: its sets, generators, scores, files, and its errors."""

import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import tiny_train
from ugvae import run as cli
from ugvae.data import load_dataset
from ugvae.errors import ConfigError, RunError
from ugvae.experiments.set_generation import SetGenerationSettings, set_generation
from ugvae.experiments.set_generation.generators import beta_sampling, member_code, set_cluster_mix, set_code_gaussian
from ugvae.experiments.set_generation.held_out_sets import factor_sets, mix_sets
from ugvae.experiments.set_generation.scores import class_mix_tv, diversity, novelty
from ugvae.guide import GlobalPosterior, LocalPosterior
from ugvae.trained import load_run

TINY = ["--sets", "8", "--generated", "6", "--reader-sets", "6", "--group-sizes", "2", "4"]


def run_cli(run_dir, *flags) -> int:
    return cli.main(["experiment", "set-generation", "--run", run_dir, *flags, *TINY])


@pytest.fixture(scope="module")
def ugvae_run(tmp_path_factory):
    return tiny_train(tmp_path_factory, "ugvae")


@pytest.fixture(scope="module")
def baselines(tmp_path_factory):
    return [tiny_train(tmp_path_factory, m) for m in ("mlvae", "vae", "gmvae")]


def read(run_dir, name="set-generation"):
    out = os.path.join(run_dir, "experiments", name)
    return out, json.load(open(os.path.join(out, "results.json")))


@pytest.mark.slow
def test_mix_sets_score_every_generator_of_the_run_and_of_each_baseline(ugvae_run, baselines):
    assert run_cli(ugvae_run, "--baseline-runs", *baselines, "--alphas", "0.3", "1") == 0
    out, result = read(ugvae_run)
    assert {"results.json", "table.md", "sets-mix.png"} <= set(os.listdir(out))
    rows = result["rows"]
    assert {r["kind"] for r in rows} == {"mix"} and result["settings"]["alphas"] == [0.3, 1.0]
    ugvae = ["beta sampling", "set-code Gaussian", "member code + noise", "set's q(d) mix", "beta ~ p(beta)"]
    expected = {("this run", g) for g in ugvae} | {("new real images", "new real images")}
    labels = {m: f"{m} ({os.path.basename(b)})" for m, b in zip(("mlvae", "vae", "gmvae"), baselines)}
    expected |= {
        (labels["mlvae"], g) for g in ["beta sampling", "set-code Gaussian", "member code + noise", "beta ~ p(beta)"]
    }
    expected |= {(labels["vae"], g) for g in ["set-code Gaussian", "member code + noise", "z ~ p(z)"]}
    expected |= {
        (labels["gmvae"], g) for g in ["set-code Gaussian", "member code + noise", "set's q(d) mix", "z ~ p(z)"]
    }
    for B in (2, 4):
        for alpha in (0.3, 1.0):
            cell = [r for r in rows if r["group_size"] == B and r["alpha"] == alpha]
            assert {(r["source"], r["generator"]) for r in cell} == expected
            assert all(0 <= r["tv"][0] <= 1 and r["tv"][1] >= 0 for r in cell)
            reference = next(r for r in cell if r["source"] == "new real images")
            assert reference["novelty"] == pytest.approx(1.0) and reference["diversity"] == pytest.approx(1.0)
    assert "| 4 | this run | beta sampling |" in open(os.path.join(out, "table.md")).read()
    assert set(result["diagnostics"]["classifier accuracy"]) >= {"real test images", "this run: reconstructions"}
    # A second call writes next to the first, never over it.
    assert run_cli(ugvae_run, "--alphas", "1") == 0
    assert os.path.isdir(os.path.join(ugvae_run, "experiments", "set-generation-2"))
    assert read(ugvae_run)[1]["settings"]["alphas"] == [0.3, 1.0]


@pytest.mark.slow
def test_factor_sets_are_read_by_three_readers(tmp_path_factory):
    grouped = tiny_train(tmp_path_factory, "ugvae", dataset="grouped:synthetic:200")
    assert run_cli(grouped) == 0
    out, result = read(grouped)
    assert "sets-factors.png" in os.listdir(out)
    assert {r["kind"] for r in result["rows"]} == {"factors"} and result["factor_names"] == ["angle", "gain"]
    for r in result["rows"]:
        assert set(r["r2"]) == {"real images", "reconstructions", "own sets"}
        readers = [v for v in r["r2"].values() if v is not None]
        assert all(len(v) == 2 and max(v) <= 1 for v in readers)
        assert (r["r2"]["reconstructions"] is None) == (r["source"] == "new real images")


def test_a_folder_run_takes_its_sub_folders_as_the_sets(tmp_path_factory):
    from ugvae.model import ModelConfig
    from ugvae.train import fit
    from ugvae.trained import TrainConfig

    root = tmp_path_factory.mktemp("sets")
    rng = np.random.default_rng(0)
    for k, brightness in enumerate((30, 120, 220)):
        (root / f"set{k}").mkdir()
        for i in range(24):
            pixels = np.clip(brightness + rng.integers(-20, 20, size=(8, 8)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(root / f"set{k}" / f"{i}.png")
    cfg = TrainConfig(dataset=f"folder:{root}", image_size=8, groups="labels:0", epochs=1, group_size=4)
    model_cfg = ModelConfig(x_shape=(1, 8, 8), z_dim=2, beta_dim=2, K=3, hidden=16)
    run_dir = fit(cfg, model_cfg, runs_dir=str(tmp_path_factory.mktemp("runs"))).run_dir
    assert run_cli(run_dir) == 0
    _, result = read(run_dir)
    assert result["settings"]["alphas"] == [0.0] and {r["kind"] for r in result["rows"]} == {"mix"}


def test_bad_settings_and_mismatched_baselines_are_refused(ugvae_run, tmp_path_factory):
    run = load_run(ugvae_run)
    with pytest.raises(ConfigError, match="`group_sizes`"):
        set_generation(run, SetGenerationSettings(group_sizes=[1, 4]))
    with pytest.raises(ConfigError, match="`kinds`"):
        set_generation(run, SetGenerationSettings(kinds=["colours"]))
    from ugvae.model import ModelConfig
    from ugvae.train import fit
    from ugvae.trained import TrainConfig

    cfg = TrainConfig(dataset="synthetic:200", image_size=14, epochs=1, group_size=4, groups_per_step=5)
    small = fit(cfg, ModelConfig(x_shape=(1, 14, 14), hidden=16), runs_dir=str(tmp_path_factory.mktemp("r"))).run_dir
    with pytest.raises(ConfigError, match="same data"):
        set_generation(run, SetGenerationSettings(sets=4, baseline_runs=[small]))
    # On the command line the error is one line, naming the flag of the field.
    assert cli.main(["experiment", "set-generation", "--run", ugvae_run, "--group-sizes", "1"]) == 2


def test_mix_sets_hold_the_rounded_shares_and_references_exclude_members():
    base = load_dataset("synthetic:500", "test")
    sets = mix_sets(base, 30, 8, 12, 0.3, seed=1)
    assert sets.members.shape == (30, 8, 1, 28, 28) and sets.reference.shape == (30, 12, 1, 28, 28)
    np.testing.assert_allclose(sets.shares.sum(1), 1.0, rtol=1e-6)
    assert ((sets.shares * 8).round() == sets.shares * 8).all()  # whole counts of 8
    flat_base = base.images.flatten(1)
    for s in range(5):
        member_ids = [int((flat_base == m.flatten()).all(1).nonzero()[0]) for m in sets.members[s]]
        counts = np.bincount(base.labels[member_ids].numpy(), minlength=10) / 8
        np.testing.assert_allclose(counts, sets.shares[s].numpy(), atol=1e-6)
        ref_ids = [int((flat_base == r.flatten()).all(1).nonzero()[0]) for r in sets.reference[s]]
        assert not set(ref_ids) & set(member_ids)
    # The reference is not grouped by class (the PNG shows its first images as the set's mix).
    sorted_refs = 0
    for s in range(30):
        ref_labels = [int(base.labels[(flat_base == r.flatten()).all(1).nonzero()[0]]) for r in sets.reference[s]]
        sorted_refs += ref_labels == sorted(ref_labels)
    assert sorted_refs < 15
    one_class = mix_sets(base, 10, 4, 4, 0.0, seed=2)
    assert (one_class.shares.max(1).values == 1).all()


def test_factor_sets_reference_images_share_the_set_factors():
    base = load_dataset("synthetic:500", "test")
    sets = factor_sets(base, 6, 4, 5, seed=3)
    assert sets.factors.shape == (6, 2) and sets.reference.shape == (6, 5, 1, 28, 28)
    # A gain of g scales the brightest pixel to about 255 g, for members and references alike.
    for s in range(6):
        top = sets.factors[s, 1] * 255
        assert abs(sets.members[s].float().amax() - top) < 20 and abs(sets.reference[s].float().amax() - top) < 20


def test_scores_by_hand():
    shares = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    predicted = torch.tensor([[0, 0, 0, 1], [2, 2, 0, 0]])
    torch.testing.assert_close(class_mix_tv(predicted, shares), torch.tensor([0.25, 0.5]))
    members, reference = torch.rand(3, 4, 1, 5, 5), torch.rand(3, 6, 1, 5, 5)
    assert novelty(members[:, :2], members, reference) == 0  # copies of members
    assert diversity(reference[:, :1].expand(-1, 6, -1, -1, -1), reference) == 0  # one image repeated
    assert novelty(reference, members, reference) == pytest.approx(1.0)


class Codes:
    """A stand-in run whose decoder returns z itself, so generated "images" are the codes drawn."""

    def __init__(self, z_loc, z_scale, pi=None, beta=None, loc=None):
        post = LocalPosterior(z_loc=z_loc, z_scale=z_scale, pi=pi)
        self.guide = SimpleNamespace(
            local_posterior=lambda x: post,
            global_posterior=lambda x: GlobalPosterior(beta, torch.ones_like(beta)),
            has_global_latent=beta is not None,
        )
        self.model = SimpleNamespace(
            decode=lambda z, b=None: z,
            prior_components=lambda b: (loc.expand(len(b), -1, -1), torch.full_like(loc, 1e-3).expand(len(b), -1, -1)),
        )


def test_code_generators_draw_from_the_moments_and_the_members_of_the_set():
    torch.manual_seed(0)
    z_loc, z_scale = torch.tensor([[[0.0, 10.0], [4.0, 10.0]]]), torch.full((1, 2, 2), 0.5)
    x = torch.zeros(1, 2, 1, 2, 2)
    gaussian = set_code_gaussian(Codes(z_loc, z_scale), x, 20000)[0]
    torch.testing.assert_close(gaussian.mean(0), torch.tensor([2.0, 10.0]), atol=0.05, rtol=0)
    torch.testing.assert_close(gaussian.var(0), torch.tensor([4.25, 0.25]), atol=0.1, rtol=0)  # var of locs + scale^2
    member = member_code(Codes(z_loc, z_scale), x, 2000)[0]
    nearest = torch.cdist(member, z_loc[0]).min(-1).values
    assert (nearest < 3).all() and abs((member[:, 0] > 2).float().mean() - 0.5) < 0.05


def test_the_cluster_mix_generator_draws_clusters_in_the_sets_mean_q_d():
    torch.manual_seed(1)
    pi = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]])
    loc = torch.tensor([[[0.0], [1.0], [2.0]]])  # component k sits at k
    run = Codes(torch.zeros(1, 4, 1), torch.ones(1, 4, 1), pi=pi, beta=torch.zeros(1, 2), loc=loc)
    z = set_cluster_mix(run, torch.zeros(1, 4, 1, 2, 2), 4000)[0, :, 0].round()
    shares = torch.stack([(z == k).float().mean() for k in range(3)])
    torch.testing.assert_close(shares, torch.tensor([0.25, 0.0, 0.75]), atol=0.03, rtol=0)


def test_beta_sampling_conditions_the_model_on_the_posterior_mean(ugvae_run):
    run = load_run(ugvae_run)
    x = torch.rand(3, 4, 1, 28, 28)
    seen = {}
    logits = run.model.logits  # what the program decodes its x from
    run.model.logits = lambda z, beta: seen.setdefault("beta", beta) is not None and logits(z, beta)
    images = beta_sampling(run, x, 5)
    assert images.shape == (3, 5, 1, 28, 28)
    torch.testing.assert_close(seen["beta"][:, 0], run.guide.global_posterior(x).loc)


def test_tiny_factor_sets_and_an_experiments_file_give_results_or_one_line(ugvae_run, tmp_path):
    """A third hostile pass: 4 sets left sklearn's early stopping no validation images (a
    traceback), and a file named `experiments` in the run gave NotADirectoryError."""
    tiny = dict(sets=4, reader_sets=4, generated=6, group_sizes=[2])
    result = set_generation(load_run(ugvae_run), SetGenerationSettings(kinds=["factors"], **tiny))
    assert {r["kind"] for r in result.results["rows"]} == {"factors"}
    run_copy = shutil.copytree(ugvae_run, tmp_path / "run")
    shutil.rmtree(run_copy / "experiments")
    (run_copy / "experiments").write_text("mine")
    with pytest.raises(RunError, match="experiments is a file where a folder of outputs belongs"):
        set_generation(load_run(str(run_copy)), SetGenerationSettings(kinds=["mix"], **tiny))
    assert (run_copy / "experiments").read_text() == "mine"
