"""Every (model, guide) pair of the registries trains, and the ablations cut what they claim to cut."""

import math

import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, TraceEnum_ELBO
from pyro.optim import Adam

from ugvae.guide import GUIDES, BetaFromXGuide, MeanFieldGuide, MLVAEGuide, UGVAEGuide, build
from ugvae.model import MODELS
from ugvae.model.networks import product_of_gaussians

pytestmark = pytest.mark.filterwarnings("ignore:TraceEnum_ELBO found no sample sites")


@pytest.mark.parametrize("model_name,guide_name", list(GUIDES))
def test_every_pair_takes_a_finite_svi_step_that_trains_every_parameter(tiny_cfg, model_name, guide_name):
    model, guide = build(tiny_cfg, model_name, guide_name)
    x = torch.rand(2, 4, *tiny_cfg.x_shape)
    elbo = TraceEnum_ELBO(max_plate_nesting=2)
    elbo.differentiable_loss(model, guide, x).backward()
    for name, p in list(model.named_parameters()) + list(guide.named_parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    before = {n: p.detach().clone() for n, p in guide.named_parameters()}
    loss = SVI(model, guide, Adam({"lr": 1e-2}), elbo).step(x)
    assert math.isfinite(loss)
    assert all(not torch.equal(before[n], p) for n, p in guide.named_parameters())


def test_every_model_has_a_default_guide():
    assert {m for m, _ in GUIDES} == set(MODELS)


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_swapping_the_guide_leaves_the_model_untouched(tiny_cfg, model_name):
    names = [g for m, g in GUIDES if m == model_name]
    models = [build(tiny_cfg, model_name, g)[0] for g in names]
    shapes = [{n: p.shape for n, p in m.state_dict().items()} for m in models]
    assert all(s == shapes[0] for s in shapes)
    for m in models[1:]:
        m.load_state_dict(models[0].state_dict())  # strict: a checkpoint's model part fits any guide


def test_ablation_guides_differ_from_the_structured_one_only_in_what_their_encoders_read(tiny_cfg):
    shapes = {
        g: {n: p.shape for n, p in build(tiny_cfg, "ugvae", g)[1].state_dict().items()}
        for m, g in GUIDES
        if m == "ugvae"
    }
    structured = shapes["structured"]
    for name, guide_shapes in shapes.items():
        # The attention guide pools the set with another network: only that network differs.
        if name == "attention":
            assert {k for k in guide_shapes if not k.startswith("global_encoder.")} == {
                k for k in structured if not k.startswith("global_encoder.")
            }
            continue
        assert guide_shapes.keys() == structured.keys(), name
    pi_input = "global_encoder.per_sample.linear.weight"
    assert shapes["beta-from-x"][pi_input][1] == structured[pi_input][1] - tiny_cfg.K
    assert shapes["set-mix"][pi_input][1] == structured[pi_input][1] + tiny_cfg.K  # log of the set's mean pi
    cluster_input = "cluster_posterior.net.0.weight"
    assert shapes["mean-field"][cluster_input][1] == tiny_cfg.hidden  # reads image features, not z


def perturb(module):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p))


@pytest.mark.parametrize(
    "guide_class,beta_sees_pi", [(UGVAEGuide, True), (BetaFromXGuide, False), (MeanFieldGuide, False)]
)
def test_q_beta_reads_the_cluster_probabilities_only_in_the_structured_guide(tiny_cfg, guide_class, beta_sees_pi):
    guide = guide_class(tiny_cfg)
    x = torch.rand(2, 5, *tiny_cfg.x_shape)
    before = guide.global_posterior(x)[0]
    perturb(guide.cluster_posterior)
    assert torch.allclose(guide.global_posterior(x)[0], before) != beta_sees_pi


@pytest.mark.parametrize("guide_class,d_sees_z", [(UGVAEGuide, True), (BetaFromXGuide, True), (MeanFieldGuide, False)])
def test_q_d_reads_z_except_in_the_mean_field_guide(tiny_cfg, guide_class, d_sees_z):
    guide = guide_class(tiny_cfg)
    x = torch.rand(2, 5, *tiny_cfg.x_shape)
    before = guide.local_posterior(x)[2]
    perturb(guide.local_encoder)
    assert torch.allclose(guide.local_posterior(x)[2], before) != d_sees_z


@pytest.mark.parametrize("guide_class", [UGVAEGuide, BetaFromXGuide, MeanFieldGuide])
def test_ugvae_guides_sample_z_then_beta_then_enumerated_d(tiny_cfg, guide_class):
    trace = poutine.trace(guide_class(tiny_cfg)).get_trace(torch.rand(2, 3, *tiny_cfg.x_shape))
    sites = [n for n, s in trace.nodes.items() if s["type"] == "sample" and n not in ("groups", "samples")]
    assert sites == ["z", "beta", "d"]
    assert trace.nodes["d"]["infer"].get("enumerate") == "parallel"


def test_mlvae_content_posterior_is_the_product_over_the_group(tiny_cfg):
    guide = MLVAEGuide(tiny_cfg)
    x = torch.rand(2, 6, *tiny_cfg.x_shape)
    loc, scale = guide.global_posterior(x)
    expected = product_of_gaussians(*guide.global_encoder.per_sample(guide.features(x)), dim=-2)
    torch.testing.assert_close(loc, expected[0]), torch.testing.assert_close(scale, expected[1])
    torch.testing.assert_close(guide.global_posterior(x[:, torch.randperm(6)])[0], loc)
    assert guide.local_posterior(x)[2] is None
