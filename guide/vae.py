"""The VAE's amortised Gaussian guide (Kingma & Welling, 2014).

    q(z_i | x_i) = N(mu(x_i), Sigma(x_i))                 UG-VAE's eq. 6, alone

The encoder is UG-VAE's local encoder (image trunk + Gaussian head); site shapes are those
documented in `model/ugvae.py`.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from .base import Guide


class VAEGuide(Guide):
    """The VAE's guide ``gaussian``: q(z_i | x_i) = N(mu(x_i), Sigma(x_i)), UG-VAE's eq. 6 alone."""

    model_name = "vae"

    def forward(self, x: torch.Tensor):
        G, B = x.shape[:2]
        _, z_loc, z_scale = self.encode(x)
        with pyro.plate("groups", G, dim=-2), pyro.plate("samples", B, dim=-1):
            pyro.sample("z", dist.Normal(z_loc, z_scale).to_event(1))
