"""`evaluate` and `compare`: the IWAE bound is exact in the limit, and the CLI writes the table."""

import csv
import json
import math
import os
import warnings

import pyro
import pytest
import torch
from pyro.infer import TraceEnum_ELBO
from torch.distributions import Normal

from ugvae import run
from ugvae.data import load_dataset, seeded_partition
from ugvae.experiments.commands.evaluate import EvaluateSettings, evaluate_run
from ugvae.guide import GUIDES, build
from ugvae.model import ModelConfig
from ugvae.model.likelihood import pixel_distribution
from ugvae.train import fit
from ugvae.trained import TrainConfig, load_run
from ugvae.trained.evaluation import clustering_accuracy, iwae_bounds

pytestmark = pytest.mark.filterwarnings("ignore:TraceEnum_ELBO found no sample sites")


def exact_log_px(model, x: torch.Tensor, points: int = 401, limit: float = 8.0) -> torch.Tensor:
    """log p(X) (G,) by quadrature for one-dimensional z and beta, for any of the four models.

    log p(X) = log int p(beta) prod_i sum_k p(k) int p(z_i | k, beta) p(x_i | z_i, beta) dz_i dbeta,
    where the VAE has K = 1 standard-normal component, the GMVAE fixed components, and
    the VAE and GMVAE no beta.
    """
    grid = torch.linspace(-limit, limit, points, dtype=torch.float64)
    log_step = math.log(limit * 2 / (points - 1))
    has_beta = "beta" in pyro.poutine.trace(model).get_trace(None, group_size=1).nodes
    model = model.double()
    betas = grid[:, None] if has_beta else torch.zeros(1, 0, dtype=torch.float64)
    if hasattr(model, "cluster_prior"):
        loc, scale = model.cluster_prior(betas)
    elif hasattr(model, "components"):
        loc, scale = (t.expand(len(betas), -1, -1) for t in model.components())
    else:
        loc, scale = torch.zeros(1, 1, 1, dtype=torch.float64), torch.ones(1, 1, 1, dtype=torch.float64)
    log_pz = (
        Normal(loc[:, None, :, 0], scale[:, None, :, 0]).log_prob(grid[None, :, None]) - math.log(loc.shape[1])
    ).logsumexp(-1)  # (betas, zs)
    latents = torch.cat([grid[None, :, None].expand(len(betas), -1, 1), betas[:, None].expand(-1, points, -1)], -1)
    logits = model.decoder(latents)[:, :, None]  # (betas, zs, 1, C, H, W)
    out = []
    for group in x.double():
        log_px = pixel_distribution(logits, model.cfg).log_prob(group)  # (betas, zs, B)
        total = ((log_pz[..., None] + log_px).logsumexp(1) + log_step).sum(-1)
        if has_beta:
            total = (total + Normal(0.0, 1.0).log_prob(grid) + log_step).logsumexp(0)
        out.append(total.squeeze())
    model.float()
    return torch.stack(out)


@pytest.mark.parametrize("model_name,guide_name", list(GUIDES))
def test_iwae_converges_to_the_exact_log_likelihood(model_name, guide_name):
    cfg = ModelConfig(x_shape=(1, 2, 2), z_dim=1, beta_dim=1, K=3, hidden=8, likelihood="bernoulli")
    model, guide = build(cfg, model_name, guide_name)
    x = (torch.rand(2, 3, *cfg.x_shape) > 0.5).float()
    exact = exact_log_px(model, x)
    elbo = -TraceEnum_ELBO(max_plate_nesting=2, num_particles=500, vectorize_particles=True).loss(model, guide, x)
    # At initialisation q(z|x) is narrower than the prior's components, so the importance weights
    # are heavy-tailed: one draw in thousands can lift an estimate by half a nat. The median of
    # three estimates is robust to such a draw; a biased estimator would still miss.
    estimates = [iwae_bounds(model, guide, x, samples=4000, particles_per_pass=4000) for _ in range(3)]
    iwae, iwae_group = (torch.stack([e[i] for e in estimates]).median(0).values for i in (0, 1))
    coupled = estimates[0][2]
    assert coupled == (model_name in ("ugvae", "mlvae"))
    assert elbo < exact.sum()
    torch.testing.assert_close(iwae.double(), exact, atol=0.25, rtol=0)  # S draws recover log p(X)
    assert (iwae_group <= exact + 0.25).all()


def test_clustering_accuracy_maps_each_cluster_to_its_majority_label():
    clusters = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    labels = torch.tensor([5, 5, 3, 3, 3, 5, 5, 1])
    assert clustering_accuracy(clusters, labels) == pytest.approx(6 / 8)
    assert clustering_accuracy(labels, labels) == 1.0


TINY = ModelConfig(x_shape=(1, 28, 28), z_dim=2, beta_dim=2, K=3, hidden=16)


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    runs_dir = str(tmp_path_factory.mktemp("runs"))
    pyro.clear_param_store()
    return {
        name: fit(
            TrainConfig(dataset="synthetic:400", model=name, epochs=1, group_size=8, lr=3e-3), TINY, runs_dir=runs_dir
        ).run_dir
        for name in ("ugvae", "vae")
    }


@pytest.mark.slow
def test_evaluate_writes_eval_json_with_iwae_above_the_elbo(trained_runs, capsys):
    run_dir = trained_runs["ugvae"]
    assert run.main(["evaluate", "--run", run_dir, "--samples", "20"]) == 0
    scores = json.load(open(os.path.join(run_dir, "eval.json")))
    assert "IWAE" in capsys.readouterr().out
    assert scores["model"] == "ugvae" and scores["guide"] == "structured" and scores["samples"] == 20
    assert scores["test_groups"] == 80 // 8 and scores["iwae_weights"] == "per group"
    assert scores["iwae"] > scores["test_elbo"] and scores["iwae_se"] > 0
    assert 0 < scores["clustering_accuracy"] <= 1 and 1 <= scores["clusters_used"] <= 3
    assert sum(scores["cluster_shares"]) == pytest.approx(1, abs=1e-3)
    # beta diagnostics: KL = I(X; beta) + marginal KL, with I at most log G
    assert scores["beta_kl"] == pytest.approx(scores["beta_mi"] + scores["beta_marginal_kl"])
    assert scores["beta_mi"] <= math.log(scores["test_groups"]) + 1e-6


@pytest.mark.slow
def test_iwae_increases_with_the_number_of_samples_on_a_trained_model(trained_runs):
    trained = load_run(trained_runs["ugvae"])
    model, guide = trained.model, trained.guide
    test = load_dataset("synthetic:400", "test")
    x = test.images[seeded_partition(len(test), 8)[:10]].float() / 255
    bounds = []
    for samples in (1, 10, 100):
        pyro.set_rng_seed(0)
        bounds.append(iwae_bounds(model, guide, x, samples, 100)[0].mean().item())
    assert bounds[0] < bounds[1] < bounds[2], bounds


def test_vae_bound_is_per_sample_and_tighter_than_per_group(trained_runs):
    scores = evaluate_run(load_run(trained_runs["vae"]), EvaluateSettings(samples=20))
    assert scores["iwae_weights"] == "per sample" and scores["clustering_accuracy"] is None
    assert scores["iwae"] >= scores["iwae_group"] >= scores["test_elbo"]


def test_compare_writes_one_row_per_run(trained_runs, tmp_path, capsys):
    runs = [trained_runs["ugvae"], trained_runs["vae"]]
    assert run.main(["compare", *runs, "--out", str(tmp_path), "--samples", "5"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "compare.csv")))
    assert [r["model"] for r in rows] == ["ugvae", "vae"]
    assert all(r["epochs"] == "1" and float(r["train_s"]) > 0 for r in rows)
    assert float(rows[0]["iwae"]) > float(rows[0]["test_elbo"])
    # scored on the same test groups: the paired difference is the difference of the means
    assert float(rows[1]["iwae_vs_first"]) == pytest.approx(float(rows[1]["iwae"]) - float(rows[0]["iwae"]), abs=1e-3)
    assert float(rows[1]["iwae_vs_first_se"]) > 0 and float(rows[0]["iwae_vs_first"]) == 0
    table = (tmp_path / "compare.md").read_text()
    assert table in capsys.readouterr().out and table.count("| synthetic:400 |") == 2


def test_evaluate_rejects_a_directory_that_is_no_run(tmp_path, capsys):
    assert run.main(["evaluate", "--run", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err


@pytest.mark.parametrize("model_name", ["vae", "mlvae"])
def test_models_with_nothing_to_enumerate_leak_no_pyro_warning(model_name, tmp_path):
    """Issue 30 (4): Pyro's "found no sample sites configured for enumeration" reached the console from
    the VAE and ML-VAE paths (training's test metrics, evaluate, the experiments' figures)."""
    cfg = TrainConfig(dataset="synthetic:60", model=model_name, epochs=1, group_size=4, log_every=1)
    model_cfg = ModelConfig(x_shape=(1, 28, 28), z_dim=2, beta_dim=2, K=3, hidden=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # of third parties, not ours to fix
        run_dir = fit(cfg, model_cfg, runs_dir=str(tmp_path)).run_dir
        scores = evaluate_run(load_run(run_dir), EvaluateSettings(samples=2))
    assert scores["test_elbo"] < 0
