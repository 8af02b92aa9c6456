"""Scores of generated sets against their conditioning set and the real reference.

For a conditioning set X (B members), M generated images G and M reference images R (new real
images of the same source), all as flattened pixels in [0, 1] with Euclidean distance:

    class-mix TV   0.5 sum_c |h_c(G) - s_c(X)|: h the histogram of G's classes as read by a
                   classifier fit on real training images, s the members' class shares (lower
                   is better; the reference R scores what a new real set of the same mix gets)
    novelty        mean_g min_i |g - x_i| / mean_r min_i |r - x_i|: how far generated images lie
                   from their nearest member, against a new real image's; near 0 means copies
    diversity      mean pairwise |g - g'| within G / the same within R: near 0 means one image
                   repeated; a blurry generator also scores low
    factor R^2     a factor reader (readers.ImageFactorReader: an MLP on single images,
                   averaged over the set) predicts each set's factors from G; R^2 against the
                   set's true factors. Readers are fit on real images, on the run's
                   reconstructions, or on the generator's own sets of other held-out sets.

Novelty and diversity are ratios of means over all sets of a cell, so one odd set cannot
dominate them.
"""

from __future__ import annotations

import torch

from ..readers import flat


def class_mix_tv(predicted: torch.Tensor, shares: torch.Tensor) -> torch.Tensor:
    """Per set (S,): TV between the histogram of predicted classes (S, M) and the shares (S, C)."""
    histogram = torch.nn.functional.one_hot(predicted, shares.shape[1]).float().mean(1)
    return 0.5 * (histogram - shares).abs().sum(1)


def nearest_member_distance(images: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """(S, N): each image's distance to its nearest member of its set."""
    return torch.cdist(flat(images), flat(members)).min(-1).values


def pairwise_distance(images: torch.Tensor) -> torch.Tensor:
    """(S,): mean distance between two different images of each set."""
    x = flat(images)
    n = x.shape[1]
    return torch.cdist(x, x).sum((1, 2)) / (n * (n - 1))


def novelty(generated: torch.Tensor, members: torch.Tensor, reference: torch.Tensor) -> float:
    return float(
        nearest_member_distance(generated, members).mean() / nearest_member_distance(reference, members).mean()
    )


def diversity(generated: torch.Tensor, reference: torch.Tensor) -> float:
    return float(pairwise_distance(generated).mean() / pairwise_distance(reference).mean())


def mean_and_se(values: torch.Tensor) -> tuple[float, float]:
    """Mean and its standard error over sets."""
    values = values.double()
    se = values.std() / len(values) ** 0.5 if len(values) > 1 else torch.tensor(0.0)
    return float(values.mean()), float(se)
