"""A training step replayed as one CUDA graph: the same kernels as the eager step, none of its Python.

A step of Pyro's TraceEnum_ELBO spends milliseconds in Python (tracing model and guide, packing
and contracting the enumerated factors) to launch kernels that run for less on a GPU. Capturing
the whole step once -- gathering the batch from the resident uint8 images, the loss, its
backward pass and the optimiser update -- and replaying the graph removes that cost: each step
is then one copy of the batch indices and one graph launch, whether the loss is Pyro's or
written by hand. Replay draws the random numbers the eager step would draw (PyTorch hands the
graph the generator's seed and offset): on a GPU, tests/train/test_fast.py checks that captured
steps give the eager steps' losses, step by step.

Capture needs fixed shapes (drop the last partial batch), an optimiser built with
`capturable=True`, Pyro validation off (its checks read tensors on the host) and no other
host-device sync. TraceEnum_ELBO has two, both checks that change nothing for a finite loss:
`warn_if_nan(loss)` reads the loss, and Dice skips terms of zero probability with `mask.all()`
or, when traced, `masked_select`, whose output size depends on the data. `graph_safe_elbo()`
swaps both out: no NaN warning, and costs set to 0 where the probability is 0, which is the same
sum with the same gradient. Distributions given Python numbers (`Normal(loc, 1.0)`) copy them to
the device from the host, which capture forbids too; while capturing, a fill kernel makes them.
The last warm-up step runs under `torch.cuda.set_sync_debug_mode("error")`, so that a sync left
in a step fails there with a Python traceback, not inside capture (which leaves the CUDA
generator unusable). JitTraceEnum_ELBO cannot be captured: a traced Normal.rsample draws with
torch.normal(mean, std), which checks std >= 0 on the host. Replay needs no JIT anyway.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable
from unittest import mock

import torch
from pyro.infer.util import is_validation_enabled
from torch.overrides import TorchFunctionMode
from opt_einsum import shared_intermediates
from pyro.infer import traceenum_elbo
from pyro.infer.util import Dice
from pyro.ops import packed
from pyro.ops.einsum.adjoint import require_backward
from pyro.ops.rings import MarginalRing


class _SyncFreeDice(Dice):
    """Dice whose expectation has a fixed shape: adapted from pyro.infer.util.Dice (Apache-2.0)."""

    def compute_expectation(self, costs):
        with shared_intermediates() as cache:
            ring = MarginalRing(cache=cache)
            expected_cost = 0.0
            for ordinal, cost_terms in costs.items():
                log_factors = self._get_log_factors(ordinal)
                scale = math.exp(sum(x for x in log_factors if not isinstance(x, torch.Tensor)))
                log_factors = [x for x in log_factors if isinstance(x, torch.Tensor)]
                # Query the marginal probability of each cost term's dims (see Dice).
                queries = {frozenset(cost._pyro_dims): None for cost in cost_terms}
                for log_factor in log_factors:
                    if queries.get(frozenset(log_factor._pyro_dims), False) is None:
                        queries[frozenset(log_factor._pyro_dims)] = log_factor
                for cost in cost_terms:
                    if queries[frozenset(cost._pyro_dims)] is None:
                        query = torch.zeros_like(cost)
                        query._pyro_dims = cost._pyro_dims
                        log_factors.append(query)
                        queries[frozenset(cost._pyro_dims)] = query
                sum_dims = set().union(*(x._pyro_dims for x in log_factors)) - ordinal
                for query in queries.values():
                    require_backward(query)
                ring.sumproduct(log_factors, sum_dims)._pyro_backward()
                for cost in cost_terms:
                    query = queries[frozenset(cost._pyro_dims)]
                    prob = query._pyro_backward_result.exp()
                    prob._pyro_dims = query._pyro_dims
                    cost, prob = packed.broadcast_all(cost, prob)
                    # A term of zero probability may cost -inf; 0 * -inf would be NaN.
                    cost = torch.where(prob > 0, cost, 0.0)
                    expected_cost = expected_cost + scale * (prob * cost).sum()
        return expected_cost


class _ScalarsByFill(TorchFunctionMode):
    """`torch.tensor(number, device=cuda)` as `torch.full`: a kernel, not a host-to-device copy."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        device = kwargs.get("device")
        if (func is torch.tensor and len(args) == 1 and isinstance(args[0], (int, float))
                and device is not None and torch.device(device).type == "cuda"):
            return torch.full((), args[0], dtype=kwargs.get("dtype"), device=device)
        return func(*args, **kwargs)


@contextmanager
def graph_safe_elbo():
    """TraceEnum_ELBO (JIT or not) without host-device syncs, for tracing and capturing a step."""
    with mock.patch.object(traceenum_elbo, "Dice", _SyncFreeDice), \
            mock.patch.object(traceenum_elbo, "warn_if_nan", lambda *args, **kwargs: None):
        yield


class CapturedStep:
    """`step(*inputs) -> loss` run `warmup + 1` times eagerly (real updates), then captured and replayed.

    Call it with tensors of the example inputs' shapes; it returns the loss tensor that the next
    call overwrites, so consume it (e.g. add it to a running sum) before calling again.
    """

    def __init__(self, step: Callable[..., torch.Tensor], *example_inputs: torch.Tensor, warmup: int = 3):
        if is_validation_enabled():
            raise ValueError("a CUDA graph cannot capture Pyro's validation checks (host syncs); "
                             "call pyro.enable_validation(False) before capturing a step")
        self.inputs = [t.clone() for t in example_inputs]
        # Warm-up on a side stream, as torch.cuda.graph asks: it lets cuBLAS, the JIT's
        # profiling executor and the optimiser's state settle before their kernels are recorded.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        # No JIT fuser: NNC compiles its fused kernels lazily, and a compile must not fall in capture.
        with graph_safe_elbo(), _ScalarsByFill(), torch.jit.fuser("none"):
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
