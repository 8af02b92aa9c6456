"""Groups of sample indices: every sampler of training groups, and the fixed test groups.

Two rules hold everywhere a group is formed:

    draw           indices come from fresh permutations of their pool, one after another, so
                   none repeats until the pool is used up; a group that straddles two
                   permutations never holds an index twice while the pool is at least as
                   large as the group (`draw`)
    rounding       shares p of a group of B become whole counts by largest remainder:
                   floor(p_k B) each, plus one for the largest remainders, so the counts sum
                   to B and each is within 1 of p_k B (`rounded_counts`)

Training samplers yield (groups_per_step, group_size) index tensors per step, reproducible per
(seed, epoch); which one a run gets is chosen by its `groups` spec (which to choose, and why:
docs/howto/objective.md):

    random           a permutation per epoch (RandomGroups); on an A+B mixture every group
                     holds a share of A: a fixed float `mix` (MixedGroups), or `mix` beta:A for
                     a share s_g ~ Beta(A, A) drawn per group (BetaMixedGroups)
    labels:ALPHA     class proportions p_g ~ Dirichlet(ALPHA) per group over the dataset's
                     labels (folder:PATH: its sub-folders); ALPHA=0 puts one class in a group
    clusters:ALPHA   the same over cluster assignments that the trainer supplies with
                     `set_assignments` (the model's argmax q(d|z)); random groups until then
                     and during the first `warmup` epochs (ClusterGroups)
    (grouped data)   a dataset with fixed groups (data/grouped.py) trains on them: members
                     and group order are shuffled per epoch (OwnGroups)

A sampler's `state_dict()` holds what a checkpoint must keep (ClusterGroups: the assignments);
`load_state_dict` restores it, so a resumed sampler continues exactly like the original.

Fixed groups for evaluation: `seeded_partition` (a seeded partition of the test split) and
`own_groups` (a grouped dataset's own groups). The groups experiments draw, by class rule or by
attribute, are in experiment_groups.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ..errors import DataError
from ..settings import shown
from .imageset import ImageSet

GROUP_KINDS = ("random", "labels", "clusters")
# A Dirichlet or Beta concentration: 10**6 already means equal shares; numpy's draws fail near 1e308.
MAX_ALPHA = 1e6
MAX_SPEC = 64  # characters of a `groups` or `mix` spec


# -- the draw and the rounding ---------------------------------------------------------------


def draw(pool: torch.Tensor, counts, generator: torch.Generator) -> torch.Tensor:
    """sum(counts) indices of `pool` (flat): counts[g] for group g, group after group (see the module docstring)."""
    counts = torch.as_tensor(counts, dtype=torch.long).flatten()
    total, n = int(counts.sum()), len(pool)
    if total == 0:
        return torch.empty(0, dtype=torch.long)
    if n == 0:
        raise DataError(f"{total} samples were asked of an empty pool; choose classes that have samples")
    ends = counts.cumsum(0)
    perms, drawn = [], 0
    while drawn < total:
        perm = pool[torch.randperm(n, generator=generator)]
        if perms:
            g = int(torch.searchsorted(ends, drawn, right=True))  # the group under way at the seam
            taken = drawn - int(ends[g] - counts[g])
            if taken > 0 and int(counts[g]) <= n:
                # Its members drawn so far go to the back of this pass, out of its reach.
                clash = torch.isin(perm, perms[-1][n - taken :])
                perm = torch.cat([perm[~clash], perm[clash]])
        perms.append(perm)
        drawn += n
    return torch.cat(perms)[:total]


def draw_groups(pool: torch.Tensor, num_groups: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """(num_groups, size) indices of `pool` by `draw`."""
    return draw(pool, torch.full((num_groups,), size), generator).view(num_groups, size)


def rounded_counts(shares, total: int) -> torch.Tensor:
    """Whole counts (..., C) summing to `total` along the last axis, by largest remainder."""
    shares = torch.as_tensor(shares, dtype=torch.float64)
    exact = shares / shares.sum(-1, keepdim=True) * total
    counts = exact.floor().long()
    short = total - counts.sum(-1, keepdim=True)
    # Ties go to the earlier class, so a 0.5 share of an odd B rounds up for the first one.
    order = (exact - counts).argsort(dim=-1, descending=True, stable=True)
    return counts + (order.argsort(dim=-1, stable=True) < short)


def compose(pools: Sequence[torch.Tensor], counts: torch.Tensor, generator, shuffle: bool = True) -> torch.Tensor:
    """Groups (G, B) whose g-th holds counts[g, c] members of pools[c], each pool drawn by `draw`;
    members sit pool after pool, or in shuffled positions with `shuffle`."""
    num_groups, size = len(counts), int(counts[0].sum())
    members = torch.cat([draw(pool, counts[:, c], generator) for c, pool in enumerate(pools)])
    group_of = torch.cat([torch.arange(num_groups).repeat_interleave(counts[:, c]) for c in range(len(pools))])
    groups = members[group_of.sort(stable=True).indices].view(num_groups, size)
    if shuffle:
        groups = groups.gather(-1, torch.rand(groups.shape, generator=generator).argsort(dim=-1))
    return groups


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # SeedSequence mixes (seed, epoch) so neighbouring seeds and epochs give unrelated streams.
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def check_positive(**values: int) -> None:
    for what, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise DataError(f"`{what}` is {value!r}; it must be a positive whole number")


# -- training samplers -----------------------------------------------------------------------


class Sampler:
    """Base of the training samplers: the groups of every step of an epoch, reproducible per
    (seed, epoch), with a ``state_dict`` that checkpoints save so that a resumed run is exact.

    Subclasses fill ``_epoch_indices`` with indices shaped (steps, G, B) on the CPU.
    """

    # True for a sampler that groups by the model's own clusters (the trainer then calls set_assignments).
    reads_assignments = False
    assignments: torch.Tensor | None = None

    def __init__(self, n: int, group_size: int, groups_per_step: int, seed: int, device):
        check_positive(group_size=group_size, groups_per_step=groups_per_step)
        if not isinstance(seed, int) or seed < 0:
            raise DataError(f"`seed` is {seed!r}; it must be a whole number >= 0")
        self.n, self.group_size, self.groups_per_step = n, group_size, groups_per_step
        self.seed, self.device = seed, torch.device(device)
        self.steps_per_epoch = n // (group_size * groups_per_step)
        if self.steps_per_epoch <= 0:
            raise DataError(
                f"the dataset of {n} samples is smaller than one step of {groups_per_step}x{group_size} groups; "
                "lower `group_size` or `groups_per_step`"
            )

    def __len__(self) -> int:
        return self.steps_per_epoch

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[torch.Tensor]:
        """Steps of `epoch`; start_step skips the first ones, so a resumed run sees what it would have seen."""
        if not isinstance(epoch, int) or epoch < 0:
            raise DataError(f"epoch is {epoch!r}; epochs are counted from 0")
        if not 0 <= start_step <= self.steps_per_epoch:
            raise DataError(
                f"start_step {start_step} is outside 0..{self.steps_per_epoch}; resume from a step in this epoch"
            )
        # One transfer per epoch; each step is then a view on the device.
        steps = self._epoch_indices(epoch_generator(self.seed, epoch)).to(self.device)
        for step in range(start_step, self.steps_per_epoch):
            yield steps[step]

    def state_dict(self) -> dict:
        """What a checkpoint keeps; the streams themselves follow from (seed, epoch)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        unknown = sorted(set(state) - set(self.state_dict()))
        if unknown:
            raise DataError(
                f"the saved sampler state holds {', '.join(unknown)}, which {type(self).__name__} does not keep; "
                "resume with the `groups` the run was started with"
            )

    def _epoch_indices(self, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


class RandomGroups(Sampler):
    """``groups="random"``: consecutive slices of one permutation per epoch, so no image repeats
    within an epoch; the remainder is dropped."""

    def __init__(self, n: int, group_size: int, groups_per_step: int = 1, seed: int = 0, device="cpu"):
        super().__init__(n, group_size, groups_per_step, seed, device)

    def _epoch_indices(self, generator):
        used = self.steps_per_epoch * self.groups_per_step * self.group_size
        order = draw(torch.arange(self.n), [used], generator)
        return order.view(self.steps_per_epoch, self.groups_per_step, self.group_size)


class ComposedGroups(Sampler):
    """Groups of given class proportions: subclasses draw the proportions (num_groups, C) per epoch, and
    each class's members are drawn by `draw`, so no index repeats until its class is used up."""

    def __init__(self, labels: torch.Tensor, group_size, groups_per_step, seed, device, classes=None):
        super().__init__(len(labels), group_size, groups_per_step, seed, device)
        self.labels, self.classes = labels.cpu().long(), classes

    def _epoch_indices(self, generator):
        # numpy draws Dirichlet and Beta laws; its stream is seeded from the epoch's generator.
        rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
        classes = self.classes if self.classes is not None else self.labels.unique().tolist()
        num_groups = self.steps_per_epoch * self.groups_per_step
        counts = rounded_counts(self._proportions(rng, num_groups, len(classes)), self.group_size)
        pools = [torch.nonzero(self.labels == c).flatten() for c in classes]
        groups = compose(pools, counts, generator)
        return groups.view(self.steps_per_epoch, self.groups_per_step, self.group_size)

    def _proportions(self, rng, num_groups: int, num_classes: int) -> np.ndarray:
        raise NotImplementedError


class MixedGroups(ComposedGroups):
    """An ``A+B`` mixture whose every group holds a share `mix` of domain 0 (A), rounded, in
    shuffled positions."""

    def __init__(self, domains: torch.Tensor, group_size, groups_per_step=1, mix=0.5, seed=0, device="cpu"):
        if domains.dim() != 1 or not bool(((domains == 0) | (domains == 1)).all()):
            raise DataError("MixedGroups needs a 1-D tensor of domain labels 0 and 1; load two datasets as 'A+B'")
        if not 0.0 <= mix <= 1.0:
            raise DataError(f"`mix` {mix} is outside [0, 1]; give the fraction of each group drawn from domain 0")
        super().__init__(domains, group_size, groups_per_step, seed, device, classes=[0, 1])
        self.mix = float(mix)
        self.count_0 = int(rounded_counts([self.mix, 1 - self.mix], group_size)[0])
        for d, need in ((0, self.count_0), (1, group_size - self.count_0)):
            if need and not bool((self.labels == d).any()):
                raise DataError(
                    f"`mix` {mix} needs samples of domain {d} but there are none; change `mix` or the datasets"
                )

    def _proportions(self, rng, num_groups, num_classes):
        return np.tile([self.mix, 1 - self.mix], (num_groups, 1))


class BetaMixedGroups(ComposedGroups):
    """An A+B mixture whose groups hold a share s ~ Beta(a, a) of domain A, drawn per group."""

    def __init__(self, domains, group_size, groups_per_step=1, a=1.0, seed=0, device="cpu"):
        if not (a > 0 and math.isfinite(a)):
            raise DataError(f"`mix` beta:{a} needs a finite a > 0, e.g. beta:0.5")
        if set(domains.unique().tolist()) != {0, 1}:
            raise DataError("`mix` beta:A needs a mixture of two datasets, loaded as 'A+B'")
        super().__init__(domains, group_size, groups_per_step, seed, device, classes=[0, 1])
        self.a = float(a)

    def _proportions(self, rng, num_groups, num_classes):
        share = rng.beta(self.a, self.a, size=num_groups)
        return np.stack([share, 1 - share], -1)


class DirichletGroups(ComposedGroups):
    """labels:ALPHA: proportions ~ Dirichlet(ALPHA) over the classes; ALPHA=0 picks one class."""

    def __init__(self, labels, group_size, groups_per_step=1, alpha=1.0, seed=0, device="cpu"):
        if not (alpha >= 0 and math.isfinite(alpha)):
            raise DataError(f"Dirichlet ALPHA is {alpha}; it must be a finite number >= 0 (0: one class per group)")
        super().__init__(labels, group_size, groups_per_step, seed, device)
        self.alpha = float(alpha)

    def _proportions(self, rng, num_groups, num_classes):
        if self.alpha == 0:
            return np.eye(num_classes)[rng.integers(num_classes, size=num_groups)]
        return rng.dirichlet(np.full(num_classes, self.alpha), size=num_groups)


class ClusterGroups(DirichletGroups):
    """``groups="clusters:ALPHA"``: random groups for `warmup` epochs, then groups whose shares of
    the model's own clusters (argmax q(d | z), set by the trainer after each epoch) ~ Dirichlet(ALPHA)."""

    reads_assignments = True

    def __init__(self, n, group_size, groups_per_step=1, alpha=1.0, warmup=0, seed=0, device="cpu"):
        super().__init__(torch.zeros(n, dtype=torch.long), group_size, groups_per_step, alpha, seed, device)
        self.warmup, self.assignments = warmup, None
        self.random = RandomGroups(n, group_size, groups_per_step, seed, device)

    def set_assignments(self, assignments: torch.Tensor | None):
        """Cluster of each training sample (N,), or None for random groups."""
        if assignments is not None and tuple(assignments.shape) != (self.n,):
            raise DataError(f"{tuple(assignments.shape)} assignments for {self.n} training samples")
        self.assignments = None if assignments is None else assignments.cpu().long()
        if self.assignments is not None:
            self.labels = self.assignments

    def state_dict(self) -> dict:
        return {"assignments": self.assignments}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.set_assignments(state.get("assignments"))

    def epoch(self, epoch: int, start_step: int = 0):
        if epoch < self.warmup or self.assignments is None:
            return self.random.epoch(epoch, start_step)
        return super().epoch(epoch, start_step)


class OwnGroups(Sampler):
    """A grouped dataset's own groups: each is cut into chunks of B after shuffling its members."""

    def __init__(self, groups: torch.Tensor, group_size, groups_per_step=1, seed=0, device="cpu"):
        check_positive(group_size=group_size)
        self.members = [torch.nonzero(groups.cpu() == g).flatten() for g in groups.unique().tolist()]
        largest = max(len(m) for m in self.members)
        if largest < group_size:
            raise DataError(
                f"the dataset's groups hold at most {largest} samples, fewer than `group_size` {group_size}"
            )
        self.chunks = sum(len(m) // group_size for m in self.members)
        super().__init__(self.chunks * group_size, group_size, groups_per_step, seed, device)

    def _epoch_indices(self, generator):
        B = self.group_size
        chunks = torch.cat([draw(m, [len(m)], generator)[: len(m) // B * B].view(-1, B) for m in self.members])
        order = draw(torch.arange(len(chunks)), [self.steps_per_epoch * self.groups_per_step], generator)
        return chunks[order].view(self.steps_per_epoch, self.groups_per_step, B)


def parse_spec(spec: str) -> tuple[str, float | None]:
    """Read a training group spec (the ``groups`` field).

    Parameters
    ----------
    spec : str
        ``random``, ``labels:ALPHA`` or ``clusters:ALPHA``.

    Examples
    --------
    >>> parse_spec("random"), parse_spec("labels:0.3")
    (('random', None), ('labels', 0.3))

    Raises
    ------
    DataError
        Anything but ``random``, ``labels:ALPHA`` or ``clusters:ALPHA`` with 0 <= ALPHA <= 10**6.
    """
    kind, has_alpha, alpha = spec.partition(":") if isinstance(spec, str) and len(spec) <= MAX_SPEC else ("", "", "")
    if kind not in GROUP_KINDS or (kind == "random") == bool(has_alpha):
        raise DataError(f"`groups` {shown(spec)} is unknown; write random, labels:ALPHA or clusters:ALPHA")
    if kind == "random":
        return kind, None
    value = as_number(alpha)
    if not 0 <= value <= MAX_ALPHA:  # also false for NaN
        raise DataError(f"`groups` {shown(spec)}: ALPHA must be a number from 0 to {MAX_ALPHA:g}, e.g. {kind}:0.3")
    return kind, value


def parse_mix(mix: float | str) -> tuple[str, float]:
    """Read the ``mix`` field of an ``A+B`` dataset: ``('share', s)`` for a fixed share of A in every
    group, ``('beta', a)`` for a share ~ Beta(a, a) drawn per group.

    Parameters
    ----------
    mix : float or str
        A share in [0, 1], or ``beta:A``.

    Examples
    --------
    >>> parse_mix(0.5), parse_mix("beta:0.5")
    (('share', 0.5), ('beta', 0.5))

    Raises
    ------
    DataError
        A share outside [0, 1], or ``beta:A`` without 0 < A <= 10**6.
    """
    if isinstance(mix, str) and mix.startswith("beta:"):
        a = as_number(mix[5:])
        if not 0 < a <= MAX_ALPHA:
            raise DataError(f"`mix` {shown(mix)}: write beta:A with 0 < A <= {MAX_ALPHA:g}, e.g. beta:0.5")
        return "beta", a
    share = as_number(mix)
    if not 0.0 <= share <= 1.0:
        raise DataError(f"`mix` must be a share in [0, 1] or beta:A, got {shown(mix)}")
    return "share", share


def as_number(value) -> float:
    """`value` (a number, or its text) as a float; NaN for anything else, and for text longer than
    MAX_SPEC or an int that no float holds, which are never converted."""
    if isinstance(value, str):
        try:
            return float(value) if len(value) <= MAX_SPEC else math.nan
        except ValueError:
            return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value) if not isinstance(value, int) or value.bit_length() <= 1023 else math.nan


def training_groups(
    spec: str,
    train_set: ImageSet,
    group_size: int,
    groups_per_step: int,
    seed: int,
    device="cpu",
    mix: float | str = 0.5,
    warmup: int = 0,
) -> Sampler:
    """The sampler of training groups for a group spec.

    Parameters
    ----------
    spec : str
        ``random``, ``labels:ALPHA`` or ``clusters:ALPHA`` (:func:`parse_spec`).
    train_set : ImageSet
        The training split; a ``grouped:`` set trains on its own groups, an ``A+B`` set on groups of
        a share `mix` of A.
    group_size, groups_per_step : int
        B and G.
    seed : int
        Every epoch's groups are a function of (seed, epoch).
    device : str or torch.device, default "cpu"
        Where the indices go.
    mix : float or str, default 0.5
        The share of A of an ``A+B`` set (:func:`parse_mix`).
    warmup : int, default 0
        Epochs of random groups before ``clusters:ALPHA``.

    Returns
    -------
    Sampler

    Raises
    ------
    DataError
        ``labels:`` on data without labels, a group spec on ``grouped:`` data, a malformed spec.
    """
    kind, alpha = parse_spec(spec)
    if train_set.groups is not None:
        if kind != "random":
            raise DataError(f"{train_set.name} trains on its own fixed groups; set `groups` to random")
        return OwnGroups(train_set.groups, group_size, groups_per_step, seed, device)
    if kind == "labels":
        if train_set.labels is None:
            raise DataError(f"`groups` {spec} needs labels, and {train_set.name} has none (folder: use sub-folders)")
        return DirichletGroups(train_set.labels, group_size, groups_per_step, alpha, seed, device)
    if kind == "clusters":
        return ClusterGroups(len(train_set), group_size, groups_per_step, alpha, warmup, seed, device)
    if train_set.domains is not None:
        law, value = parse_mix(mix)
        if law == "beta":
            return BetaMixedGroups(train_set.domains, group_size, groups_per_step, value, seed, device)
        return MixedGroups(train_set.domains, group_size, groups_per_step, value, seed, device)
    return RandomGroups(len(train_set), group_size, groups_per_step, seed, device)


# -- fixed groups for evaluation -------------------------------------------------------------


def seeded_partition(n: int, group_size: int, seed: int = 0) -> torch.Tensor:
    """A fixed random partition of `n` images into groups: the test groups every run is scored on.

    Parameters
    ----------
    n : int
        How many images.
    group_size : int
        B.
    seed : int, default 0
        The same seed gives the same groups, so runs on the same data are scored on the same groups.

    Returns
    -------
    torch.Tensor
        Indices (n // B, B); the remainder is dropped.

    Raises
    ------
    DataError
        Fewer than B images.
    """
    usable = n // group_size * group_size
    if usable == 0:
        raise DataError(f"the test split has {n} samples, fewer than one group of {group_size}; lower `group_size`")
    return draw(torch.arange(n), [usable], torch.Generator().manual_seed(seed)).view(-1, group_size)


def own_groups(data: ImageSet, group_size: int) -> torch.Tensor | None:
    """The groups of a ``grouped:`` dataset cut into chunks of B, in a fixed order.

    Parameters
    ----------
    data : ImageSet
        A split; only ``grouped:`` data has groups of its own.
    group_size : int
        B.

    Returns
    -------
    torch.Tensor or None
        Indices (G, B); None for any other data.
    """
    if data.groups is None:
        return None
    return OwnGroups(data.groups, group_size)._epoch_indices(torch.Generator().manual_seed(0)).flatten(0, 1)
