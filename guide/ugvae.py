"""The structured UG-VAE guide, eq. 5-9 of the paper.

    q(Z, d, beta | X) = q(Z | X) q(d | Z) q(beta | X, Z)                       eq. 5
    q(z_i | x_i)   = N(mu(x_i), Sigma(x_i))                                    eq. 6
    q(d_i | z_i)   = Cat(pi(z_i))                                              eq. 7
    q(beta | X, Z) = prod_i N(mu_i, Sigma_i), (mu_i, Sigma_i) = f([x_i, pi(z_i)])  eq. 8-9

Sites are sampled in the order z, beta, d: beta depends on the probabilities pi(z_i), never
on the value of d_i, so this is the same factorisation, and it is the order in which Pyro's
enumeration check accepts a global site that reads local quantities. d is enumerated in
parallel, so TraceEnum_ELBO sums the local ELBO over d_i exactly (eq. 10-11). Site shapes
are those documented in `model/ugvae.py`.

Ablations subclass this guide and switch `cluster_reads_z` (q(d | z) or q(d | x)) or
`global_reads_pi` (whether each factor of q(beta | .) reads pi(z_i)); see `guide/mean_field.py`,
or replace `global_params` (how the set is pooled; see `guide/attention.py`).

`leave_one_out=True` gives each sample i its own beta_i ~ q(beta | X without x_i, Z without
z_i), the product of eq. 9 over j != i, in the samples plate with its log-density scaled by
1/B: the guide of the leave-one-out bound (train/elbo.py), paired with the model's
`leave_one_out=True`.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from ..model.config import ModelConfig
from ..model.networks import (
    ClusterPosterior,
    GroupPosterior,
    concat_latents,
)
from .base import Guide


class UGVAEGuide(Guide):
    """q of UG-VAE, the paper's structured family q(Z | X) q(d | Z) q(beta | X, Z) (eq. 5-9).

    z_i ~ q(z | x_i) (eq. 6); pi(z_i) = q(d_i | z_i) (eq. 7); q(beta | X, Z) is the product of one
    Gaussian per image, read from [h(x_i), pi(z_i)] (eq. 8-9), so a group may hold any number of
    images; d is enumerated in parallel, so the ELBO sums its K values exactly.

    Parameters
    ----------
    cfg : ModelConfig
        Sizes.

    Examples
    --------
    An ablation is a subclass that overrides one factor (:doc:`/tutorials/writing-a-guide`):

    >>> class BetaFromPiGuide(UGVAEGuide):
    ...     def __init__(self, cfg):
    ...         super().__init__(cfg)
    ...         self.global_encoder = GroupPosterior(cfg.K, cfg.beta_dim)
    ...
    ...     def global_params(self, h, pi, leave_one_out=False):
    ...         return self.global_encoder(pi, leave_one_out)
    """

    model_name = "ugvae"
    has_global_latent = True
    has_mixture = True
    cluster_reads_z = True  # q(d | z); an ablation may read the image features instead
    global_reads_pi = True  # q(beta | X, Z); an ablation may drop pi(z)

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        cluster_in = cfg.z_dim if self.cluster_reads_z else self.features.out_dim
        self.cluster_posterior = ClusterPosterior(cluster_in, cfg.K, cfg.hidden)
        global_in = self.features.out_dim + (cfg.K if self.global_reads_pi else 0)
        self.global_encoder = GroupPosterior(global_in, cfg.beta_dim)

    def cluster_probs(self, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.cluster_posterior(z if self.cluster_reads_z else h)

    def global_params(self, h: torch.Tensor, pi: torch.Tensor, leave_one_out: bool = False):
        """loc, scale of q(beta | X, Z), each (..., G, beta_dim), from (..., G, B, .) inputs;
        with `leave_one_out`, (..., G, B, beta_dim): row i from the members j != i."""
        # pi may carry a particle dim that h lacks, hence the broadcasting concat.
        return self.global_encoder(concat_latents(h, pi) if self.global_reads_pi else h, leave_one_out)

    def forward(self, x: torch.Tensor, leave_one_out: bool = False):
        """The program: ``z``, then ``beta`` (which reads pi(z)), then ``d``, enumerated.

        Parameters
        ----------
        x : torch.Tensor
            Groups (G, B, C, H, W) in [0, 1].
        leave_one_out : bool, default False
            One beta per member from the other members (the leave-one-out bound).
        """
        G, B = x.shape[:2]
        h, z_loc, z_scale = self.encode(x)
        samples = pyro.plate("samples", B, dim=-1)
        with pyro.plate("groups", G, dim=-2):
            with samples:
                z = pyro.sample("z", dist.Normal(z_loc, z_scale).to_event(1))
            pi = self.cluster_probs(h, z)
            beta_loc, beta_scale = self.global_params(h, pi, leave_one_out)
            if leave_one_out:
                with samples, poutine.scale(scale=1.0 / B):
                    pyro.sample("beta", dist.Normal(beta_loc, beta_scale).to_event(1))
            else:
                pyro.sample("beta", dist.Normal(beta_loc.unsqueeze(-2), beta_scale.unsqueeze(-2)).to_event(1))
            with samples:
                pyro.sample("d", dist.Categorical(probs=pi), infer={"enumerate": "parallel"})

    def _local_posterior(self, x: torch.Tensor):
        """z_loc, z_scale of q(z|x) and pi of q(d|z) at z = z_loc."""
        h, z_loc, z_scale = self.encode(x)
        return z_loc, z_scale, self.cluster_probs(h, z_loc)

    def _global_posterior(self, x: torch.Tensor):
        """loc, scale of q(beta|X,Z), with Z at the mean of q(z|x)."""
        h, z_loc, _ = self.encode(x)
        return self.global_params(h, self.cluster_probs(h, z_loc))
