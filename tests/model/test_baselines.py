"""The VAE, GMVAE and ML-VAE baselines: sites, generation, and the VAE's ELBO in closed form."""

import math

import pyro
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import TraceEnum_ELBO, TraceMeanField_ELBO

from ugvae.guide import GMVAEGuide, MLVAEGuide, VAEGuide
from ugvae.model import GMVAEModel, MLVAEModel, ModelConfig, VAEModel

G, B = 3, 5
# The baselines without d train with TraceEnum_ELBO like the rest, which warns that nothing is enumerated.
pytestmark = pytest.mark.filterwarnings("ignore:TraceEnum_ELBO found no sample sites")


def traces(model, guide, x):
    guide_trace = poutine.trace(poutine.enum(guide, first_available_dim=-3)).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    model_trace.compute_log_prob()
    return model_trace.nodes


def test_vae_sites_are_local(tiny_cfg):
    nodes = traces(VAEModel(tiny_cfg), VAEGuide(tiny_cfg), torch.rand(G, B, *tiny_cfg.x_shape))
    assert nodes["z"]["value"].shape == (G, B, tiny_cfg.z_dim)
    assert nodes["z"]["log_prob"].shape == nodes["x"]["log_prob"].shape == (G, B)
    assert "beta" not in nodes and "d" not in nodes


def test_gmvae_enumerates_d_like_ugvae(tiny_cfg):
    nodes = traces(GMVAEModel(tiny_cfg), GMVAEGuide(tiny_cfg), torch.rand(G, B, *tiny_cfg.x_shape))
    assert nodes["d"]["value"].shape == (tiny_cfg.K, 1, 1)
    assert nodes["z"]["log_prob"].shape == (tiny_cfg.K, G, B)
    assert {f.name for f in nodes["d"]["cond_indep_stack"]} == {"groups", "samples"}
    assert "beta" not in nodes


def test_mlvae_has_one_content_variable_per_group(tiny_cfg):
    nodes = traces(MLVAEModel(tiny_cfg), MLVAEGuide(tiny_cfg), torch.rand(G, B, *tiny_cfg.x_shape))
    assert nodes["beta"]["value"].shape == (G, 1, tiny_cfg.beta_dim)
    assert [f.name for f in nodes["beta"]["cond_indep_stack"]] == ["groups"]
    assert nodes["z"]["log_prob"].shape == (G, B) and "d" not in nodes


@pytest.mark.parametrize("model_class", [VAEModel, GMVAEModel, MLVAEModel])
def test_generates_groups_and_decodes_them(tiny_cfg, model_class):
    model = model_class(tiny_cfg)
    trace = poutine.trace(model).get_trace(None, num_groups=2, group_size=6)
    assert trace.nodes["x"]["value"].shape == (2, 6, *tiny_cfg.x_shape)
    latents = [trace.nodes[n]["value"] for n in ("z", "beta") if n in trace.nodes]
    mean = model.decode(*latents)
    assert mean.shape == (2, 6, *tiny_cfg.x_shape) and ((mean > 0) & (mean < 1)).all()


def test_mlvae_samples_of_a_group_share_content(tiny_cfg):
    model = MLVAEModel(tiny_cfg)
    trace = poutine.trace(model).get_trace(None, num_groups=2, group_size=4)
    z = torch.zeros(2, 4, tiny_cfg.z_dim)  # same style everywhere: images differ only by group
    images = model.decode(z, trace.nodes["beta"]["value"])
    torch.testing.assert_close(images[:, 0], images[:, 3])
    assert not torch.allclose(images[0], images[1])


def test_gmvae_components_are_learned_and_bounded(tiny_cfg):
    loc, scale = GMVAEModel(tiny_cfg).prior_components()
    assert loc.shape == scale.shape == (tiny_cfg.K, tiny_cfg.z_dim)
    assert loc.std(0).min() > 0  # components start apart, so the mixture can break symmetry
    assert (scale.pow(2).log().abs() <= 1 + 1e-6).all()  # variances in [1/e, e], as UG-VAE's


def log_likelihood(logits, x, cfg):
    """log p(x | z) written out: Gaussian density of the sigmoid mean, or binary cross-entropy."""
    if cfg.likelihood == "gaussian":
        mean = torch.sigmoid(logits)
        return (-0.5 * math.log(2 * math.pi * cfg.var_x) - (x - mean) ** 2 / (2 * cfg.var_x)).sum((-3, -2, -1))
    return (x * F.logsigmoid(logits) + (1 - x) * F.logsigmoid(-logits)).sum((-3, -2, -1))


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_vae_elbo_matches_the_closed_form(likelihood):
    cfg = ModelConfig(x_shape=(1, 5, 5), z_dim=3, hidden=12, likelihood=likelihood)
    model, guide = VAEModel(cfg), VAEGuide(cfg)
    x = torch.rand(2, 4, 1, 5, 5)
    loc, scale = guide.local_encoder(guide.features(x))

    pyro.set_rng_seed(7)
    enum_loss = TraceEnum_ELBO(max_plate_nesting=2).loss(model, guide, x)
    pyro.set_rng_seed(7)
    mean_field_loss = TraceMeanField_ELBO(max_plate_nesting=2).loss(model, guide, x)
    pyro.set_rng_seed(7)
    z = poutine.trace(guide).get_trace(x).nodes["z"]["value"]

    log_px = log_likelihood(model.decoder(z), x, cfg)
    # the training ELBO: one-sample log p(x, z) - log q(z | x) with the densities written out
    log_pz = (-0.5 * math.log(2 * math.pi) - 0.5 * z**2).sum(-1)
    log_qz = (-0.5 * math.log(2 * math.pi) - scale.log() - 0.5 * ((z - loc) / scale) ** 2).sum(-1)
    assert -enum_loss == pytest.approx((log_px + log_pz - log_qz).sum().item(), rel=1e-5)
    # Kingma & Welling's eq. 10: the analytic KL to N(0, I)
    kl = 0.5 * (loc**2 + scale**2 - 1 - 2 * scale.log()).sum(-1)
    assert -mean_field_loss == pytest.approx((log_px - kl).sum().item(), rel=1e-5)
