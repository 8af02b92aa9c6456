"""Does beta carry information? Diagnostics of q(beta | X) on a set of test groups.

For G groups with posteriors q_g = N(m_g, diag s_g^2) (eq. 8-9) and prior p = N(0, I):

    KL_g                  = KL(q_g || p), closed form; the rate paid per group in eq. 10
    mean_g KL_g           = I(X; beta) + KL(q_agg || p)   "ELBO surgery" (Hoffman & Johnson, 2016)
    q_agg                 = (1/G) sum_g q_g, the aggregate posterior (a mixture of the groups' Gaussians)
    I(X; beta)            = mean_g E_{q_g} [log q_g(beta) - log q_agg(beta)], Monte Carlo;
                            at most log G, and 0 when every group gets the same posterior
    KL(q_agg || p)        = mean KL - I: a beta parked away from 0 that differs little
                            between groups pays this, a learned bias, not information
    active dims           dims j with Var_g m_gj > 0.01 (Burda et al.'s activity count)
    spread                sqrt(mean_j Var_g m_gj) / mean s_gj: how far groups' means lie apart
                          in units of the posterior's own width (<< 1: groups indistinguishable)
    pixel change          mean |decode(z, beta + s_j e_j) - decode(z, beta)| over dims j and
                          pixels, at z = E q(z|x): what moving beta by one posterior standard
                          deviation does to the image, against the same for z (with z's scale)

The Monte Carlo draws use a private generator, so computing these leaves training's random
stream untouched.
"""

from __future__ import annotations

import math
import os

import torch

from ..data import to_unit_float

INACTIVE_VARIANCE = 0.01


@torch.no_grad()
def cluster_probabilities(guide, images: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """q(d | z) at z = E q(z | x) for every uint8 image (N, C, H, W), as a CPU tensor (N, K)."""
    was_training = guide.training
    guide.eval()
    device = next(guide.parameters()).device
    out = []
    for block in images.split(chunk):
        pi = guide.local_posterior(to_unit_float(block.to(device)).unsqueeze(0)).pi
        if pi is None:
            guide.train(was_training)
            raise ValueError(f"{type(guide).__name__} has no clusters; `groups` clusters:ALPHA needs ugvae or gmvae")
        out.append(pi[0].cpu())
    guide.train(was_training)
    return torch.cat(out)


def cluster_assignments(guide, images: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """argmax q(d | z) at z = E q(z | x) for every uint8 image (N, C, H, W), as a CPU tensor (N,)."""
    return cluster_probabilities(guide, images, chunk).argmax(-1)


def beta_information(loc: torch.Tensor, scale: torch.Tensor, samples: int = 16, seed: int = 0) -> dict:
    """Mean KL, I(X; beta) and marginal KL (nats per group) from posteriors loc, scale (G, D)."""
    loc, scale = loc.double().cpu(), scale.double().cpu()
    kl = (0.5 * (loc.pow(2) + scale.pow(2) - 1) - scale.log()).sum(-1)
    noise = torch.randn((samples,) + loc.shape, generator=torch.Generator().manual_seed(seed), dtype=loc.dtype)
    beta = loc + scale * noise  # (S, G, D): S draws from each group's posterior
    # log q_h(beta) for every draw and every group h: (S, G, H)
    z = (beta[:, :, None] - loc[None, None]) / scale[None, None]
    log_q = (-0.5 * z.pow(2) - scale[None, None].log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    own = log_q.diagonal(dim1=1, dim2=2)  # (S, G): each draw under its own group's posterior
    aggregate = log_q.logsumexp(-1) - math.log(loc.shape[0])
    mutual_information = (own - aggregate).mean().item()
    mean_kl = kl.mean().item()
    return {
        "beta_kl": mean_kl,
        "beta_mi": mutual_information,
        "beta_mi_bound": math.log(loc.shape[0]),  # the estimate cannot exceed log G
        "beta_marginal_kl": mean_kl - mutual_information,
    }


def beta_spread(loc: torch.Tensor, scale: torch.Tensor) -> dict:
    """Active dims and across-group spread of the posterior means; see the module docstring."""
    variance = loc.var(0, unbiased=False) if len(loc) > 1 else torch.zeros(loc.shape[-1])
    return {
        "beta_active_dims": int((variance > INACTIVE_VARIANCE).sum()),
        "beta_spread": (variance.mean().sqrt() / scale.mean()).item(),
    }


@torch.no_grad()
def pixel_change(decode, z: torch.Tensor, beta: torch.Tensor, step: torch.Tensor, move_beta: bool) -> float:
    """Mean |pixel change| when beta (G, 1, D) or z (G, B, Dz) moves by `step` along one dim at a time.

    The dims are decoded one after the other, each a mean over the same number of pixels: the
    images of one dim stay in the cache, where all dims at once took twice as long, most of it
    allocating and reading D times as many images.
    """
    latent = beta if move_beta else z
    step = step.expand(latent.shape)
    base = decode(z, beta)
    total = torch.zeros((), dtype=torch.float64, device=base.device)
    for dim in range(latent.shape[-1]):
        shift = torch.zeros_like(latent)
        shift[..., dim] = step[..., dim]
        moved = decode(z, beta + shift) if move_beta else decode(z + shift, beta)
        total += (moved - base).abs().mean()
    return (total / latent.shape[-1]).item()


@torch.no_grad()
def beta_diagnostics(model, guide, images: torch.Tensor, groups, max_decoded: int = 8) -> dict:
    """Every number of the module docstring for index groups into uint8 images, (G, B) or a list of
    such parts (groups of another size); {} without a beta."""
    if not guide.has_global_latent:  # model-kind branch 3 of 3: a model without beta has none to diagnose
        return {}
    was_training = model.training, guide.training
    model.eval(), guide.eval()
    device = next(guide.parameters()).device
    parts = list(groups) if isinstance(groups, (list, tuple)) else [groups]
    locs, scales = [], []
    for part in parts:
        for idx in part.split(64):
            loc, scale = guide.global_posterior(to_unit_float(images[idx.to(images.device)].to(device)))
            locs.append(loc.cpu()), scales.append(scale.cpu())
    loc, scale = torch.cat(locs), torch.cat(scales)
    out = {**beta_information(loc, scale), **beta_spread(loc, scale)}
    # The decoder's sensitivity on a few groups: a dozen decodes of them cost little per epoch.
    x = to_unit_float(images[parts[0][:max_decoded].to(images.device)].to(device))
    z_loc, z_scale, _ = guide.local_posterior(x)
    beta_loc, beta_scale = loc[:max_decoded, None].to(device), scale[:max_decoded, None].to(device)
    out["pixel_change_beta"] = pixel_change(model.decode, z_loc, beta_loc, beta_scale, move_beta=True)
    out["pixel_change_z"] = pixel_change(model.decode, z_loc, beta_loc, z_scale, move_beta=False)
    model.train(was_training[0]), guide.train(was_training[1])
    return out


def inactive_beta_message(result: dict, train_cfg=None, own_groups: bool = False) -> str | None:
    """One line when no dim of E[beta | X] varies across the test groups, or when there are too few
    test groups to tell (fewer than 2); None when beta is active or the model has none. The fix it
    names depends on how `train_cfg` (a TrainConfig) grouped the training data, and on whether the
    data came in groups of its own (`own_groups`: grouped:BASE, tensors given with `groups`)."""
    if result.get("beta_active_dims", 1) > 0:
        return None
    test_groups = round(math.exp(result["beta_mi_bound"]))  # the bound is log G
    if test_groups < 2:
        return (
            f"beta cannot be judged: its diagnostics saw {test_groups} test group, and whether E[beta|X] varies "
            "across groups takes at least 2; give the test split more images, or evaluate with a smaller `group_size`"
        )
    return (
        f"beta is inactive: no dim of E[beta|X] has variance > {INACTIVE_VARIANCE} across {test_groups} test groups; "
        f"of its KL of {result['beta_kl']:.2f} nats, I(X; beta) is {result['beta_mi']:.2f} (at most "
        f"{result['beta_mi_bound']:.2f} here) and the rest a learned bias; {inactive_beta_fix(train_cfg, own_groups)}"
    )


def inactive_beta_fix(train_cfg, own_groups: bool = False) -> str:
    """What to change: groups that share something, unless the run's groups already did."""
    own_groups = own_groups or (train_cfg is not None and train_cfg.dataset.startswith("grouped:"))
    shared = train_cfg is not None and (train_cfg.groups != "random" or own_groups)
    if not shared:
        return "train on groups that share something, e.g. `groups` labels:0.3"
    grouping = train_cfg.groups if train_cfg.groups != "random" else f"the groups of {train_cfg.dataset}"
    return (
        f"its training groups ({grouping}) share something, but z holds it: train with a smaller `z_dim` "
        "(e.g. 3) so that what a group shares has to go through beta"
    )


def beta_inactive_notice(run_dir: str, consequence: str) -> str | None:
    """One line when the run's last diagnostics (summary.json, written at the end of training) found
    beta inactive, saying what that means for a command's output (`consequence`); else None."""
    from ..files import read_json

    path = os.path.join(run_dir, "summary.json")
    try:
        summary = read_json(path, what="summary")
    except (OSError, ValueError):  # no summary yet, or one that cannot be read: nothing to say
        return None
    if not isinstance(summary, dict) or summary.get("beta_active_dims") != 0:
        return None
    return (
        "this run's beta was inactive at the end of training (no dim of E[beta|X] varied across its test "
        f"groups): {consequence}"
    )
