"""The ML-VAE guide (Bouchacourt et al., 2018): style per sample, content per group.

    q(z_i | x_i)  = N(mu(x_i), Sigma(x_i))                       style, UG-VAE's eq. 6
    q(beta | X)   = prod_i N(mu_i, Sigma_i), (mu_i, Sigma_i) = f(x_i)   content, eq. 9

The content posterior is ML-VAE's "accumulated evidence": the same product-of-Gaussians
network as UG-VAE's q(beta | X, Z), fed with image features only, since there is no pi(z).
Site shapes are those documented in `model/ugvae.py`.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from ..model.config import ModelConfig
from ..model.networks import GroupPosterior
from .base import Guide


class MLVAEGuide(Guide):
    """The ML-VAE's guide ``accumulated-evidence``: style q(z_i | x_i) per image, content q(beta | X)
    a product of per-image Gaussians."""

    model_name = "mlvae"
    has_global_latent = True

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.global_encoder = GroupPosterior(self.features.out_dim, cfg.beta_dim)

    def forward(self, x: torch.Tensor):
        G, B = x.shape[:2]
        h, z_loc, z_scale = self.encode(x)
        beta_loc, beta_scale = self.global_encoder(h)
        with pyro.plate("groups", G, dim=-2):
            with pyro.plate("samples", B, dim=-1):
                pyro.sample("z", dist.Normal(z_loc, z_scale).to_event(1))
            pyro.sample("beta", dist.Normal(beta_loc.unsqueeze(-2), beta_scale.unsqueeze(-2)).to_event(1))

    def _global_posterior(self, x: torch.Tensor):
        """loc, scale of q(beta|X)."""
        return self.global_encoder(self.features(x))
