"""Group features and the classifiers that read them (table 1 of the paper, with baselines).

A group X = {x_1..x_B} is summarised by a Gaussian over a group feature:

    UG-VAE, ML-VAE   q(beta | X) = prod_i N(mu_i, Sigma_i)           eq. 8-9 (global_posterior)
    VAE, GMVAE       mean_i z_i with z_i ~ q(z_i | x_i) independent:
                     N(mean_i mu_i, sum_i Sigma_i / B^2)              (no global latent)
    PCA baseline     the group's mean image projected on the first beta_dim principal axes
                     (deterministic: one point per group)
    local codes      the group mean of the run's own local codes [E q(z|x), pi(z)],
                     projected on its first beta_dim principal axes: what a global latent
                     must beat to be more than an average of local ones

Linear and RBF SVMs, on standardised features so that sources of different scales are
treated alike, are trained on samples of these posteriors and scored on samples from held-out
groups. The split is by group, never by sample: samples of one group are correlated, so a
split by sample would let a classifier recognise groups instead of classes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

from ...data import to_unit_float
from ...errors import ConfigError
from ...guide import Guide, build
from ...model import ModelConfig

CLASSIFIERS = {
    "linear SVM": lambda seed: LinearSVC(C=1.0, max_iter=10_000, random_state=seed),
    "RBF SVM": lambda seed: SVC(kernel="rbf", C=1.0, gamma="scale", random_state=seed),
}


@torch.no_grad()
def group_posterior(guide: Guide, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """loc, scale (G, D) of the group feature of x (G, B, C, H, W); see the module docstring."""
    if guide.has_global_latent:
        return guide.global_posterior(x)
    z_loc, z_scale, _ = guide.local_posterior(x)
    return z_loc.mean(-2), z_scale.pow(2).sum(-2).sqrt() / z_loc.shape[-2]


def encode_groups(
    guide: Guide, images: torch.Tensor, groups: torch.Tensor, chunk: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """loc, scale (G, D) for index groups (G, B) into uint8 images (N, C, H, W)."""
    device = next(guide.parameters()).device
    locs, scales = [], []
    for idx in groups.split(chunk):
        loc, scale = group_posterior(guide, to_unit_float(images[idx].to(device)))
        locs.append(loc.cpu())
        scales.append(scale.cpu())
    return torch.cat(locs), torch.cat(scales)


def posterior_samples(loc: torch.Tensor, scale: torch.Tensor, num_samples: int, seed: int) -> torch.Tensor:
    """(G, S, D) draws from N(loc, scale^2) for each group."""
    noise = torch.randn((num_samples,) + loc.shape, generator=torch.Generator().manual_seed(seed))
    return (loc + scale * noise).transpose(0, 1)


# A feature source maps uint8 images (N, C, H, W), index groups (G, B) and is_train (G,) (the
# groups a fitted projection may learn from) to loc, scale (G, D).
FeatureSource = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def guide_features(guide: Guide) -> FeatureSource:
    return lambda images, groups, is_train: encode_groups(guide, images, groups)


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


def svm_accuracies(features: torch.Tensor, labels: torch.Tensor, is_train: torch.Tensor, seed: int = 0) -> dict:
    """{classifier: {"train": acc, "test": acc}} for features (G, S, D), class labels (G,), split mask (G,).

    Every sample of a group inherits its label; accuracy is the share of samples classified right.
    """
    if is_train.all() or not is_train.any():
        raise ConfigError(f"the split of {len(is_train)} groups leaves no training or no test group; score more groups")
    S = features.shape[1]
    flat = features.reshape(-1, features.shape[-1]).numpy()
    y = labels.repeat_interleave(S).numpy()
    train = is_train.repeat_interleave(S).numpy()
    out = {}
    for name, make in CLASSIFIERS.items():
        classifier = make_pipeline(StandardScaler(), make(seed)).fit(flat[train], y[train])
        out[name] = {
            "train": float(np.mean(classifier.predict(flat[train]) == y[train])),
            "test": float(np.mean(classifier.predict(flat[~train]) == y[~train])),
        }
    return out
