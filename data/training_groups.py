"""Training groups with structure, chosen by a spec string, reproducible per (seed, epoch).

On random groups the data law of a group is a product, so the likelihood ignores beta. These
samplers give training groups something to share (see SCIENCE_NOTES):

    random           a permutation per epoch (RandomGroups); on an A+B mixture every group
                     holds a share of A: a fixed float --mix, or --mix beta:A for a share
                     s_g ~ Beta(A, A) drawn per group
    labels:ALPHA     class proportions p_g ~ Dirichlet(ALPHA) per group over the dataset's
                     labels (folder:PATH: its sub-folders); ALPHA=0 puts one class in a group
    clusters:ALPHA   the same over cluster assignments that the trainer supplies with
                     `set_assignments` (the model's argmax q(d|z)); random groups until then
                     and during the first `warmup` epochs
    (grouped data)   a dataset with fixed groups (data/grouped.py) trains on them: members
                     and group order are shuffled per epoch

A group of B with proportions p holds floor(p_k B) members of class k, the remaining members
going to the largest remainders, so shares are exact up to rounding. Each class is drawn
from fresh permutations of its members in turn, so no index repeats until its class is used up.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import DataError
from .groups import MixedGroups, RandomGroups, _Steps, check_positive
from .imageset import ImageSet

GROUP_KINDS = ("random", "labels", "clusters")


class _Composed(_Steps):
    """Groups of given class proportions; subclasses draw the proportions (num_groups, C)."""

    def __init__(self, labels: torch.Tensor, group_size: int, groups_per_step: int, seed: int, device):
        super().__init__(len(labels), group_size, groups_per_step, seed, device)
        self.labels = labels.cpu().long()

    def _epoch_indices(self, generator):
        # numpy draws Dirichlet and Beta laws; its stream is seeded from the epoch's generator.
        rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
        classes, labels = np.unique(self.labels.numpy(), return_inverse=True)
        num_groups = self.steps_per_epoch * self.groups_per_step
        counts = rounded_counts(self._proportions(rng, num_groups, len(classes)), self.group_size)
        streams = [ClassStream(np.flatnonzero(labels == c), rng) for c in range(len(classes))]
        groups = np.empty((num_groups, self.group_size), dtype=np.int64)
        for g, row in enumerate(counts):
            members = np.concatenate([streams[c].take(k) for c, k in enumerate(row) if k])
            groups[g] = rng.permutation(members)
        return torch.from_numpy(groups).view(self.steps_per_epoch, self.groups_per_step, self.group_size)

    def _proportions(self, rng, num_groups: int, num_classes: int) -> np.ndarray:
        raise NotImplementedError


class DirichletGroups(_Composed):
    """labels:ALPHA: proportions ~ Dirichlet(ALPHA) over the classes; ALPHA=0 picks one class."""

    def __init__(self, labels, group_size, groups_per_step=1, alpha=1.0, seed=0, device="cpu"):
        if not alpha >= 0:
            raise DataError(f"Dirichlet ALPHA is {alpha}; it must be >= 0 (0: one class per group)")
        super().__init__(labels, group_size, groups_per_step, seed, device)
        self.alpha = float(alpha)

    def _proportions(self, rng, num_groups, num_classes):
        if self.alpha == 0:
            return np.eye(num_classes)[rng.integers(num_classes, size=num_groups)]
        return rng.dirichlet(np.full(num_classes, self.alpha), size=num_groups)


class BetaMixedGroups(_Composed):
    """An A+B mixture whose groups hold a share s ~ Beta(a, a) of domain A, drawn per group."""

    def __init__(self, domains, group_size, groups_per_step=1, a=1.0, seed=0, device="cpu"):
        if not a > 0:
            raise DataError(f"--mix beta:{a} needs a > 0")
        if set(domains.unique().tolist()) != {0, 1}:
            raise DataError("--mix beta:A needs a mixture of two datasets, loaded as 'A+B'")
        super().__init__(domains, group_size, groups_per_step, seed, device)
        self.a = float(a)

    def _proportions(self, rng, num_groups, num_classes):
        share = rng.beta(self.a, self.a, size=num_groups)
        return np.stack([share, 1 - share], -1)


class ClusterGroups(DirichletGroups):
    """clusters:ALPHA: Dirichlet groups over assignments set by the trainer after `warmup` epochs."""

    reads_assignments = True

    def __init__(self, n, group_size, groups_per_step=1, alpha=1.0, warmup=0, seed=0, device="cpu"):
        super().__init__(torch.zeros(n, dtype=torch.long), group_size, groups_per_step, alpha, seed, device)
        self.warmup, self.assignments = warmup, None
        self.random = RandomGroups(n, group_size, groups_per_step, seed, device)

    def set_assignments(self, assignments: torch.Tensor | None):
        """Cluster of each training sample (N,), or None for random groups."""
        if assignments is not None and assignments.shape != (self.n,):
            raise DataError(f"{tuple(assignments.shape)} assignments for {self.n} training samples")
        self.assignments = None if assignments is None else assignments.cpu().long()
        if self.assignments is not None:
            self.labels = self.assignments

    def epoch(self, epoch: int, start_step: int = 0):
        if epoch < self.warmup or self.assignments is None:
            return self.random.epoch(epoch, start_step)
        return super().epoch(epoch, start_step)


class FixedGroups(_Steps):
    """A grouped dataset's own groups: each is split into chunks of B after shuffling its members."""

    def __init__(self, groups: torch.Tensor, group_size, groups_per_step=1, seed=0, device="cpu"):
        check_positive(group_size=group_size)
        self.members = [torch.nonzero(groups.cpu() == g).flatten() for g in groups.unique().tolist()]
        if max(len(m) for m in self.members) < group_size:
            raise DataError(
                f"the dataset's groups hold at most {max(len(m) for m in self.members)} samples, "
                f"fewer than --group-size {group_size}"
            )
        self.chunks = sum(len(m) // group_size for m in self.members)
        super().__init__(self.chunks * group_size, group_size, groups_per_step, seed, device)

    def _epoch_indices(self, generator):
        chunks = [
            chunk
            for m in self.members
            for chunk in m[torch.randperm(len(m), generator=generator)].split(self.group_size)
            if len(chunk) == self.group_size
        ]
        order = torch.randperm(len(chunks), generator=generator)[: self.steps_per_epoch * self.groups_per_step]
        return torch.stack([chunks[i] for i in order.tolist()]).view(
            self.steps_per_epoch, self.groups_per_step, self.group_size
        )


class ClassStream:
    """Indices of one class, served from fresh permutations one after another."""

    def __init__(self, pool: np.ndarray, rng):
        self.pool, self.rng, self.queue = pool, rng, np.empty(0, dtype=np.int64)

    def take(self, k: int) -> np.ndarray:
        while len(self.queue) < k:
            self.queue = np.concatenate([self.queue, self.rng.permutation(self.pool)])
        out, self.queue = self.queue[:k], self.queue[k:]
        return out


def rounded_counts(proportions: np.ndarray, total: int) -> np.ndarray:
    """Whole counts (G, C) summing to `total` per row: floors, plus one for the largest remainders."""
    exact = proportions * total
    counts = np.floor(exact).astype(np.int64)
    short = total - counts.sum(-1)
    order = np.argsort(-(exact - counts), axis=-1, kind="stable")
    ranks = np.argsort(order, axis=-1, kind="stable")
    return counts + (ranks < short[:, None])


def parse_spec(spec: str) -> tuple[str, float | None]:
    """'random' -> ('random', None); 'labels:0.3' -> ('labels', 0.3)."""
    kind, has_alpha, alpha = spec.partition(":")
    if kind not in GROUP_KINDS or (kind == "random") == bool(has_alpha):
        raise DataError(f"--groups {spec!r} is unknown; write random, labels:ALPHA or clusters:ALPHA")
    if kind == "random":
        return kind, None
    try:
        value = float(alpha)
    except ValueError:
        raise DataError(f"--groups {spec!r}: ALPHA must be a number >= 0, e.g. {kind}:0.3") from None
    if not value >= 0:
        raise DataError(f"--groups {spec!r}: ALPHA must be >= 0")
    return kind, value


def parse_mix(mix: float | str) -> tuple[str, float]:
    """--mix as ('share', s) for a fixed share or ('beta', a) for shares ~ Beta(a, a)."""
    text = str(mix)
    if text.startswith("beta:"):
        try:
            a = float(text[5:])
        except ValueError:
            a = -1.0
        if not a > 0:
            raise DataError(f"--mix {text!r}: write beta:A with A > 0, e.g. beta:0.5")
        return "beta", a
    try:
        share = float(text)
    except ValueError:
        raise DataError(f"--mix {text!r} is neither a share in [0, 1] nor beta:A") from None
    if not 0.0 <= share <= 1.0:
        raise DataError(f"--mix must be in [0, 1], got {share}")
    return "share", share


def training_groups(
    spec: str,
    train_set: ImageSet,
    group_size: int,
    groups_per_step: int,
    seed: int,
    device="cpu",
    mix: float | str = 0.5,
    warmup: int = 0,
):
    """The sampler of training groups for `spec` (see the module docstring)."""
    kind, alpha = parse_spec(spec)
    if train_set.groups is not None:
        if kind != "random":
            raise DataError(f"{train_set.name} trains on its own fixed groups; drop --groups {spec}")
        return FixedGroups(train_set.groups, group_size, groups_per_step, seed, device)
    if kind == "labels":
        if train_set.labels is None:
            raise DataError(f"--groups {spec} needs labels, and {train_set.name} has none (folder: use sub-folders)")
        return DirichletGroups(train_set.labels, group_size, groups_per_step, alpha, seed, device)
    if kind == "clusters":
        return ClusterGroups(len(train_set), group_size, groups_per_step, alpha, warmup, seed, device)
    if train_set.domains is not None:
        law, value = parse_mix(mix)
        if law == "beta":
            return BetaMixedGroups(train_set.domains, group_size, groups_per_step, value, seed, device)
        return MixedGroups(train_set.domains, group_size, groups_per_step, value, seed, device)
    return RandomGroups(len(train_set), group_size, groups_per_step, seed, device)


def own_groups(data: ImageSet, group_size: int) -> torch.Tensor | None:
    """A grouped dataset's groups cut to chunks of B (G, B) in a fixed order; None for other data."""
    if data.groups is None:
        return None
    return FixedGroups(data.groups, group_size)._epoch_indices(torch.Generator().manual_seed(0)).flatten(0, 1)
