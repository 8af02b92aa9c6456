"""A training step replayed as one CUDA graph: the same kernels as the eager step, none of its Python.

Capturing a whole step once -- gathering the batch from the resident uint8 images, the loss (the
sync-free ELBO of train/elbo.py, eq. 10-11), its backward pass and the optimiser update -- and
replaying the graph leaves one copy of the batch indices and one graph launch per step. Replay
draws the random numbers the eager step would draw (PyTorch hands the graph the generator's seed
and offset), so captured steps give the eager steps' losses, step by step.

Capture needs fixed shapes (drop the last partial batch), an optimiser built with
`capturable=True`, Pyro validation off (its checks read tensors on the host) and no other
host-device sync: TraceEnum_ELBO syncs in Dice (`mask.all()`) and in `warn_if_nan`, the
sync-free ELBO does not. A Python number made a device tensor (`torch.tensor(1.0, device="cuda")`)
is copied from the host, which capture forbids too; while capturing, a fill kernel makes it.
The last warm-up step runs under `torch.cuda.set_sync_debug_mode("error")`, so that a sync left
in a step fails there with a Python traceback, not inside capture (which leaves the CUDA
generator unusable).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pyro.infer.util import is_validation_enabled
from torch.overrides import TorchFunctionMode

from ..errors import GraphNeedsCUDA


class _ScalarsByFill(TorchFunctionMode):
    """`torch.tensor(number, device=cuda)` as `torch.full`: a kernel, not a host-to-device copy."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        device = kwargs.get("device")
        if (
            func is torch.tensor
            and len(args) == 1
            and isinstance(args[0], (int, float))
            and device is not None
            and torch.device(device).type == "cuda"
        ):
            return torch.full((), args[0], dtype=kwargs.get("dtype"), device=device)
        return func(*args, **kwargs)


class CapturedStep:
    """`step(*inputs) -> loss`, run eagerly for the first `warmup` calls, then captured and replayed.

    Every call is one real step on its own inputs, eager or replayed, so a run that captures
    follows the eager run. Capture waits for the first call after the warm-up, so whatever is
    loaded before it (a checkpoint's weights and Adam state) is what the graph reads. The
    returned loss tensor is overwritten by the next call: consume it (copy or add it) first.
    """

    def __init__(self, step: Callable[..., torch.Tensor], device: torch.device | str, warmup: int = 3):
        if torch.device(device).type != "cuda":
            raise GraphNeedsCUDA(
                f"a captured step needs a GPU, CUDA graphs exist only there (got {device}): "
                "use --device cuda, or drop --graph"
            )
        if warmup < 1:
            raise ValueError("warmup must be >= 1: the last warm-up step is the one checked for syncs")
        self.step, self.warmup, self.calls = step, warmup, 0
        self.inputs: list[torch.Tensor] | None = None
        self.graph: torch.cuda.CUDAGraph | None = None

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.graph is not None:
            for static, new in zip(self.inputs, inputs):
                static.copy_(new, non_blocking=True)
            self.graph.replay()
            return self.loss
        if is_validation_enabled():
            raise ValueError(
                "a CUDA graph cannot capture Pyro's validation checks (host syncs); "
                "call pyro.enable_validation(False) (or train with --no-validate) before capturing a step"
            )
        self.calls += 1
        if self.calls <= self.warmup:
            return self._eager(inputs, check_syncs=self.calls == self.warmup)
        self.inputs = [t.clone() for t in inputs]
        with _ScalarsByFill():
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.loss = self.step(*self.inputs)
        self.graph.replay()  # capture records the step without running it
        return self.loss

    def _eager(self, inputs, check_syncs: bool) -> torch.Tensor:
        # Warm-up on a side stream, as torch.cuda.graph asks: it lets cuBLAS and the optimiser's
        # state settle before their kernels are recorded.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with _ScalarsByFill(), torch.cuda.stream(side):
            if check_syncs:
                torch.cuda.set_sync_debug_mode("error")
            try:
                loss = self.step(*inputs)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        torch.cuda.current_stream().wait_stream(side)
        return loss
