"""The i.i.d. VAE baseline (Kingma & Welling, 2014), in UG-VAE's group layout.

For each sample i of each of G groups of B samples, independently:

    z_i       ~ N(0, I)
    x_i | z_i ~ p(x | decoder(z_i))                       the likelihood of eq. 2

There is no global latent and no mixture: the groups plate only keeps the call convention
(x of shape (G, B, C, H, W)) and the site shapes of `model/ugvae.py`, z being (G, B) with
event (z_dim,). The config's K and beta_dim are ignored.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from .base import GenerativeModel, group_shape
from .config import ModelConfig
from .likelihood import pixel_distribution
from .networks import Decoder


class VAEModel(GenerativeModel):
    """The i.i.d. VAE baseline (Kingma & Welling, 2014) in the group layout: z_i ~ N(0, I), x_i ~ p(x | z_i)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.decoder = Decoder(cfg, cfg.z_dim)

    def forward(self, x=None, *, num_groups: int = 1, group_size: int | None = None):
        G, B = group_shape(x, num_groups, group_size)
        zeros = torch.zeros(self.cfg.z_dim, device=self.device)
        with pyro.plate("groups", G, dim=-2), pyro.plate("samples", B, dim=-1):
            z = pyro.sample("z", dist.Normal(zeros, 1.0).to_event(1))
            return pyro.sample("x", pixel_distribution(self.logits(z, None), self.cfg), obs=x)

    def logits(self, z: torch.Tensor, beta: None) -> torch.Tensor:
        return self.decoder(z)
