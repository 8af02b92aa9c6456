"""UG-VAE's loss written by hand in PyTorch: the reference that Pyro's training step is timed against.

For x of shape (G, B, C, H, W) it returns minus the ELBO of eq. 10-11 summed over the G groups,
with one reparameterised draw of each z_i ~ q(z_i | x_i) and of beta ~ q(beta | X, Z) and the sum
over each d_i exact, with weights pi_ik = q(d_i = k | z_i):

    ELBO_g = sum_i [ log p(x_i | z_i, beta) - log q(z_i | x_i)
                     + sum_k pi_ik (log p(z_i | d_i = k, beta) - log K - log pi_ik) ]
             + log p(beta) - log q(beta | X, Z)

These are the terms TraceEnum_ELBO builds from the traces of UGVAEModel and UGVAEGuide, computed
by the same networks and drawn from the random stream in the same order (z, then beta), so for
one seed the two losses are equal, not only equal in expectation (tests/bench/test_handwritten.py).
The authors' code replaces the z and beta terms by closed-form KLs: the same expectation at the
same cost. Only tensor operations are used, and no Python number becomes a device tensor, so a
CUDA graph can capture the step.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions.utils import clamp_probs
from torch.nn import functional as F

from ugvae.model.networks import concat_latents

_LOG_2PI = math.log(2 * math.pi)


def _diag_normal_log_prob(value, loc, scale):
    """log N(value; loc, diag(scale^2)), summed over the last dim."""
    return (-0.5 * ((value - loc) / scale).pow(2) - scale.log() - 0.5 * _LOG_2PI).sum(-1)


def _pixel_log_prob(logits, x, cfg):
    """log p(x | logits) per sample, the likelihood of model/likelihood.py summed over (C, H, W)."""
    if cfg.likelihood == "gaussian":
        # The operations of model/likelihood.py's FixedScaleNormal: a fair reference spends no more.
        log_px = (x - torch.sigmoid(logits)).pow(2) * (-0.5 / cfg.var_x) - 0.5 * math.log(2 * math.pi * cfg.var_x)
    else:
        log_px = -F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return log_px.flatten(-3).sum(-1)


def handwritten_elbo(model, guide, x: torch.Tensor) -> torch.Tensor:
    """Sum over groups of the ELBO of eq. 10-11 for images x (G, B, C, H, W); one draw of z and beta."""
    cfg = model.cfg
    h = guide.features(x)
    z_loc, z_scale = guide.local_encoder(h)
    # empty().normal_() is how torch's Normal.rsample draws, so a seed gives Pyro's z and beta.
    z = z_loc + z_scale * torch.empty_like(z_loc).normal_()
    pi = guide.cluster_probs(h, z)  # (G, B, K)
    beta_loc, beta_scale = guide.global_params(h, pi)
    beta = (beta_loc + beta_scale * torch.empty_like(beta_loc).normal_()).unsqueeze(-2)  # (G, 1, g)

    log_px = _pixel_log_prob(model.decoder(concat_latents(z, beta)), x, cfg)
    prior_loc, prior_scale = model.cluster_prior(beta)  # (G, 1, K, z_dim)
    log_pz_given_d = _diag_normal_log_prob(z.unsqueeze(-2), prior_loc, prior_scale)  # (G, B, K)
    pi = clamp_probs(pi)  # as Categorical(probs=pi) does before taking its log
    local_d = (pi * (log_pz_given_d - math.log(cfg.K) - pi.log())).sum(-1)
    log_qz = _diag_normal_log_prob(z, z_loc, z_scale)
    beta = beta.squeeze(-2)
    log_pbeta = (-0.5 * beta.pow(2) - 0.5 * _LOG_2PI).sum(-1)
    log_qbeta = _diag_normal_log_prob(beta, beta_loc, beta_scale)
    return (log_px + local_d - log_qz).sum(-1).add(log_pbeta - log_qbeta).sum()


class HandwrittenLoss(nn.Module):
    """`-handwritten_elbo` as a module over the same model and guide, like Pyro's ELBOModule."""

    def __init__(self, model: nn.Module, guide: nn.Module):
        super().__init__()
        self.model, self.guide = model, guide

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -handwritten_elbo(self.model, self.guide, x)
