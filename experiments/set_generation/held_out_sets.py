"""Held-out conditioning sets with a known answer, and new real images of the same source as the reference.

Two kinds, both drawn from a dataset's test split, so no image was trained on:

    factors   S sets of B images sharing a rotation angle and a contrast gain drawn per set
              (data/grouped.py's factors, as in `grouped:BASE`). Reference: M other images of
              the split with the set's factors.
    mix       S sets whose class shares p ~ Dirichlet(alpha) per set (alpha = 0: one class per
              set, e.g. a folder's sub-folders); a set holds round(p_c B) images of class c
              (largest remainders, data/sampling.py). Labels are read for evaluation
              only. The answer is the set's own shares (counts / B); the reference is M new
              images whose classes are drawn from p, none of them a member.

Sets are index tensors into the split's uint8 images, drawn from one seed, so every run and
baseline is scored on the same sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...data.grouped import FACTOR_NAMES, apply_factors, factor_groups
from ...data.imageset import ImageSet
from ...data.sampling import draw_groups, rounded_counts
from ...errors import DataError


@dataclass
class HeldOutSets:
    """S sets: members (S, B, C, H, W) and reference (S, M, C, H, W) uint8 images, and the answer.

    Shares are over class ids 0..C-1 (C = the dataset's classes), as a classifier predicts them."""

    members: torch.Tensor
    reference: torch.Tensor
    factors: torch.Tensor | None = None  # (S, F), kind "factors"
    shares: torch.Tensor | None = None  # (S, classes) the members' class shares, kind "mix"

    def __len__(self) -> int:
        return len(self.members)


def _others(pool: np.ndarray, taken: np.ndarray, count: int, rng) -> np.ndarray:
    """`count` images of `pool` outside `taken`, without replacement while there are enough."""
    rest = np.setdiff1d(pool, taken)
    if len(rest) == 0:
        rest = pool
    return rng.choice(rest, size=count, replace=count > len(rest))


def factor_sets(base: ImageSet, num_sets: int, size: int, reference: int, seed: int) -> HeldOutSets:
    """Sets of `size` images of `base` sharing factors drawn per set, and `reference` others each."""
    generator = torch.Generator().manual_seed(seed)
    members = draw_groups(torch.arange(len(base)), num_sets, size, generator)
    grouped = factor_groups(base, members, generator)
    factors = grouped.factors.view(num_sets, size, -1)[:, 0]
    rng = np.random.default_rng(seed)
    pool = np.arange(len(base))
    ref = np.stack([_others(pool, m.numpy(), reference, rng) for m in members])
    ref_images = apply_factors(base.images[torch.from_numpy(ref).flatten()], factors.repeat_interleave(reference, 0))
    return HeldOutSets(
        members=grouped.images.view(num_sets, size, *base.x_shape),
        reference=ref_images.view(num_sets, reference, *base.x_shape),
        factors=factors,
    )


def mix_sets(base: ImageSet, num_sets: int, size: int, reference: int, alpha: float, seed: int) -> HeldOutSets:
    """Sets of `size` labelled images with class shares ~ Dirichlet(alpha) (alpha 0: one class)."""
    if base.labels is None:
        raise DataError(f"{base.name} has no labels, so sets of known class mix cannot be drawn from it")
    labels = base.labels.numpy()
    num_classes = max(len(base.class_names), int(labels.max()) + 1)
    present = np.unique(labels)  # mixes are drawn over the classes the split holds
    pools = {c: np.flatnonzero(labels == c) for c in present}
    rng = np.random.default_rng(seed)
    p = np.zeros((num_sets, num_classes))
    if alpha == 0:
        p[np.arange(num_sets), rng.choice(present, size=num_sets)] = 1.0
    else:
        p[:, present] = rng.dirichlet(np.full(len(present), float(alpha)), size=num_sets)
    counts = rounded_counts(p, size).numpy()
    members, refs = [], []
    # The reference is drawn class by class; its order is shuffled by a stream of its own, so that
    # any prefix of it (the PNG's row) shows the mix, and the sets' draws stay as they were.
    order = np.random.default_rng([seed, 1])
    for s in range(num_sets):
        chosen = np.concatenate(
            [rng.choice(pools[c], k, replace=k > len(pools[c])) for c, k in enumerate(counts[s]) if k]
        )
        drawn = rng.multinomial(reference, p[s])
        ref = np.concatenate([_others(pools[c], chosen, k, rng) for c, k in enumerate(drawn) if k])
        members.append(rng.permutation(chosen))
        refs.append(order.permutation(ref))
    members, refs = torch.from_numpy(np.stack(members)), torch.from_numpy(np.stack(refs))
    return HeldOutSets(
        members=base.images[members],
        reference=base.images[refs],
        shares=torch.from_numpy(counts / size).float(),
    )


FACTORS = list(FACTOR_NAMES)
