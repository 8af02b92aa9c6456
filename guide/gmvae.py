"""The GMVAE guide: UG-VAE's local posterior without the global one.

    q(z_i, d_i | x_i) = N(z_i; mu(x_i), Sigma(x_i)) Cat(d_i; pi(z_i))     eq. 6-7

d is enumerated in parallel, so TraceEnum_ELBO sums over its K values exactly, weighted by
pi(z_i). The networks are UG-VAE's local encoder and cluster head; site shapes are those
documented in `model/ugvae.py`.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from ..model.config import ModelConfig
from ..model.networks import ClusterPosterior
from .base import Guide


class GMVAEGuide(Guide):
    """The GMVAE's guide ``structured``: q(z_i | x_i) q(d_i | z_i) (eq. 6-7), d enumerated."""

    model_name = "gmvae"
    has_mixture = True

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.cluster_posterior = ClusterPosterior(cfg.z_dim, cfg.K, cfg.hidden)

    def forward(self, x: torch.Tensor):
        G, B = x.shape[:2]
        _, z_loc, z_scale = self.encode(x)
        with pyro.plate("groups", G, dim=-2), pyro.plate("samples", B, dim=-1):
            z = pyro.sample("z", dist.Normal(z_loc, z_scale).to_event(1))
            pyro.sample("d", dist.Categorical(probs=self.cluster_posterior(z)), infer={"enumerate": "parallel"})

    def _local_posterior(self, x: torch.Tensor):
        """z_loc, z_scale of q(z|x) and pi of q(d|z) at z = z_loc."""
        _, z_loc, z_scale = self.encode(x)
        return z_loc, z_scale, self.cluster_posterior(z_loc)
