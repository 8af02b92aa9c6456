"""Ablation of UG-VAE's guide: q(beta | X, Z) pools the set by attention, not by a product of Gaussians.

    u_i            = [features(x_i), pi(z_i)]                              eq. 8's input
    a_i^h          = softmax_i( w_h . u_i )                                one learned query w_h per head h
    s^h            = sum_i a_i^h V_h u_i                                   attention-pooled summary
    loc, log var   = Linear([s^1 .. s^H, log n])                           q(beta | X, Z) = N(loc, var)

instead of eq. 9's product prod_i N(mu_i, Sigma_i). The pooled summary is a weighted mean, so
it does not sharpen with the set's size n by itself; log n is an input so that the posterior
may. With `leave_one_out` member i's posterior attends to j != i only (n = B - 1). Everything
else (q(z|x), q(d|z), the site order z, beta, d) is the structured guide's.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..model.config import ModelConfig
from ..model.networks import concat_latents, others
from .ugvae import UGVAEGuide

HEADS = 4


class AttentionPooling(nn.Module):
    """A set (..., B, in_dim) -> loc, scale (..., out_dim); with `leave_one_out`, (..., B, out_dim)."""

    def __init__(self, in_dim: int, out_dim: int, width: int, heads: int = HEADS):
        super().__init__()
        self.heads, self.width = heads, width
        # A bias on the scores would be the same for every member, which a softmax ignores.
        self.queries = nn.Linear(in_dim, heads, bias=False)  # w_h, one row per head
        self.values = nn.Linear(in_dim, heads * width)
        self.out = nn.Linear(heads * width + 1, 2 * out_dim)

    def forward(self, u: torch.Tensor, leave_one_out: bool = False):
        B = u.shape[-2]
        scores = self.queries(u)  # (..., B, H)
        values = self.values(u).unflatten(-1, (self.heads, self.width))  # (..., B, H, W)
        if leave_one_out:
            # Row i attends to the members j != i: -inf on the diagonal of (B_i, B_j).
            blocked = others(B, u.device).unsqueeze(-1) == 0
            scores = scores.unsqueeze(-3).masked_fill(blocked, -math.inf)  # (..., B_i, B_j, H)
            weights = torch.softmax(scores, dim=-2)
            pooled = torch.einsum("...ijh,...jhw->...ihw", weights, values)
            n = B - 1
        else:
            weights = torch.softmax(scores, dim=-2)  # (..., B, H)
            pooled = torch.einsum("...jh,...jhw->...hw", weights, values)
            n = B
        pooled = pooled.flatten(-2)
        size = torch.full(pooled.shape[:-1] + (1,), math.log(n), device=u.device)
        loc, log_var = self.out(torch.cat([pooled, size], -1)).chunk(2, -1)
        return loc, torch.exp(0.5 * log_var)


class AttentionGuide(UGVAEGuide):
    """Ablation ``attention``: q(beta | X, Z) pools the set by multi-head attention over
    [features(x_i), pi(z_i)] instead of a product of Gaussians."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        in_dim = self.features.out_dim + cfg.K
        self.global_encoder = AttentionPooling(in_dim, cfg.beta_dim, width=min(cfg.hidden, 128))

    def global_params(self, h: torch.Tensor, pi: torch.Tensor, leave_one_out: bool = False):
        return self.global_encoder(concat_latents(h, pi), leave_one_out)
