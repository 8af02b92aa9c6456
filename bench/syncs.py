"""Finding host-device syncs without a GPU.

On a GPU, `torch.cuda.set_sync_debug_mode("error")` fails at every sync. On a CPU nothing
syncs, but the same Python code would: a sync is the host reading a tensor's value (to
branch on it, print it or size an output by it). `host_reads_forbidden` makes every such
read on a Tensor raise `HostSyncError` inside its block, so a step that passes under it on
the CPU has no sync in its Python either. It cannot see a read done inside a C++ kernel
(`torch.where(cond)` with one argument, say); the CUDA mode can.
"""

from __future__ import annotations

import contextlib

import torch

# Tensor methods that hand a value, or a shape decided by values, to the host.
HOST_READS = (
    "__bool__",
    "__float__",
    "__int__",
    "__index__",
    "__complex__",
    "__array__",
    "item",
    "tolist",
    "numpy",
    "nonzero",
    "masked_select",
    "unique",
)


class HostSyncError(RuntimeError):
    """A tensor's value was read on the host where no sync is allowed."""


def _refuse(name: str):
    def read(self, *args, **kwargs):
        raise HostSyncError(f"Tensor.{name} reads a value on the host (a device sync on a GPU)")

    return read


@contextlib.contextmanager
def host_reads_forbidden():
    """Within the block, reading a tensor's value on the host raises HostSyncError."""
    saved = {name: torch.Tensor.__dict__.get(name) for name in HOST_READS}
    try:
        for name in HOST_READS:
            setattr(torch.Tensor, name, _refuse(name))
        yield
    finally:
        for name, method in saved.items():
            if method is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, method)
