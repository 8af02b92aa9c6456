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

import pyro.distributions as dist
import torch
from pyro import poutine

Generator = Callable[[torch.Tensor, int], torch.Tensor]  # (X (S, B, C, H, W), M) -> (S, M, C, H, W)


def decode(model, z: torch.Tensor, beta: torch.Tensor | None) -> torch.Tensor:
    """Mean images of z (S, M, z_dim), with beta (S, beta_dim) for a model that has one."""
    return model.decode(z, beta[:, None]) if model.has_global_latent else model.decode(z)


def prior_samples(model, num_sets: int, size: int, beta: torch.Tensor | None = None) -> torch.Tensor:
    """The model as a Pyro program with no data, beta fixed per set to `beta` (S, beta_dim) if given."""
    program = model
    if beta is not None:
        program = poutine.condition(model, {"beta": beta[:, None]})  # the site is (S, 1, beta_dim)
    trace = poutine.trace(program).get_trace(None, num_groups=num_sets, group_size=size)
    beta_site = trace.nodes["beta"]["value"][:, 0] if model.has_global_latent else None
    return decode(model, trace.nodes["z"]["value"], beta_site)


def set_codes(run, x: torch.Tensor):
    """(z_loc, z_scale, pi or None, beta* or None) of the sets x."""
    local = run.guide.local_posterior(x)
    beta = run.guide.global_posterior(x).loc if run.guide.has_global_latent else None
    return local.z_loc, local.z_scale, local.pi, beta


@torch.no_grad()
def beta_sampling(run, x: torch.Tensor, size: int) -> torch.Tensor:
    return prior_samples(run.model, len(x), size, run.guide.global_posterior(x).loc)


@torch.no_grad()
def set_code_gaussian(run, x: torch.Tensor, size: int) -> torch.Tensor:
    z_loc, z_scale, _, beta = set_codes(run, x)
    var = z_loc.var(1, unbiased=False) + z_scale.pow(2).mean(1)
    z = z_loc.mean(1, keepdim=True) + var.sqrt()[:, None] * torch.randn(len(x), size, z_loc.shape[-1], device=x.device)
    return decode(run.model, z, beta)


@torch.no_grad()
def member_code(run, x: torch.Tensor, size: int) -> torch.Tensor:
    z_loc, z_scale, _, beta = set_codes(run, x)
    pick = torch.randint(x.shape[1], (len(x), size), device=x.device)
    rows = torch.arange(len(x), device=x.device)[:, None]
    z = z_loc[rows, pick] + z_scale[rows, pick] * torch.randn(len(x), size, z_loc.shape[-1], device=x.device)
    return decode(run.model, z, beta)


@torch.no_grad()
def set_cluster_mix(run, x: torch.Tensor, size: int) -> torch.Tensor:
    _, _, pi, beta = set_codes(run, x)
    d = dist.Categorical(probs=pi.mean(1, keepdim=True).expand(-1, size, -1)).sample()  # (S, M)
    loc, scale = run.model.cluster_prior(beta) if beta is not None else run.model.components()
    if beta is None:  # GMVAE: the same K components for every set
        loc, scale = loc.expand(len(x), -1, -1), scale.expand(len(x), -1, -1)
    rows = torch.arange(len(x), device=x.device)[:, None]
    z = dist.Normal(loc[rows, d], scale[rows, d]).sample()
    return decode(run.model, z, beta)


@torch.no_grad()
def prior(run, x: torch.Tensor, size: int) -> torch.Tensor:
    return prior_samples(run.model, len(x), size)


def generators(run) -> dict[str, Generator]:
    """Name -> generator for what this run's model offers, in table order."""
    model = run.model
    out: dict[str, Generator] = {}
    if model.has_global_latent:
        out["beta sampling"] = lambda x, m: beta_sampling(run, x, m)
    out["set-code Gaussian"] = lambda x, m: set_code_gaussian(run, x, m)
    out["member code + noise"] = lambda x, m: member_code(run, x, m)
    if model.has_mixture:
        out["set's q(d) mix"] = lambda x, m: set_cluster_mix(run, x, m)
    out["beta ~ p(beta)" if model.has_global_latent else "z ~ p(z)"] = lambda x, m: prior(run, x, m)
    return out


@torch.no_grad()
def reconstructions(run, x: torch.Tensor) -> torch.Tensor:
    """Decoder means at E q(z | x) (and E q(beta | X)): what the run's decoder makes of x itself."""
    z_loc, _, _, beta = set_codes(run, x)
    return decode(run.model, z_loc, beta)
