"""The GMVAE baseline, as simplified in Dilokthanakul et al. (2016): a VAE with a mixture prior.

For each sample i of each of G groups of B samples, independently:

    d_i       ~ Cat(1/K)                                  enumerated exactly, as in UG-VAE
    z_i | d_i ~ N(mu_{d_i}, Sigma_{d_i})                  learned, fixed component parameters
    x_i | z_i ~ p(x | decoder(z_i))

It is UG-VAE's local model with nothing to condition the mixture on: the component
parameters come from the same K component networks (`ClusterPrior`) fed a constant instead
of beta, so the two models start from the same law of initial components and differ only by
the global latent. Sites d, z and x have the shapes documented in `model/ugvae.py`; beta_dim
is ignored.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex

from .base import Components, GenerativeModel, group_shape
from .config import ModelConfig
from .likelihood import pixel_distribution
from .networks import ClusterPrior, Decoder


class GMVAEModel(GenerativeModel):
    """The GMVAE baseline: d_i ~ Cat(1/K), z_i ~ N(mu_d, Sigma_d) with learned components, no global latent."""

    has_mixture = True

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.component_prior = ClusterPrior(1, cfg.z_dim, cfg.K, cfg.hidden)
        self.decoder = Decoder(cfg, cfg.z_dim)

    def _prior_components(self, beta: None) -> Components:
        """The K learned components (K, z_dim), the same for every group."""
        return Components(*self.component_prior(torch.ones(1, device=self.device)))

    def forward(self, x=None, *, num_groups: int = 1, group_size: int | None = None):
        G, B = group_shape(x, num_groups, group_size)
        loc, scale = self.prior_components()
        with pyro.plate("groups", G, dim=-2), pyro.plate("samples", B, dim=-1):
            d = pyro.sample("d", dist.Categorical(logits=self.cluster_logits()))
            z = pyro.sample("z", dist.Normal(Vindex(loc)[..., d, :], Vindex(scale)[..., d, :]).to_event(1))
            return pyro.sample("x", pixel_distribution(self.logits(z, None), self.cfg), obs=x)

    def logits(self, z: torch.Tensor, beta: None) -> torch.Tensor:
        return self.decoder(z)
