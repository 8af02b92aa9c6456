"""The ELBO that Pyro optimises is the paper's ELBO (eq. 10-11).

The closed form below is written from the paper with torch.distributions only: for fixed
weights and the guide's reparameterised samples of z and beta, it sums over d_i with weights
q(d_i | z_i) = pi_i exactly as eq. 11 does.
"""

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from torch.distributions import Normal

from ugvae.guide import UGVAEGuide
from ugvae.model import ModelConfig, UGVAEModel


def closed_form_elbo(model, guide, x, z, beta):
    """Sum over groups of eq. 10 for given samples z (G, B, z_dim) and beta (G, beta_dim)."""
    cfg = model.cfg
    h = guide.features(x)
    z_loc, z_scale = guide.local_encoder(h)
    pi = guide.cluster_posterior(z)  # (G, B, K)
    beta_loc, beta_scale = guide.global_params(h, pi)

    logits = model.decoder(torch.cat([z, beta[:, None].expand(-1, z.shape[1], -1)], -1))
    if cfg.likelihood == "gaussian":
        log_px = Normal(torch.sigmoid(logits), cfg.var_x**0.5).log_prob(x).sum((-3, -2, -1))
    else:
        log_px = (x * torch.nn.functional.logsigmoid(logits) + (1 - x) * torch.nn.functional.logsigmoid(-logits)).sum(
            (-3, -2, -1)
        )
    prior_loc, prior_scale = model.cluster_prior(beta)  # (G, K, z_dim)
    log_pz_k = Normal(prior_loc[:, None], prior_scale[:, None]).log_prob(z[:, :, None]).sum(-1)
    log_qz = Normal(z_loc, z_scale).log_prob(z).sum(-1)
    # E_q(d_i)[log p(z_i | d_i, beta) + log p(d_i) - log q(d_i | z_i)], exact over K values
    if cfg.cluster_weights == "global":  # p(d | beta) = softmax(A beta + b)
        log_pd = torch.log_softmax(model.cluster_weights(beta), -1)[:, None]  # (G, 1, K)
    else:  # eq. 4
        log_pd = -torch.log(torch.tensor(float(cfg.K)))
    local_d = (pi * (log_pz_k + log_pd - pi.log())).sum(-1)
    local = log_px + local_d - log_qz
    log_pbeta = Normal(0.0, 1.0).log_prob(beta).sum(-1)
    log_qbeta = Normal(beta_loc, beta_scale).log_prob(beta).sum(-1)
    return (local.sum(-1) + log_pbeta - log_qbeta).sum()


@pytest.mark.parametrize(
    "likelihood, cluster_weights", [("gaussian", "uniform"), ("bernoulli", "uniform"), ("gaussian", "global")]
)
def test_trace_enum_elbo_equals_closed_form(likelihood, cluster_weights):
    cfg = ModelConfig(
        x_shape=(1, 6, 6), z_dim=3, beta_dim=4, K=5, hidden=16, likelihood=likelihood, cluster_weights=cluster_weights
    )
    model, guide = UGVAEModel(cfg), UGVAEGuide(cfg)
    x = torch.rand(3, 7, 1, 6, 6)

    pyro.set_rng_seed(123)
    loss = TraceEnum_ELBO(max_plate_nesting=2).loss(model, guide, x)
    pyro.set_rng_seed(123)
    trace = poutine.trace(guide).get_trace(x)  # draws z then beta exactly as above
    z, beta = trace.nodes["z"]["value"], trace.nodes["beta"]["value"][:, 0]

    expected = -closed_form_elbo(model, guide, x, z, beta).item()
    assert loss == pytest.approx(expected, rel=1e-4)


@pytest.mark.slow
def test_sampled_d_agrees_with_enumerated_d(tiny_cfg):
    """Trace_ELBO with d sampled is an unbiased, noisier estimate of the same ELBO."""
    model, guide = UGVAEModel(tiny_cfg), UGVAEGuide(tiny_cfg)
    x = torch.rand(2, 5, 1, 4, 4)
    sampled_guide = poutine.infer_config(guide, lambda msg: {"enumerate": None} if msg["name"] == "d" else {})
    particles, repeats = 2000, 20
    enum = TraceEnum_ELBO(max_plate_nesting=2, num_particles=particles, vectorize_particles=True)
    plain = Trace_ELBO(max_plate_nesting=2, num_particles=particles, vectorize_particles=True)
    with torch.no_grad():
        a = torch.tensor([enum.loss(model, guide, x) for _ in range(repeats)])
        b = torch.tensor([plain.loss(model, sampled_guide, x) for _ in range(repeats)])
    stderr = (a.var() / repeats + b.var() / repeats).sqrt()
    assert b.var() > a.var()  # enumeration removes the variance from d
    assert abs(a.mean() - b.mean()) < 4 * stderr


def replaying(guide, values):
    """The guide with its z and beta draws fixed to `values` (still sample sites, not observed)."""
    trace = poutine.Trace()
    for name, value in values.items():
        trace.add_node(name, type="sample", value=value, is_observed=False, infer={})
    return poutine.replay(guide, trace=trace)


def test_groups_in_one_call_equal_separate_calls(tiny_cfg):
    model, guide = UGVAEModel(tiny_cfg), UGVAEGuide(tiny_cfg)
    x = torch.rand(4, 6, 1, 4, 4)
    elbo = TraceEnum_ELBO(max_plate_nesting=2)
    trace = poutine.trace(guide).get_trace(x)
    fixed = {n: trace.nodes[n]["value"] for n in ("z", "beta")}
    together = elbo.loss(model, replaying(guide, fixed), x)
    apart = sum(
        elbo.loss(model, replaying(guide, {n: v[g : g + 1] for n, v in fixed.items()}), x[g : g + 1])
        for g in range(x.shape[0])
    )
    assert together == pytest.approx(apart, rel=1e-5)
