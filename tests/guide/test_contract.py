"""Every registered guide keeps the contract of guide/base.py that experiments and `embed` rely on,
as `check_guide` checks it."""

import pytest
import torch

from ugvae.guide import GUIDES, build, check_guide
from ugvae.model import MODELS

PAIRS = sorted(GUIDES)


@pytest.mark.parametrize("model_name,guide_name", PAIRS)
def test_every_registered_guide_keeps_the_contract(model_name, guide_name, tiny_cfg):
    """Sites, plates, shapes, enumeration, facts and posteriors (guide/check.py), and the sync-free ELBO."""
    report = check_guide(GUIDES[(model_name, guide_name)], tiny_cfg, model_name, elbo=True)
    assert set(report.sites) == set(MODELS[model_name](tiny_cfg).latent_sizes)
    assert report.sync_free_equal is True


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
