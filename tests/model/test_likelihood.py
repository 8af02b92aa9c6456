"""The Gaussian pixel likelihood is torch's Normal with a number scale, whatever the shapes."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from ugvae.model import ModelConfig
from ugvae.model.likelihood import FixedScaleNormal, pixel_distribution


@pytest.mark.parametrize("scale", [0.1**0.5, 1.0, 3.0])
def test_its_log_density_and_gradient_are_torchs_normal(scale):
    loc = torch.rand(2, 3, 1, 4, 4, requires_grad=True)
    value = torch.rand(2, 3, 1, 4, 4)
    ours = FixedScaleNormal(loc, scale).log_prob(value)
    (grad,) = torch.autograd.grad(ours.sum(), loc)
    torchs = dist.Normal(loc, scale).log_prob(value)
    (torch_grad,) = torch.autograd.grad(torchs.sum(), loc)
    assert ours.shape == torchs.shape == loc.shape
    assert torch.allclose(ours, torchs, rtol=1e-6, atol=1e-6)
    assert torch.allclose(grad, torch_grad, rtol=1e-6)


def test_expanded_and_sampled_it_stays_the_same_normal():
    base = FixedScaleNormal(torch.rand(1, 3, 5), 0.5)
    wide = base.expand((4, 3, 5))
    value = torch.rand(4, 3, 5)
    assert type(wide) is FixedScaleNormal and wide.batch_shape == (4, 3, 5) and wide.fixed_scale == 0.5
    assert torch.allclose(wide.log_prob(value), dist.Normal(base.loc.expand(4, 3, 5), 0.5).log_prob(value))
    assert torch.equal(wide.scale, torch.full((4, 3, 5), 0.5)) and torch.equal(wide.mean, base.loc.expand(4, 3, 5))
    pyro.set_rng_seed(3)
    ours = base.sample((2,))
    pyro.set_rng_seed(3)
    assert torch.equal(ours, dist.Normal(base.loc, 0.5).sample((2,)))


def test_validation_still_rejects_a_value_outside_the_support():
    with pytest.raises(ValueError, match="value"):
        FixedScaleNormal(torch.zeros(3), 1.0, validate_args=True).log_prob(torch.tensor([0.0, float("nan"), 1.0]))


def test_the_gaussian_pixel_distribution_scores_images_with_the_configs_variance():
    cfg = ModelConfig(x_shape=(1, 4, 4), var_x=0.2)
    logits, x = torch.randn(2, 3, 1, 4, 4), torch.rand(2, 3, 1, 4, 4)
    expected = dist.Normal(torch.sigmoid(logits), 0.2**0.5).log_prob(x).sum((-3, -2, -1))
    assert torch.allclose(pixel_distribution(logits, cfg).log_prob(x), expected, rtol=1e-6)
