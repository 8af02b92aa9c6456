"""The levers of the training objective and of the networks, each against a hand computation.

Written from the formulas of train/elbo.py's docstring with torch.distributions only, for fixed
weights and the guide's own reparameterised draws of z and beta, summing over d exactly as
eq. 11 does; the same pattern as tests/model/test_elbo.py for the paper's ELBO.
"""

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO
from torch.distributions import Normal

from ugvae.errors import ConfigError
from ugvae.guide import GUIDES, UGVAEGuide, build
from ugvae.model import ModelConfig, UGVAEModel
from ugvae.model.networks import leave_one_out_product, product_of_gaussians
from ugvae.train.elbo import SyncFreeTraceEnum_ELBO, elbo_module
from ugvae.trained.config import Levers, TrainConfig

UGVAE_GUIDES = [g for m, g in GUIDES if m == "ugvae"]


def small_cfg(**options):
    return ModelConfig(x_shape=(1, 6, 6), z_dim=3, beta_dim=4, K=5, hidden=16, **options)


def hand_elbo(model, guide, x, z, beta, beta_loc, beta_scale, local_kl_weight=1.0, beta_weight=1.0):
    """sum over groups and samples of log p(x|z,beta) - lambda KL_local, minus beta_weight times
    (log q(beta) - log p(beta)) per beta draw. beta, beta_loc, beta_scale: (G, 1 or B, beta_dim)."""
    cfg = model.cfg
    h = guide.features(x)
    z_loc, z_scale = guide.local_encoder(h)
    pi = guide.cluster_posterior(z)  # (G, B, K)
    mean = torch.sigmoid(model.logits(z, beta))
    log_px = Normal(mean, cfg.var_x**0.5).log_prob(x).sum((-3, -2, -1))
    prior_loc, prior_scale = model.cluster_prior(beta)  # (G, 1 or B, K, z_dim)
    log_pz_k = Normal(prior_loc, prior_scale).log_prob(z.unsqueeze(-2)).sum(-1)  # (G, B, K)
    log_pd = (
        torch.log_softmax(model.cluster_logits(beta), -1)
        if cfg.cluster_weights == "global"
        else -torch.log(torch.tensor(float(cfg.K)))
    )
    log_qz = Normal(z_loc, z_scale).log_prob(z).sum(-1)
    kl_local = log_qz - (pi * (log_pz_k + log_pd - pi.log())).sum(-1)  # (G, B)
    kl_beta = Normal(beta_loc, beta_scale).log_prob(beta).sum(-1) - Normal(0.0, 1.0).log_prob(beta).sum(-1)
    return (log_px - local_kl_weight * kl_local).sum() - beta_weight * kl_beta.sum()


def guide_draws(guide, x, seed, **kwargs):
    pyro.set_rng_seed(seed)
    trace = poutine.trace(guide).get_trace(x, **kwargs)
    return trace.nodes["z"]["value"], trace.nodes["beta"]["value"]


@pytest.mark.parametrize("cluster_weights", ["uniform", "global"])
@pytest.mark.parametrize("local_kl_weight", [0.5, 3.0])
def test_the_local_kl_weight_multiplies_exactly_the_kl_of_z_and_d(cluster_weights, local_kl_weight):
    model, guide = UGVAEModel(small_cfg(cluster_weights=cluster_weights)), UGVAEGuide(small_cfg())
    x = torch.rand(3, 7, 1, 6, 6)
    pyro.set_rng_seed(5)
    loss = SyncFreeTraceEnum_ELBO(max_plate_nesting=2, levers=Levers(local_kl_weight=local_kl_weight)).loss(
        model, guide, x
    )
    z, beta = guide_draws(guide, x, 5)
    with torch.no_grad():
        h = guide.features(x)
        loc, scale = guide.global_params(h, guide.cluster_posterior(z))
        expected = -hand_elbo(model, guide, x, z, beta, loc[:, None], scale[:, None], local_kl_weight).item()
        plain = -hand_elbo(model, guide, x, z, beta, loc[:, None], scale[:, None]).item()
    assert loss == pytest.approx(expected, rel=1e-5)
    assert abs(expected - plain) > 1.0  # the weight changes the loss, so the comparison means something


def test_a_weight_of_one_is_the_elbo_itself():
    model, guide = UGVAEModel(small_cfg()), UGVAEGuide(small_cfg())
    x = torch.rand(2, 5, 1, 6, 6)
    losses = []
    plain = SyncFreeTraceEnum_ELBO(max_plate_nesting=2, levers=Levers(local_kl_weight=1))
    for elbo in (TraceEnum_ELBO(max_plate_nesting=2), plain):
        pyro.set_rng_seed(3)
        losses.append(elbo.loss(model, guide, x))
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)
    assert plain.site_weights is None and Levers().on == []


@pytest.mark.parametrize("cluster_weights", ["uniform", "global"])
def test_the_leave_one_out_bound_equals_its_hand_computation(cluster_weights):
    model, guide = UGVAEModel(small_cfg(cluster_weights=cluster_weights)), UGVAEGuide(small_cfg())
    x = torch.rand(3, 6, 1, 6, 6)
    B = x.shape[1]
    pyro.set_rng_seed(11)
    loss = SyncFreeTraceEnum_ELBO(max_plate_nesting=2, levers=Levers(leave_one_out=True)).loss(model, guide, x)
    pyro.set_rng_seed(11)
    reference = TraceEnum_ELBO(max_plate_nesting=2).loss(model, guide, x, leave_one_out=True)
    z, beta = guide_draws(guide, x, 11, leave_one_out=True)
    assert beta.shape == (3, B, 4)  # one beta per member
    with torch.no_grad():
        factor_loc, factor_scale = guide.global_encoder.per_sample(
            torch.cat([guide.features(x), guide.cluster_posterior(z)], -1)
        )
        # q(beta | X without x_i): eq. 9 over the members j != i, written out member by member
        loc, scale = zip(*[product_of_gaussians(factor_loc[:, keep], factor_scale[:, keep]) for keep in others_of(B)])
        loc, scale = torch.stack(loc, 1), torch.stack(scale, 1)
        expected = -hand_elbo(model, guide, x, z, beta, loc, scale, beta_weight=1.0 / B).item()
    assert loss == pytest.approx(expected, rel=1e-5)
    assert reference == pytest.approx(expected, rel=1e-5)  # Pyro's own TraceEnum_ELBO on the same programs


def others_of(B):
    return [[j for j in range(B) if j != i] for i in range(B)]


def test_leave_one_out_product_is_the_product_over_the_others():
    loc, scale = torch.randn(2, 5, 3), torch.rand(2, 5, 3) + 0.1
    out_loc, out_scale = leave_one_out_product(loc, scale)
    for i, keep in enumerate(others_of(5)):
        expected = product_of_gaussians(loc[:, keep], scale[:, keep])
        torch.testing.assert_close(out_loc[:, i], expected[0]), torch.testing.assert_close(out_scale[:, i], expected[1])


@pytest.mark.parametrize("guide_name", UGVAE_GUIDES)
def test_a_members_leave_one_out_posterior_does_not_read_that_member(guide_name):
    cfg = small_cfg(cluster_weights="global")
    _, guide = build(cfg, "ugvae", guide_name)
    x = torch.rand(2, 5, 1, 6, 6)
    changed = x.clone()
    changed[:, 2] = torch.rand(2, 1, 6, 6)
    with torch.no_grad():
        h, z, _ = guide.encode(x)
        h2, z2, _ = guide.encode(changed)
        before = guide.global_params(h, guide.cluster_probs(h, z), leave_one_out=True)[0]
        after = guide.global_params(h2, guide.cluster_probs(h2, z2), leave_one_out=True)[0]
    assert before.shape == (2, 5, cfg.beta_dim)
    torch.testing.assert_close(after[:, 2], before[:, 2])
    assert not torch.allclose(after[:, 0], before[:, 0])  # the others' posteriors do read it


def test_film_starts_as_the_plain_decoder_and_then_lets_beta_modulate_it():
    plain, film = UGVAEModel(small_cfg()), UGVAEModel(small_cfg(decoder_film=True))
    film.load_state_dict(plain.state_dict(), strict=False)  # the FiLM layer is the only new weight
    z, beta = torch.randn(2, 4, 3), torch.randn(2, 1, 4)
    torch.testing.assert_close(film.decode(z, beta), plain.decode(z, beta))  # zero at initialisation
    with torch.no_grad():
        film.decoder.film.weight.normal_()
    gamma, shift = film.decoder.film(beta).chunk(2, -1)
    hidden = film.decoder.net[:2](torch.cat([z, beta.expand(-1, 4, -1)], -1)) * (1 + gamma) + shift
    torch.testing.assert_close(film.decode(z, beta), torch.sigmoid(film.decoder.net[2:](hidden)).view(2, 4, 1, 6, 6))


def test_the_elbo_with_film_equals_its_hand_computation():
    model, guide = UGVAEModel(small_cfg(decoder_film=True)), UGVAEGuide(small_cfg())
    with torch.no_grad():
        model.decoder.film.weight.normal_()
    x = torch.rand(2, 5, 1, 6, 6)
    pyro.set_rng_seed(2)
    loss = SyncFreeTraceEnum_ELBO(max_plate_nesting=2).loss(model, guide, x)
    z, beta = guide_draws(guide, x, 2)
    with torch.no_grad():
        loc, scale = guide.global_params(guide.features(x), guide.cluster_posterior(z))
        expected = -hand_elbo(model, guide, x, z, beta, loc[:, None], scale[:, None]).item()
    assert loss == pytest.approx(expected, rel=1e-5)


def test_levers_are_refused_where_they_cannot_apply():
    with pytest.raises(ValueError, match="`leave_one_out`"):
        TrainConfig(model="vae", leave_one_out=True)
    with pytest.raises(ValueError, match="`local_kl_weight`"):
        TrainConfig(local_kl_weight=0.0)
    with pytest.raises(ValueError, match="drop `jit`"):
        TrainConfig(jit=True, local_kl_weight=2.0)
    with pytest.raises(ValueError, match="`set_mix_weight`"):
        TrainConfig(model="gmvae", set_mix_weight=1.0)
    with pytest.raises(ConfigError, match="`set_mix_weight` must be"):
        Levers(set_mix_weight=-1.0)
    model, guide = build(small_cfg(), "mlvae")
    with pytest.raises(ConfigError, match="`leave_one_out`"):
        elbo_module(model, guide, levers=Levers(leave_one_out=True))
    with pytest.raises(ConfigError, match="`local_kl_weight`"):
        elbo_module(*build(small_cfg()), jit=True, levers=Levers(local_kl_weight=2.0))
    with pytest.raises(ConfigError, match="`cluster_weights` global"):
        elbo_module(*build(small_cfg()), levers=Levers(set_mix_weight=1.0))  # uniform p(d): nothing to pull


def test_the_set_mix_weight_adds_the_kl_of_the_sets_mean_q_d_to_p_d_given_beta_with_pi_held_fixed():
    cfg = small_cfg(cluster_weights="global")
    model, guide = UGVAEModel(cfg), UGVAEGuide(cfg)
    x = torch.rand(3, 6, 1, 6, 6)
    gamma = 2.5
    loss_fn = SyncFreeTraceEnum_ELBO(max_plate_nesting=2, levers=Levers(set_mix_weight=gamma))(model, guide)
    pyro.set_rng_seed(4)
    loss = loss_fn(x)
    z, beta = guide_draws(guide, x, 4)
    h = guide.features(x)
    pi = guide.cluster_posterior(z)
    loc, scale = guide.global_params(h, pi)
    elbo = hand_elbo(model, guide, x, z, beta, loc[:, None], scale[:, None])
    # gamma B [KL(m || p(d|beta)) + H(m)] per group, m the set's mean q(d), held fixed (stop-gradient)
    m = pi.detach().mean(1)
    log_p = torch.log_softmax(model.cluster_logits(beta[:, 0]), -1)
    cross_entropy = -(m * log_p).sum(-1) * x.shape[1]
    expected = -elbo + gamma * cross_entropy.sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # The gradients agree too, so pi is held fixed in the added term and only there.
    names = ["cluster_weights.weight", "decoder.net.0.weight"]
    got = torch.autograd.grad(
        loss, [dict(model.named_parameters())[n] for n in names] + [guide.cluster_posterior.net[0].weight]
    )
    want = torch.autograd.grad(
        expected, [dict(model.named_parameters())[n] for n in names] + [guide.cluster_posterior.net[0].weight]
    )
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5 * w.abs().max())
    assert gamma * cross_entropy.sum().item() > 1.0  # the added term is not negligible
