"""How many threads torch computes with on a CPU: the `threads` setting's default, and its use.

torch splits an operation over its intra-op threads (OpenMP), which wait for each other at the
end of every operation. A training step here is hundreds of small operations, so a second thread
gains little on a quiet machine and loses much on a busy one, where a thread that waits for a
descheduled partner waits out the other processes' time slices. Measured with `python -m
bench.threads` on 2 cores (README, Speed): one default MNIST step (B = 128) with 2 threads takes
0.79x (G = 1) and 0.69x (G = 16) the time of 1 thread on a quiet machine, but 5.3x and 2.3x beside
4 busy processes; in a whole default run on the quiet machine 2 threads gained nothing (9.9 ms a
step against 9.4).

So `threads` left unset (None) means 1, or OMP_NUM_THREADS when the environment sets it; the same
count serves every command (training, evaluate, embed, sample, the experiments). Processes of one
node under DDP divide it. On a quiet machine with many cores and large G, `--threads` raises it.

    default_threads(processes)  what `threads` None means for each of `processes` on this node
    using_threads(threads)      torch.set_num_threads for a block, the previous count restored after
"""

from __future__ import annotations

import contextlib
import os

import torch

from ..errors import ConfigError
from ..settings import shown

MAX_THREADS = 4096
DEFAULT_IS = "1, or OMP_NUM_THREADS when set"


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def requested_threads() -> int | None:
    """OMP_NUM_THREADS as a count, where it is set to one: the environment's own choice."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and 0 < int(value) <= MAX_THREADS else None


def default_threads(processes: int = 1) -> int:
    """What `threads` None means for each of `processes` processes on this node."""
    requested = requested_threads()
    if requested is not None:
        return max(1, requested // max(processes, 1))
    return 1


def resolve_threads(threads: int | None, processes: int = 1) -> int:
    """`threads`, or the default where it is None; a ConfigError for a count that is none."""
    if threads is None:
        return default_threads(processes)
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise ConfigError(f"`threads` must be a whole number from 1 to {MAX_THREADS}, got {shown(threads)}")
    return threads


@contextlib.contextmanager
def using_threads(threads: int | None, processes: int = 1):
    """Within the block torch computes with `threads` (None: `default_threads`); yields the count."""
    count, before = resolve_threads(threads, processes), torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(before)
