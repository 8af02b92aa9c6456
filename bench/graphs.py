"""A training step replayed as one CUDA graph: the same kernels as the eager step, none of its Python.

Capturing a whole step once -- gathering the batch from the resident uint8 images, the loss, its
backward pass and the optimiser update -- and replaying the graph leaves one copy of the batch
indices and one graph launch per step. Replay draws the random numbers the eager step would draw
(PyTorch hands the graph the generator's seed and offset): on a GPU, tests/bench/test_graphs.py
checks that captured steps give the eager steps' losses, step by step.

Capture needs fixed shapes (drop the last partial batch), an optimiser built with
`capturable=True`, Pyro validation off (its checks read tensors on the host) and no other
host-device sync. Pyro's TraceEnum_ELBO step cannot be captured: it syncs twice inside Pyro,
in `warn_if_nan`, which reads the loss, and in Dice, whose `mask.all()` test looks for terms of
zero probability. The benchmark therefore captures only the hand-written step of
bench/handwritten.py. A Python number made a device tensor (`torch.tensor(1.0, device="cuda")`)
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
    """`step(*inputs) -> loss` run `warmup + 1` times eagerly (real updates), then captured and replayed.

    Call it with tensors of the example inputs' shapes; it returns the loss tensor that the next
    call overwrites, so consume it (e.g. add it to a running sum) before calling again.
    """

    def __init__(self, step: Callable[..., torch.Tensor], *example_inputs: torch.Tensor, warmup: int = 3):
        if is_validation_enabled():
            raise ValueError(
                "a CUDA graph cannot capture Pyro's validation checks (host syncs); "
                "call pyro.enable_validation(False) before capturing a step"
            )
        self.inputs = [t.clone() for t in example_inputs]
        # Warm-up on a side stream, as torch.cuda.graph asks: it lets cuBLAS and the optimiser's
        # state settle before their kernels are recorded.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with _ScalarsByFill():
            with torch.cuda.stream(side):
                for _ in range(warmup):
                    step(*self.inputs)
                torch.cuda.set_sync_debug_mode("error")
                try:
                    step(*self.inputs)
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.loss = step(*self.inputs)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        for static, new in zip(self.inputs, inputs):
            static.copy_(new, non_blocking=True)
        self.graph.replay()
        return self.loss
