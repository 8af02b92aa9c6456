"""The classifiers of structured batches: does a group feature tell the rule behind a group?

Linear and RBF SVMs, on standardised features so that sources of different scales are
treated alike, are trained on samples of the group posteriors (experiments/group_features.py)
and scored on samples from held-out groups. The split is by group, never by sample: samples of
one group are correlated, so a split by sample would let a classifier recognise groups
instead of classes.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

from ...errors import ConfigError

CLASSIFIERS = {
    "linear SVM": lambda seed: LinearSVC(C=1.0, max_iter=10_000, random_state=seed),
    "RBF SVM": lambda seed: SVC(kernel="rbf", C=1.0, gamma="scale", random_state=seed),
}


def posterior_samples(loc: torch.Tensor, scale: torch.Tensor, num_samples: int, seed: int) -> torch.Tensor:
    """(G, S, D) draws from N(loc, scale^2) for each group."""
    noise = torch.randn((num_samples,) + loc.shape, generator=torch.Generator().manual_seed(seed))
    return (loc + scale * noise).transpose(0, 1)


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
