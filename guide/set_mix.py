"""Lever of UG-VAE's guide for p(d | beta) = softmax(A beta + b): each factor of q(beta | X, Z)
also reads the log of the set's q(d)-weighted class counts.

    m              = (1/B) sum_j pi(z_j)                                   the set's mean q(d)
    q(beta | X, Z) = prod_i N(mu_i, Sigma_i), (mu_i, Sigma_i) = f([x_i, pi(z_i), log m])   eq. 8-9

Why log m: with `cluster_weights="global"` the model's cluster shares are a softmax of a linear
map of beta, a log-linear family. Eq. 9's posterior mean is a precision-weighted mean of linear
maps of [x_i, pi_i], so it is linear in the pi_i, and softmax(linear(mean pi)) cannot give a
set's sparse mix (shares near 0 need logits far below the others). A term linear in log m
passes through the precision-weighted mean unchanged (it is the same for every factor), and
softmax(log m) = m: with A W = I the model's p(d | beta) at E q(beta | X) is the set's own mix.
The ELBO already asks for it (its d terms hold -B KL(m || p(d | beta)) up to a constant), this
guide only makes it reachable.

With `leave_one_out` member i's posterior uses m over j != i, and the factors of j != i.
"""

from __future__ import annotations

import torch

from ..model.config import ModelConfig
from ..model.networks import GroupPosterior, concat_latents, others, product_of_gaussians
from .ugvae import UGVAEGuide

# Shares below this are read as this: log 0 would be -inf, and a share of 1e-4 is already "absent".
SHARE_FLOOR = 1e-4


class SetMixGuide(UGVAEGuide):
    """Lever ``set-mix``: each factor of q(beta | X, Z) also reads log of the set's mean q(d), so that
    p(d | beta) at E q(beta | X) can reach the set's own mix (with ``cluster_weights="global"``)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.global_encoder = GroupPosterior(self.features.out_dim + 2 * cfg.K, cfg.beta_dim)

    def global_params(self, h: torch.Tensor, pi: torch.Tensor, leave_one_out: bool = False):
        inputs = concat_latents(h, pi)
        if not leave_one_out:
            log_mix = pi.mean(-2, keepdim=True).clamp_min(SHARE_FLOOR).log()
            return self.global_encoder(concat_latents(inputs, log_mix))
        B = pi.shape[-2]
        mask = others(B, pi.device)
        log_mix = (torch.einsum("ij,...jk->...ik", mask, pi) / (B - 1)).clamp_min(SHARE_FLOOR).log()  # (..., B_i, K)
        # Member i's factors: those of j != i, each reading i's leave-one-out mix: (..., B_i, B_j, .).
        loc, scale = self.global_encoder.per_sample(concat_latents(inputs.unsqueeze(-3), log_mix.unsqueeze(-2)))
        return product_of_gaussians(loc, scale, dim=-2, weights=mask.unsqueeze(-1))
