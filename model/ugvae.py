"""The UG-VAE generative model, eq. 1-4 of the paper.

For each of G groups of B samples:

    beta       ~ N(0, I)                                  global latent, one per group
    d_i        ~ Cat(1/K)                                 eq. 4, enumerated exactly
                 or Cat(softmax(A beta + b))              cluster_weights="global"
    z_i | d_i, beta ~ N(mu_{d_i}(beta), Sigma_{d_i}(beta))  eq. 3, mixture set by beta
    x_i | z_i, beta ~ p(x | decoder([z_i, beta]))         eq. 2

Shapes, for x of shape (G, B, C, H, W) with plates `groups` at dim -2 and `samples` at -1
(max_plate_nesting=2); the same holds in every guide of `guide/`:

    site   batch shape   event shape   under enumeration of d
    beta   (G, 1)        (beta_dim,)
    d      (G, B)        ()            value (K, 1, 1): enumerated at dim -3
    z      (G, B)        (z_dim,)      its log-prob is (K, G, B)
    x      (G, B)        (C, H, W)

With cluster_weights="global" (an extension of the paper, not in it) the group's beta also
sets its cluster proportions, so a group's composition can live in beta; eq. 4's uniform
weights are the default. With decoder_film (also an extension) beta modulates the decoder's
hidden layer as well as being one of its inputs.

`leave_one_out=True` is the program of the leave-one-out bound (train/elbo.py): each sample
draws its own beta_i, which the guide infers from the other members of its group, and the
beta site moves into the samples plate with its log-density scaled by 1/B (beta (G, B),
event (beta_dim,)). The generative model is the same; only the bound that trains it differs.

Any further dims on the left (particles under `vectorize_particles`) broadcast through.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.ops.indexing import Vindex
from torch import nn

from .base import Components, GenerativeModel, group_shape
from .config import ModelConfig
from .likelihood import pixel_distribution
from .networks import ClusterPrior, Decoder, concat_latents


class UGVAEModel(GenerativeModel):
    """p of UG-VAE (eq. 1-4): per group beta ~ N(0, I); per image d_i ~ Cat(softmax(logits(beta))),
    z_i ~ N(mu_d(beta), diag sigma_d(beta)^2) and x_i ~ p(x | [z_i, beta]).

    Parameters
    ----------
    cfg : ModelConfig
        Sizes; ``cluster_weights="global"`` makes p(d | beta) = softmax(A beta + b) and
        ``decoder_film`` lets beta modulate the decoder (extensions of the paper).

    Examples
    --------
    Traced without data, the program is a generator; conditioned on groups x (G, B, C, H, W) it
    scores them. Enumerate d to see its (K, 1, 1) dimension:

    >>> model = UGVAEModel(ModelConfig(x_shape=(1, 8, 8), hidden=16))
    >>> trace = pyro.poutine.trace(model).get_trace(None, num_groups=3, group_size=5)
    >>> tuple(trace.nodes["beta"]["value"].shape), tuple(trace.nodes["x"]["value"].shape)
    ((3, 1, 10), (3, 5, 1, 8, 8))
    """

    has_global_latent = True
    has_mixture = True
    has_leave_one_out = True
    extensions = frozenset({"cluster_weights", "decoder_film"})

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.cluster_prior = ClusterPrior(cfg.beta_dim, cfg.z_dim, cfg.K, cfg.hidden)
        self.decoder = Decoder(cfg, cfg.z_dim + cfg.beta_dim, film_dim=cfg.beta_dim if cfg.decoder_film else 0)
        self.cluster_weights = nn.Linear(cfg.beta_dim, cfg.K) if cfg.cluster_weights == "global" else None

    @property
    def has_cluster_weights(self) -> bool:
        return self.cluster_weights is not None

    def _cluster_logits(self, beta: torch.Tensor) -> torch.Tensor:
        """Zeros for eq. 4, A beta + b for global weights."""
        if self.cluster_weights is None:
            return super()._cluster_logits(beta)
        return self.cluster_weights(beta)

    def _prior_components(self, beta: torch.Tensor) -> Components:
        return Components(*self.cluster_prior(beta))

    def forward(self, x=None, *, num_groups: int = 1, group_size: int | None = None, leave_one_out: bool = False):
        """The program: sites ``beta`` (plate ``groups``, dim -2), ``d``, ``z`` and ``x`` (also
        plate ``samples``, dim -1).

        Parameters
        ----------
        x : torch.Tensor, optional
            Observed groups (G, B, C, H, W) in [0, 1]; None generates.
        num_groups : int, default 1
            G when generating.
        group_size : int, optional
            B when generating; required then.
        leave_one_out : bool, default False
            Draw one beta per member, for the leave-one-out bound (train/elbo.py).

        Returns
        -------
        torch.Tensor
            The value of ``x``: the data, or the images drawn.
        """
        G, B = group_shape(x, num_groups, group_size)
        cfg, device = self.cfg, self.cluster_prior.w1.device
        zeros = torch.zeros(cfg.beta_dim, device=device)
        samples = pyro.plate("samples", B, dim=-1)
        with pyro.plate("groups", G, dim=-2):
            if leave_one_out:
                with samples, poutine.scale(scale=1.0 / B):
                    beta = pyro.sample("beta", dist.Normal(zeros, 1.0).to_event(1))  # (..., G, B, beta_dim)
            else:
                beta = pyro.sample("beta", dist.Normal(zeros, 1.0).to_event(1))  # (..., G, 1, beta_dim)
            loc, scale = self.prior_components(beta)  # (..., G, 1 or B, K, z_dim)
            with samples:
                d = pyro.sample("d", dist.Categorical(logits=self.cluster_logits(beta)))
                z = pyro.sample("z", dist.Normal(Vindex(loc)[..., d, :], Vindex(scale)[..., d, :]).to_event(1))
                return pyro.sample("x", pixel_distribution(self.logits(z, beta), cfg), obs=x)

    def logits(self, z: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        return self.decoder(concat_latents(z, beta), film=beta if self.cfg.decoder_film else None)
