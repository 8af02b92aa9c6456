"""Group features: what a group of images is summarised by, for a trained guide and for the baselines
a global latent must beat (structured batches, group factors and domain alignment read them).

A group X = {x_1..x_B} is summarised by a Gaussian over a group feature (trained/inference.py
`group_code`):

    UG-VAE, ML-VAE   q(beta | X) = prod_i N(mu_i, Sigma_i)           eq. 8-9
    VAE, GMVAE       mean_i z_i with z_i ~ q(z_i | x_i) independent:
                     N(mean_i mu_i, sum_i Sigma_i / B^2)              (no global latent)
    untrained guide  the same for a freshly initialised guide of the run's architecture
    PCA baseline     the group's mean image projected on the first beta_dim principal axes
                     (deterministic: one point per group)
    local codes      the group mean of the run's own local codes [E q(z|x), pi(z)],
                     projected on its first beta_dim principal axes: what a global latent
                     must beat to be more than an average of local ones

A feature source maps uint8 images (N, C, H, W), index groups (G, B) and is_train (G,) (the
groups a fitted projection may learn from) to loc, scale (G, D).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from sklearn.decomposition import PCA

from ..data import to_unit_float
from ..guide import Guide, build
from ..model import ModelConfig
from ..trained.inference import GroupCode, group_code


def encode_groups(guide: Guide, images: torch.Tensor, groups: torch.Tensor, chunk: int = 64) -> GroupCode:
    """The group code, loc and scale (G, D) on the CPU, of index groups (G, B) into uint8 images (N, C, H, W)."""
    device = next(guide.parameters()).device
    codes = [group_code(guide, to_unit_float(images[idx].to(device))) for idx in groups.split(chunk)]
    return GroupCode(
        torch.cat([c.loc for c in codes]).cpu(), torch.cat([c.scale for c in codes]).cpu(), codes[0].description
    )


FeatureSource = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def guide_features(guide: Guide) -> FeatureSource:
    return lambda images, groups, is_train: encode_groups(guide, images, groups)[:2]


def pca_features(dim: int) -> FeatureSource:
    """Group mean images on principal axes fitted on the training groups only; scale 0."""

    def features(images, groups, is_train):
        means = torch.cat([to_unit_float(images[idx]).mean(1).flatten(1) for idx in groups.split(64)]).numpy()
        pca = PCA(n_components=min(dim, int(is_train.sum()), means.shape[1]), random_state=0)
        pca.fit(means[is_train.numpy()])
        loc = torch.from_numpy(pca.transform(means)).float()
        return loc, torch.zeros_like(loc)

    return features


@torch.no_grad()
def group_local_codes(guide: Guide, images: torch.Tensor, groups: torch.Tensor, with_pi: bool = True) -> torch.Tensor:
    """Group means (G, D) of [z_loc, pi] (or z_loc alone) from the guide's local posterior."""
    device = next(guide.parameters()).device
    means = []
    for idx in groups.split(64):
        z_loc, _, pi = guide.local_posterior(to_unit_float(images[idx].to(device)))
        codes = torch.cat([z_loc, pi], -1) if with_pi and pi is not None else z_loc
        means.append(codes.mean(-2).cpu())
    return torch.cat(means)


def local_code_features(guide: Guide, dim: int) -> FeatureSource:
    """Group means of [z_loc, pi] on principal axes fitted on the training groups only; scale 0."""

    def features(images, groups, is_train):
        means = group_local_codes(guide, images, groups).numpy()
        pca = PCA(n_components=min(dim, int(is_train.sum()), means.shape[1]), random_state=0)
        pca.fit(means[is_train.numpy()])
        loc = torch.from_numpy(pca.transform(means)).float()
        return loc, torch.zeros_like(loc)

    return features


def untrained_guide(model_cfg: ModelConfig, model_name: str, guide_name: str | None, seed: int) -> Guide:
    """A freshly initialised guide of the run's architecture: what q(beta|X) gives before any training."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        _, guide = build(model_cfg, model_name, guide_name)
    return guide.eval()
