"""Time the default training step with 1, 2, ... torch threads, on a quiet machine or beside busy ones.

The step is bench/train_step.py's `default` (what `python run.py` takes on the device, on a CPU
the replayed sync-free ELBO with validation on) for each G; the thread counts take turns, a step
with each then the next (`torch.set_num_threads` in between), so that they share whatever else
loads the machine. `--busy N` starts N processes that only spin, for the measurement's length:
the loaded machine of the README's table (4 busy processes on 2 cores). It prints, per G and
thread count, the median wall time of a step and its ratio to one thread; the wall time is what
a user waits, and what a second thread loses on an oversubscribed machine (its threads wait for
each other at every operation).

    python -m bench.threads                              # G = 1 and 16, 1 and 2 threads
    python -m bench.threads --busy 4 --json loaded.json
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import statistics
import time
import warnings

import torch

from ugvae.files import write_json
from ugvae.model import ModelConfig
from ugvae.trained.config import TrainConfig

from .train_step import bench_setup, build_step


def spin():
    while True:
        pass


@contextlib.contextmanager
def busy_processes(n: int):
    """`n` processes that only spin, for the length of the block."""
    context = multiprocessing.get_context("spawn")  # a fork would copy torch's thread pools
    spinners = [context.Process(target=spin, daemon=True) for _ in range(n)]
    for process in spinners:
        process.start()
    try:
        yield
    finally:
        for process in spinners:
            process.terminate()
        for process in spinners:
            process.join()


def time_threads(step, batches: torch.Tensor, threads: list[int], warmup: int, steps: int) -> dict[int, float]:
    """{threads: median wall seconds of a step}, the thread counts taking turns step by step."""
    times: dict[int, list[float]] = {n: [] for n in threads}
    for i in range(warmup + steps):
        for n in threads:
            torch.set_num_threads(n)
            start = time.perf_counter()
            float(step(batches[i % len(batches)]))
            if i >= warmup:
                times[n].append(time.perf_counter() - start)
    return {n: statistics.median(t) for n, t in times.items()}


def run(args) -> dict:
    device, cfg = bench_setup("cpu", args.tiny)
    if args.conv:
        cfg = ModelConfig(x_shape=(3, 64, 64))  # CelebA's: the official code's conv networks
    validate = TrainConfig().validation_on("cpu")
    images = torch.randint(0, 256, (1024,) + cfg.x_shape, dtype=torch.uint8)
    before = torch.get_num_threads()
    rows = []
    load = {"before": _load_average()}
    with busy_processes(args.busy):
        time.sleep(1.0 if args.busy else 0.0)  # the spinners are running before the first step
        for G in args.groups:
            batches = torch.randint(0, len(images), (16, G, args.group_size))
            step = build_step("default", cfg, images, validate=validate)
            medians = time_threads(step, batches, args.threads, args.warmup, args.steps)
            for n, seconds in medians.items():
                rows.append(
                    {"G": G, "threads": n, "step_ms": seconds * 1e3, "vs_one": seconds / medians[args.threads[0]]}
                )
        load["after"] = _load_average()
    torch.set_num_threads(before)
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "busy_processes": args.busy,
        "load_average": load,
        "torch": torch.__version__,
        "networks": cfg.resolved_arch,
        "group_size": args.group_size,
        "rows": rows,
    }


def _load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def print_table(result: dict) -> None:
    load = result["load_average"]
    shown = f", load average {load['before'][0]:.2f} before, {load['after'][0]:.2f} after" if load["before"] else ""
    print(
        f"\n{result['cpu']}, {result['cores_usable']} usable cores, torch {result['torch']}, "
        f"{result['networks']} networks, {result['busy_processes']} busy processes{shown}"
    )
    print(f"{'G':>4}{'threads':>9}{'step ms':>10}{'x 1 thread':>12}")
    for row in result["rows"]:
        print(f"{row['G']:>4}{row['threads']:>9}{row['step_ms']:>10.2f}{row['vs_one']:>12.2f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts; the first is the base")
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 16], help="G values: groups per step")
    parser.add_argument("--group-size", type=int, default=128, help="B: samples per group")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per thread count and G")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--busy", type=int, default=0, help="processes that spin meanwhile")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--conv", action="store_true", help="the conv networks of 64x64 images (CelebA)")
    parser.add_argument("--tiny", action="store_true", help="a tiny model, for the test suite")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="`torch.jit.trace", category=FutureWarning)  # deprecated in 2.14
    result = run(args)
    print_table(result)
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
