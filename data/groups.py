"""Samplers that yield (groups_per_step, group_size) index tensors per step, reproducible per (seed, epoch)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ..errors import DataError


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # SeedSequence mixes (seed, epoch) so neighbouring seeds and epochs give unrelated streams.
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def check_positive(**values: int) -> None:
    for what, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise DataError(f"{what} is {value!r}; it must be a positive whole number")


class _Steps:
    """Shared epoch bookkeeping: subclasses fill `_epoch_indices` with (steps, G, B) on the CPU."""

    # True for a sampler that groups by the model's own clusters (the trainer then calls set_assignments).
    reads_assignments = False
    assignments: torch.Tensor | None = None

    def __init__(self, n: int, group_size: int, groups_per_step: int, seed: int, device):
        check_positive(group_size=group_size, groups_per_step=groups_per_step)
        if not isinstance(seed, int) or seed < 0:
            raise DataError(f"seed is {seed!r}; it must be a whole number >= 0")
        self.n, self.group_size, self.groups_per_step = n, group_size, groups_per_step
        self.seed, self.device = seed, torch.device(device)
        self.steps_per_epoch = n // (group_size * groups_per_step)
        if self.steps_per_epoch <= 0:
            raise DataError(
                f"the dataset of {n} samples is smaller than one step of {groups_per_step}x{group_size} groups; "
                "lower --group-size or --groups-per-step"
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

    def _epoch_indices(self, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


class RandomGroups(_Steps):
    """Consecutive slices of one permutation per epoch: no index repeats within an epoch; the remainder is dropped."""

    def __init__(self, n: int, group_size: int, groups_per_step: int = 1, seed: int = 0, device="cpu"):
        super().__init__(n, group_size, groups_per_step, seed, device)

    def _epoch_indices(self, generator):
        used = self.steps_per_epoch * self.groups_per_step * self.group_size
        order = torch.randperm(self.n, generator=generator)[:used]
        return order.view(self.steps_per_epoch, self.groups_per_step, self.group_size)


class MixedGroups(_Steps):
    """Every group holds round(mix * B) samples of domain 0 and the rest of domain 1, in shuffled positions.

    Each domain is drawn from a fresh permutation of its indices, so no index repeats until all of that
    domain has been used; a domain too small for the epoch is reshuffled and drawn again (so a group that
    straddles two passes may, rarely, hold one index twice).
    """

    def __init__(
        self,
        domains: torch.Tensor,
        group_size: int,
        groups_per_step: int = 1,
        mix: float = 0.5,
        seed: int = 0,
        device="cpu",
    ):
        if domains.dim() != 1 or not bool(((domains == 0) | (domains == 1)).all()):
            raise DataError("MixedGroups needs a 1-D tensor of domain labels 0 and 1; load two datasets as 'A+B'")
        if not 0.0 <= mix <= 1.0:
            raise DataError(f"mix {mix} is outside [0, 1]; pass the fraction of each group drawn from domain 0")
        super().__init__(len(domains), group_size, groups_per_step, seed, device)
        # Half-up rounding, not Python's banker's rounding, so mix=0.5 with odd B is predictable.
        self.count_0 = int(np.floor(mix * group_size + 0.5))
        self.pools = [torch.nonzero(domains.cpu() == d).flatten() for d in (0, 1)]
        for d, need in ((0, self.count_0), (1, group_size - self.count_0)):
            if need and not len(self.pools[d]):
                raise DataError(
                    f"mix {mix} needs samples of domain {d} but there are none; change --mix or the datasets"
                )

    def _epoch_indices(self, generator):
        shape = (self.steps_per_epoch, self.groups_per_step)
        parts = [
            draw_without_repeats(pool, shape, count, generator)
            for pool, count in zip(self.pools, (self.count_0, self.group_size - self.count_0))
        ]
        groups = torch.cat(parts, dim=-1)
        positions = torch.rand(groups.shape, generator=generator).argsort(dim=-1)
        return groups.gather(-1, positions)


def draw_without_repeats(pool: torch.Tensor, shape: tuple[int, int], count: int, generator) -> torch.Tensor:
    """(*shape, count) indices from `pool`, consuming fresh permutations of it one after another."""
    need = shape[0] * shape[1] * count
    if need == 0:
        return pool.new_empty((*shape, 0))
    rounds = -(-need // len(pool))
    stream = torch.cat([pool[torch.randperm(len(pool), generator=generator)] for _ in range(rounds)])
    return stream[:need].view(*shape, count)


def fixed_groups(n: int, group_size: int, seed: int = 0) -> torch.Tensor:
    """A fixed random partition of n test samples into groups (num_groups, B); the remainder is dropped."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    usable = n // group_size * group_size
    if usable == 0:
        raise DataError(f"the test split has {n} samples, fewer than one group of {group_size}; lower --group-size")
    return perm[:usable].view(-1, group_size)
