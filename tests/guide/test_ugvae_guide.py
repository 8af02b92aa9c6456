import torch

from ugvae.guide import UGVAEGuide
from ugvae.model.networks import product_of_gaussians


def test_global_posterior_is_the_product_of_per_sample_factors(tiny_cfg):
    guide = UGVAEGuide(tiny_cfg)
    x = torch.rand(2, 6, *tiny_cfg.x_shape)
    loc, scale = guide.global_posterior(x)
    assert loc.shape == scale.shape == (2, tiny_cfg.beta_dim)
    z_loc, _, pi = guide.local_posterior(x)
    h = torch.cat([guide.features(x), pi], -1)
    expected = product_of_gaussians(*guide.global_encoder.per_sample(h), dim=-2)
    torch.testing.assert_close(loc, expected[0]), torch.testing.assert_close(scale, expected[1])
    # more evidence, more certainty: a group of 6 is more precise than any of its members
    per_sample_scale = guide.global_encoder.per_sample(h)[1]
    assert (scale < per_sample_scale.min(-2).values).all()


def test_groups_are_encoded_independently(tiny_cfg):
    guide = UGVAEGuide(tiny_cfg)
    x = torch.rand(3, 4, *tiny_cfg.x_shape)
    together = guide.global_posterior(x)[0]
    alone = torch.cat([guide.global_posterior(x[g : g + 1])[0] for g in range(3)])
    torch.testing.assert_close(together, alone)
    # permuting samples inside a group leaves its posterior unchanged (exchangeability)
    torch.testing.assert_close(guide.global_posterior(x[:, torch.randperm(4)])[0], together)
