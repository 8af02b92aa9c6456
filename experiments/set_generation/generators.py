"""Generators of "more images like this set": M new images from a conditioning set X of B images.

For a run with model p and guide q, and X (S sets of B images at once):

    beta sampling          beta* = E q(beta | X); the model run as a Pyro program under
                           poutine.condition(beta = beta*): d ~ p(d | beta*), z ~ p(z | d, beta*),
                           image = the decoder's mean (experiments/commands/sample.py's path)
    set-code Gaussian      z ~ N(mean_i mu_i, var_i mu_i + mean_i sigma_i^2), the diagonal Gaussian
                           with the moments of the set's codes (1/B) sum_i q(z | x_i); decoded with
                           beta* where the model has a beta
    member code + noise    i ~ U{1..B}, z ~ q(z | x_i): a draw from that same mixture, a near-copy
                           of a member; decoded with beta*
    set's q(d) mix         (mixture models) d ~ Cat(mean_i pi_i), z ~ p(z | d, beta*): what beta
                           sampling gives when p(d | beta*) is the set's own mix
    prior                  the model run with no data: beta ~ p(beta) (z ~ p(z) for a VAE), the floor

Each returns images (S, M, C, H, W) in [0, 1]. The generators are listed per run by
`generators(run)`, so that baseline runs (ML-VAE, VAE, GMVAE) get the same treatment.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pyro.distributions as dist
import torch

from ...trained.inference import Posteriors, posteriors, prior_trace

Generator = Callable[[torch.Tensor, int], torch.Tensor]  # (X (S, B, C, H, W), M) -> (S, M, C, H, W)


def decode(model, z: torch.Tensor, beta: torch.Tensor | None) -> torch.Tensor:
    """Mean images of z (S, M, z_dim) with beta (S, beta_dim), or None for a model without one."""
    return model.decode(z, None if beta is None else beta[:, None])


def prior_samples(model, num_sets: int, size: int, beta: torch.Tensor | None = None) -> torch.Tensor:
    """The model as a Pyro program with no data, beta fixed per set to `beta` (S, beta_dim) if given:
    the decoder's mean images of its draws."""
    return prior_trace(model, num_sets, size, beta).nodes["x"]["fn"].mean


def set_codes(run, x: torch.Tensor) -> Posteriors:
    """The guide's summaries of the sets x; beta* = E q(beta | X) is `beta_loc` (None without a beta)."""
    return posteriors(run.guide, x)


@torch.no_grad()
def beta_sampling(run, x: torch.Tensor, size: int) -> torch.Tensor:
    return prior_samples(run.model, len(x), size, run.guide.global_posterior(x).loc)


@torch.no_grad()
def set_code_gaussian(run, x: torch.Tensor, size: int) -> torch.Tensor:
    z_loc, z_scale, _, beta, _ = set_codes(run, x)
    var = z_loc.var(1, unbiased=False) + z_scale.pow(2).mean(1)
    z = z_loc.mean(1, keepdim=True) + var.sqrt()[:, None] * torch.randn(len(x), size, z_loc.shape[-1], device=x.device)
    return decode(run.model, z, beta)


@torch.no_grad()
def member_code(run, x: torch.Tensor, size: int) -> torch.Tensor:
    z_loc, z_scale, _, beta, _ = set_codes(run, x)
    pick = torch.randint(x.shape[1], (len(x), size), device=x.device)
    rows = torch.arange(len(x), device=x.device)[:, None]
    z = z_loc[rows, pick] + z_scale[rows, pick] * torch.randn(len(x), size, z_loc.shape[-1], device=x.device)
    return decode(run.model, z, beta)


@torch.no_grad()
def set_cluster_mix(run, x: torch.Tensor, size: int) -> torch.Tensor:
    _, _, pi, beta, _ = set_codes(run, x)
    d = dist.Categorical(probs=pi.mean(1, keepdim=True).expand(-1, size, -1)).sample()  # (S, M)
    # (S, K, z_dim), or (K, z_dim) for every set alike when there is no beta
    loc, scale = (torch.broadcast_to(t, (len(x),) + t.shape[-2:]) for t in run.model.prior_components(beta))
    rows = torch.arange(len(x), device=x.device)[:, None]
    z = dist.Normal(loc[rows, d], scale[rows, d]).sample()
    return decode(run.model, z, beta)


@torch.no_grad()
def prior(run, x: torch.Tensor, size: int) -> torch.Tensor:
    return prior_samples(run.model, len(x), size)


# Table order: name, generator, the latent it needs besides z (None: every model has what it needs).
GENERATORS = (
    ("beta sampling", beta_sampling, "beta"),
    ("set-code Gaussian", set_code_gaussian, None),
    ("member code + noise", member_code, None),
    ("set's q(d) mix", set_cluster_mix, "d"),
)


def generators(run) -> dict[str, Generator]:
    """Name -> generator for what this run's model offers (its latents, model/base.py), in table order."""
    latents = run.model.latent_sizes
    out = {name: partial(make, run) for name, make, needs in GENERATORS if needs is None or needs in latents}
    top = next(name for name in latents if name != "d")  # what the prior draws first: beta, or z
    out[f"{top} ~ p({top})"] = partial(prior, run)
    return out


@torch.no_grad()
def reconstructions(run, x: torch.Tensor) -> torch.Tensor:
    """Decoder means at E q(z | x) (and E q(beta | X)): what the run's decoder makes of x itself."""
    codes = set_codes(run, x)
    return decode(run.model, codes.z_loc, codes.beta_loc)
