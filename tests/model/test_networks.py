import torch
from torch import nn

from ugvae.model import ModelConfig
from ugvae.model.networks import ClusterPrior, Decoder, ImageFeatures, concat_latents, product_of_gaussians


def test_cluster_prior_equals_k_separate_networks():
    prior = ClusterPrior(beta_dim=3, z_dim=2, K=4, hidden=5)
    beta = torch.randn(6, 3)
    loc, scale = prior(beta)
    assert loc.shape == scale.shape == (6, 4, 2)
    for k in range(4):
        net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4))
        net[0].weight.data, net[0].bias.data = prior.w1[k].T, prior.b1[k]
        net[2].weight.data, net[2].bias.data = prior.w2[k].T, prior.b2[k]
        out_loc, raw = net(beta).chunk(2, -1)
        torch.testing.assert_close(loc[:, k], out_loc)
        torch.testing.assert_close(scale[:, k], torch.exp(0.5 * torch.tanh(raw)))
    # variances stay in [1/e, e]
    assert (scale.pow(2) >= torch.exp(torch.tensor(-1.0)) - 1e-6).all()
    assert (scale.pow(2) <= torch.exp(torch.tensor(1.0)) + 1e-6).all()


def test_product_of_gaussians_is_the_normalised_product():
    loc, scale = torch.randn(5, 3), torch.rand(5, 3) + 0.2
    mu, sigma = product_of_gaussians(loc, scale, dim=0)
    # log of a product of Gaussian densities is quadratic in x: compare its curvature and mode
    x = torch.linspace(-3, 3, 601)[:, None]
    logp = torch.distributions.Normal(loc[None], scale[None]).log_prob(x[:, :, None].expand(-1, 5, 3)).sum(1)
    torch.testing.assert_close(x[logp.argmax(0), 0], mu, atol=0.01, rtol=0)
    torch.testing.assert_close(sigma.pow(-2), scale.pow(-2).sum(0))
    # one factor: the product is that factor
    one = product_of_gaussians(loc[:1], scale[:1], dim=0)
    torch.testing.assert_close(one[0], loc[0]), torch.testing.assert_close(one[1], scale[0])


def test_concat_latents_broadcasts_group_latent():
    z, beta = torch.randn(7, 2, 5, 3), torch.randn(2, 1, 4)
    h = concat_latents(z, beta)
    assert h.shape == (7, 2, 5, 7)
    assert torch.equal(h[3, 1, 2, 3:], beta[1, 0])


def test_conv_architecture_shapes_with_extra_leading_dims():
    cfg = ModelConfig(x_shape=(3, 64, 64), z_dim=4, beta_dim=4, K=2)
    features, decoder = ImageFeatures(cfg), Decoder(cfg, 8)
    assert features(torch.rand(2, 3, *cfg.x_shape)).shape == (2, 3, 256)
    assert decoder(torch.randn(5, 2, 3, 8)).shape == (5, 2, 3, *cfg.x_shape)
