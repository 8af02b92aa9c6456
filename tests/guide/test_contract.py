"""Every registered guide keeps the contract of guide/base.py that experiments and `embed` rely on."""

import pytest
import torch
from pyro import poutine

from ugvae.guide import GUIDES, GlobalPosterior, LocalPosterior, build

PAIRS = sorted(GUIDES)


@pytest.mark.parametrize("model_name,guide_name", PAIRS)
def test_posteriors_have_the_declared_parts_and_shapes(model_name, guide_name, tiny_cfg):
    model, guide = build(tiny_cfg, model_name, guide_name)
    G, B = 2, 5
    x = torch.rand(G, B, *tiny_cfg.x_shape)
    local = guide.local_posterior(x)
    assert isinstance(local, LocalPosterior)
    assert local.z_loc.shape == local.z_scale.shape == (G, B, tiny_cfg.z_dim)
    assert (local.z_scale > 0).all()
    if guide.has_mixture:
        assert local.pi.shape == (G, B, tiny_cfg.K)
        torch.testing.assert_close(local.pi.sum(-1), torch.ones(G, B))
    else:
        assert local.pi is None
    if guide.has_global_latent:
        posterior = guide.global_posterior(x)
        assert isinstance(posterior, GlobalPosterior)
        assert posterior.loc.shape == posterior.scale.shape == (G, tiny_cfg.beta_dim)
    else:
        with pytest.raises(ValueError, match="no global latent"):
            guide.global_posterior(x)
    # The facts agree with the model's and with the sites the guide samples.
    assert (guide.has_global_latent, guide.has_mixture) == (model.has_global_latent, model.has_mixture)
    sites = set(poutine.trace(guide).get_trace(x).stochastic_nodes)
    assert ("beta" in sites) == guide.has_global_latent and ("d" in sites) == guide.has_mixture


@pytest.mark.parametrize("model_name,guide_name", PAIRS)
@pytest.mark.parametrize(
    "bad,message",
    [
        (lambda x: x * 255, r"\[0, 1\]"),
        (lambda x: torch.where(x > 0.5, torch.nan, x), r"\[0, 1\]"),
        (lambda x: x[0], r"\(G, B, C, H, W\)"),
        (lambda x: (x * 255).to(torch.uint8), "float"),
    ],
)
def test_bad_images_are_refused_with_the_fix(model_name, guide_name, bad, message, tiny_cfg):
    _, guide = build(tiny_cfg, model_name, guide_name)
    x = bad(torch.rand(2, 3, *tiny_cfg.x_shape))
    with pytest.raises(ValueError, match=message):
        guide.local_posterior(x)
    if guide.has_global_latent:
        with pytest.raises(ValueError, match=message):
            guide.global_posterior(x)
