"""The ML-VAE baseline (Bouchacourt et al., 2018), trained on random groups like UG-VAE.

For each of G groups of B samples:

    beta            ~ N(0, I)                             the group's content variable C_G
    z_i             ~ N(0, I)                             each sample's style variable S_i
    x_i | z_i, beta ~ p(x | decoder([z_i, beta]))

It is UG-VAE without the mixture (no d, and z independent of beta): the paper's fig. 4
ablation. The sites keep UG-VAE's names, content as `beta` and style as `z`, with the shapes
documented in `model/ugvae.py`, so experiments treat both models alike. K is ignored.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from .base import GenerativeModel, group_shape
from .config import ModelConfig
from .likelihood import pixel_distribution
from .networks import Decoder, concat_latents


class MLVAEModel(GenerativeModel):
    """The ML-VAE baseline (Bouchacourt et al., 2018): content beta ~ N(0, I) per group, style
    z_i ~ N(0, I) per image, no mixture."""

    has_global_latent = True

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.decoder = Decoder(cfg, cfg.z_dim + cfg.beta_dim)

    def forward(self, x=None, *, num_groups: int = 1, group_size: int | None = None):
        G, B = group_shape(x, num_groups, group_size)
        cfg, device = self.cfg, self.device
        with pyro.plate("groups", G, dim=-2):
            beta = pyro.sample("beta", dist.Normal(torch.zeros(cfg.beta_dim, device=device), 1.0).to_event(1))
            with pyro.plate("samples", B, dim=-1):
                z = pyro.sample("z", dist.Normal(torch.zeros(cfg.z_dim, device=device), 1.0).to_event(1))
                return pyro.sample("x", pixel_distribution(self.logits(z, beta), cfg), obs=x)

    def logits(self, z: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        return self.decoder(concat_latents(z, beta))
