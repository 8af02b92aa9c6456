"""Time one UG-VAE training step: Pyro's ELBOs against a hand-written PyTorch loss of the same networks.

A step is what Trainer.train_step does: gather G groups of B images from uint8 data resident on
the device, compute the loss, backpropagate, take an Adam step. Variants:

    svi            pyro.infer.SVI.step with TraceEnum_ELBO and pyro.optim.Adam (it syncs: returns a float)
    pyro           TraceEnum_ELBO as a module + torch.optim.Adam: Trainer's step before the sync-free
                   ELBO, and still its step for a pair that ELBO is not proven for (two host syncs)
    pyro-syncfree  train/elbo.py's SyncFreeTraceEnum_ELBO the same way, eagerly: Trainer's step on a GPU
    default        elbo_module's loss module, under the validation setting a default run has on the
                   device: the step `python run.py` takes (on a CPU the traced sync-free ELBO with
                   validation on; on a GPU pyro-syncfree)
    jit            JitTraceEnum_ELBO the same way: Trainer's --jit
    hand           bench/handwritten.py's loss of the same networks, the same way
    *-compile      torch.compile on the networks (pyro*) or on the whole loss (hand)
    *-graph        the step captured once and replayed as a CUDA graph (train/graph.py): Trainer's
                   --graph for pyro-syncfree-graph; TraceEnum_ELBO's syncs forbid it for pyro

For each G the variants are timed in turns -- a step (a block of steps on a GPU) of each variant,
then the next -- so that they share whatever else loads the machine; it prints the median step
time, samples/s and the ratios to `hand` and to the fastest hand-written variant. On a CPU it
also prints the median CPU time of the process per step, and the ratio of those: on a busy
machine a step's CPU time counts only the time it ran, so those ratios hold where wall-clock
ones drift (with several threads, CPU time adds theirs). Then, at the largest G, the time of
one epoch of --epoch-samples images (the MNIST training set's size by default) and the peak
memory. Pyro validation is off but in `default`, as it should be for training (it adds host syncs).
Threads: those a run takes (`--threads`, trained/threads.py's default: 1 unless OMP_NUM_THREADS).

--check-syncs runs instead one step of each Pyro variant asked for (default: all that the device
runs), after a warm-up step, and exits 1, naming them, if any syncs with the host: on CUDA under
`torch.cuda.set_sync_debug_mode("error")`, on a CPU with the loss and backward pass under
bench/syncs.py's `host_reads_forbidden`; validation is off for every variant there.

    python -m bench.train_step --device cpu --groups 1 16 --variants pyro-syncfree default jit hand
    python -m bench.train_step --device cuda --json bench.json
    python -m bench.train_step --device cuda --check-syncs
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import resource
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable

import pyro
import torch
from pyro.infer import SVI, TraceEnum_ELBO
from pyro.infer.elbo import ELBOModule

from ugvae.bench.syncs import host_reads_forbidden
from ugvae.data import to_unit_float
from ugvae.files import atomic_write_text, write_json
from ugvae.guide import UGVAEGuide
from ugvae.model import ModelConfig, UGVAEModel
from ugvae.train.elbo import SyncFreeTraceEnum_ELBO, TracedELBOModule, elbo_module
from ugvae.train.graph import CapturedStep
from ugvae.trained.config import TrainConfig
from ugvae.trained.threads import resolve_threads

from .handwritten import HandwrittenLoss

VARIANTS = (
    "svi",
    "pyro",
    "pyro-compile",
    "pyro-syncfree",
    "pyro-syncfree-compile",
    "pyro-syncfree-graph",
    "default",
    "jit",
    "hand",
    "hand-compile",
    "hand-graph",
    "hand-compile-graph",
)
PYRO_VARIANTS = tuple(v for v in VARIANTS if not v.startswith("hand"))


def build_step(
    variant: str,
    cfg: ModelConfig,
    images: torch.Tensor,
    lr=1e-3,
    guard=contextlib.nullcontext,
    validate: bool = False,
) -> Callable[[torch.Tensor], torch.Tensor | float]:
    """A fresh model and guide, and `step(idx) -> loss` for one variant; `guard()` wraps loss and
    backward, which run under Pyro validation `validate`, as Session.step runs them."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    device = images.device
    model, guide = UGVAEModel(cfg).to(device), UGVAEGuide(cfg).to(device)
    base, *tricks = variant.split("-")
    if base == "svi":
        svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), TraceEnum_ELBO(max_plate_nesting=2))

        def svi_step(idx: torch.Tensor) -> float:
            with pyro.validation_enabled(validate), guard():
                return svi.step(to_unit_float(images[idx]))

        return svi_step
    if base == "hand":
        loss_fn = HandwrittenLoss(model, guide)
        if "compile" in tricks:
            loss_fn = torch.compile(loss_fn, dynamic=False)
    elif base == "jit":
        loss_fn = elbo_module(model, guide, jit=True)
    elif base == "default":
        loss_fn = elbo_module(model, guide)
        if isinstance(loss_fn, TracedELBOModule):
            # The steady state: a run traces at its 101st step, a start-up cost bench/run.py counts.
            loss_fn.trace_after = 1
    else:
        elbo = SyncFreeTraceEnum_ELBO if "syncfree" in tricks else TraceEnum_ELBO
        loss_fn = ELBOModule(model, guide, elbo(max_plate_nesting=2))
        if "compile" in tricks:
            for network in (
                model.cluster_prior,
                model.decoder,
                guide.features,
                guide.local_encoder,
                guide.cluster_posterior,
                guide.global_encoder,
            ):
                network.compile(dynamic=False)
    cuda = device.type == "cuda"
    # fused: one kernel for the whole update, as a run's (train/session.py `adam`), so that every
    # variant differs from the others in its loss only; capturable: its step count stays on the device.
    optimizer = torch.optim.Adam(loss_fn.parameters(), lr=lr, fused=True, capturable=cuda)

    def step(idx: torch.Tensor) -> torch.Tensor:
        x = to_unit_float(images[idx])
        optimizer.zero_grad(set_to_none=True)
        with pyro.validation_enabled(validate), guard():
            loss = loss_fn(x)
            loss.backward()
        optimizer.step()
        return loss.detach()

    if "graph" in tricks:
        if not cuda:
            raise ValueError(f"{variant} needs --device cuda: CUDA graphs exist only on a GPU")
        return CapturedStep(step, device)
    return step


def first_sync(variant: str, cfg: ModelConfig, images: torch.Tensor, batch: torch.Tensor) -> str | None:
    """The error of the first host sync in a step of `variant` (after its warm-up), or None if it has none."""
    cuda = images.device.type == "cuda"
    armed = []  # the CPU detector guards the step once this holds an item: not the warm-up steps

    def guard():
        return host_reads_forbidden() if armed else contextlib.nullcontext()

    step = build_step(variant, cfg, images, guard=guard)
    for _ in range(5 if "graph" in variant else 1):  # past the capture, tracing and lazy initialisation
        step(batch)
    if cuda:
        torch.cuda.set_sync_debug_mode("error")
    armed.append(True)
    try:
        step(batch)
    except Exception as error:  # a sync, or whatever else kept the variant from running here
        return _describe(error)
    finally:
        if cuda:
            torch.cuda.set_sync_debug_mode("default")
    return None


def bench_setup(device_name: str, tiny: bool) -> tuple[torch.device, ModelConfig]:
    """The device (refused when absent) and the model timed; validation off, as in training."""
    device = torch.device(device_name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda was asked for but CUDA is not available; use --device cpu")
    pyro.enable_validation(False)
    return device, ModelConfig(x_shape=(1, 8, 8), z_dim=2, beta_dim=2, K=3, hidden=16) if tiny else ModelConfig()


def check_syncs(args) -> int:
    device, cfg = bench_setup(args.device, args.tiny)
    images = torch.randint(0, 256, (4 * args.group_size,) + cfg.x_shape, dtype=torch.uint8, device=device)
    batch = torch.randint(0, len(images), (max(args.groups), args.group_size), device=device)
    failed = []
    for variant in args.variants:
        error = first_sync(variant, cfg, images, batch)
        print(f"{variant:<24}{'no host sync' if error is None else 'SYNCS: ' + error[:200]}", flush=True)
        if error is not None:
            failed.append(variant)
    if failed:
        print(f"error: host syncs left in {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_in_turns(steps: dict, batches: torch.Tensor, warmup: int, n_steps: int) -> dict:
    """{variant: (wall seconds, CPU seconds)} per step, medians over blocks taken in turns.

    `steps` maps a variant to its step and its Pyro param store (variants may share parameter
    names, and `jit` and `svi` look theirs up by name). Each block ends with one sync, as
    training syncs once a log window; a block is one step on a CPU (where nothing syncs).
    """
    device, store = batches.device, pyro.get_param_store()
    for step, scope in steps.values():
        with store.scope(scope):
            for i in range(warmup):
                step(batches[i % len(batches)])
    per_block = 1 if device.type == "cpu" else max(1, n_steps // 10)
    times = {variant: ([], []) for variant in steps}
    for b in range(max(1, n_steps // per_block)):
        for variant, (step, scope) in steps.items():
            with store.scope(scope):
                synchronize(device)
                wall, cpu = time.perf_counter(), time.process_time()
                total = 0.0
                for i in range(per_block):
                    total += step(batches[(b * per_block + i) % len(batches)])
                float(total)  # the one sync of a block, like a logged loss
                times[variant][0].append((time.perf_counter() - wall) / per_block)
                times[variant][1].append((time.process_time() - cpu) / per_block)
    return {variant: (statistics.median(wall), statistics.median(cpu)) for variant, (wall, cpu) in times.items()}


def epoch_seconds(step, n_images: int, G: int, B: int, device: torch.device, log_every: int = 10) -> float:
    """One epoch of random groups over n_images, the last partial step dropped, logging every 10 steps."""
    steps = n_images // (G * B)
    order = torch.randperm(n_images, device=device)[: steps * G * B].view(steps, G, B)
    synchronize(device)
    start = time.perf_counter()
    window = torch.zeros((), device=device)
    for i in range(steps):
        window += step(order[i])
        if (i + 1) % log_every == 0 or i + 1 == steps:
            window.item()
            window.zero_()
    return time.perf_counter() - start


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # Linux reports KiB


def profile_step(step, batches: torch.Tensor, path: str, steps: int = 10) -> dict:
    """Kernels and GPU-busy time per step, and the profiler's table of where the host time goes."""
    from torch.profiler import ProfilerActivity, profile

    device = batches.device
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    synchronize(device)
    with profile(activities=activities) as prof:
        for i in range(steps):
            step(batches[i % len(batches)])
        synchronize(device)
    events = prof.key_averages()
    kernels = [e for e in events if e.device_type.name == "CUDA"]
    tables = events.table(sort_by="self_cpu_time_total", row_limit=25)
    if kernels:
        tables += "\n" + events.table(sort_by="self_device_time_total", row_limit=15)
    atomic_write_text(path, tables)
    return {
        "kernels_per_step": sum(e.count for e in kernels) / steps,
        "gpu_busy_ms_per_step": sum(e.self_device_time_total for e in kernels) / steps / 1e3,
    }


def run(args) -> dict:
    device, cfg = bench_setup(args.device, args.tiny)
    B, G_max = args.group_size, max(args.groups)
    n_images = max(args.epoch_samples, G_max * B)
    images = torch.randint(0, 256, (n_images,) + cfg.x_shape, dtype=torch.uint8, device=device)
    store = pyro.get_param_store()
    rows, epochs = [], []
    for G in args.groups:
        batches = torch.randint(0, n_images, (16, G, B), device=device)
        steps, failed = {}, {}
        for variant in args.variants:
            validate = variant == "default" and TrainConfig().validation_on(device.type)
            with store.scope() as scope:
                try:
                    steps[variant] = (build_step(variant, cfg, images, validate=validate), scope)
                except Exception as error:  # a variant that cannot run here is reported, not fatal
                    failed[variant] = _describe(error)
        try:
            timed = timed_in_turns(steps, batches, args.warmup, args.steps)
        except Exception as error:
            traceback.print_exception(error)
            timed, failed = {}, {**failed, **dict.fromkeys(steps, _describe(error))}
        for variant in args.variants:
            row = {"variant": variant, "G": G, "B": B}
            if variant in timed:
                wall, cpu = timed[variant]
                row.update(step_ms=wall * 1e3, samples_per_s=G * B / wall)
                if device.type == "cpu":
                    row["cpu_ms"] = cpu * 1e3
                step, scope = steps[variant]
                with store.scope(scope):
                    if G == min(args.groups) and variant in args.profile:
                        row.update(profile_step(step, batches, f"{args.profile_prefix}{variant}.txt"))
                    if G == G_max:
                        if device.type == "cuda":
                            torch.cuda.empty_cache()
                            torch.cuda.reset_peak_memory_stats(device)
                        epochs.append(
                            {
                                "variant": variant,
                                "G": G,
                                "samples": args.epoch_samples // (G * B) * G * B,
                                "epoch_s": epoch_seconds(step, args.epoch_samples, G, B, device),
                                "peak_memory_mb": peak_memory_mb(device),
                            }
                        )
            else:
                row["error"] = failed.get(variant, "not timed")
            rows.append(row)
            print(_format_row(row), flush=True)
        del steps  # the next G builds its own: one set of models at a time
    _add_ratios(rows)
    order = {variant: i for i, variant in enumerate(args.variants)}
    rows.sort(key=lambda row: order[row["variant"]])  # stable: by variant, then by G
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "model": cfg.to_dict(),
        "peak_memory": "torch.cuda.max_memory_allocated"
        if device.type == "cuda"
        else "ru_maxrss of the process so far",
        "rows": rows,
        "epochs": epochs,
    }


def _describe(error: BaseException) -> str:
    """The first line of an error and of the errors it happened in (a failed capture hides its cause)."""
    chain = []
    while error is not None and len(chain) < 3:
        text = str(error).strip()
        chain.append(f"{type(error).__name__}: {text.splitlines()[0] if text else ''}")
        error = error.__context__
    return " <- ".join(chain)


def _add_ratios(rows):
    for row in rows:
        same_G = [r for r in rows if r["G"] == row["G"] and "step_ms" in r]
        hand = next((r for r in same_G if r["variant"] == "hand"), None)
        best = [r["step_ms"] for r in same_G if r["variant"].startswith("hand")]
        if "step_ms" not in row:
            continue
        if hand:
            row["vs_hand"] = row["step_ms"] / hand["step_ms"]
            if "cpu_ms" in row:
                row["vs_hand_cpu"] = row["cpu_ms"] / hand["cpu_ms"]
        if best:
            row["vs_best_hand"] = row["step_ms"] / min(best)


def _format_row(row) -> str:
    if "error" in row:
        return f"{row['variant']:<20}{row['G']:>4}  {row['error'][:100]}"
    cpu = f"{row['cpu_ms']:>10.3f}" if "cpu_ms" in row else f"{'':>10}"
    return f"{row['variant']:<20}{row['G']:>4}{row['step_ms']:>10.3f}{cpu}{row['samples_per_s']:>14,.0f}"


def print_tables(result: dict):
    load = result.get("load_average")
    load = f", load average {' '.join(f'{x:.2f}' for x in load)}" if load else ""
    print(f"\n{result['device']}, torch {result['torch']}, pyro {result['pyro']}, {result['threads']} thread(s){load}")
    header = f"{'variant':<20}{'G':>4}{'step ms':>10}{'cpu ms':>10}{'samples/s':>14}"
    print(f"{header}{'x hand':>9}{'x hand cpu':>12}{'x best hand':>13}")
    nan = float("nan")
    for row in result["rows"]:
        hand, hand_cpu, best = (row.get(key, nan) for key in ("vs_hand", "vs_hand_cpu", "vs_best_hand"))
        print(_format_row(row) + ("" if "error" in row else f"{hand:>9.2f}{hand_cpu:>12.2f}{best:>13.2f}"))
    print(f"\n{'epoch at largest G':<20}{'G':>4}{'samples':>9}{'epoch s':>10}{'peak MiB':>10}")
    for e in result["epochs"]:
        print(f"{e['variant']:<20}{e['G']:>4}{e['samples']:>9}{e['epoch_s']:>10.3f}{e['peak_memory_mb']:>10.1f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 4, 16], help="G values: groups per step")
    parser.add_argument("--group-size", type=int, default=128, help="B: samples per group")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per variant and G")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (JIT tracing, compiling)")
    parser.add_argument("--epoch-samples", type=int, default=60_000)
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        help="default: all but *-compile on CPU (slow to compile), all on CUDA",
    )
    parser.add_argument(
        "--profile", nargs="*", default=[], choices=VARIANTS, help="profile these variants at the smallest G"
    )
    parser.add_argument("--profile-prefix", default="profile-", help="profile tables go to PREFIX<variant>.txt")
    parser.add_argument("--tiny", action="store_true", help="a tiny model, for the test suite")
    parser.add_argument(
        "--threads", type=int, help="CPU threads (default: what a run takes, trained/threads.py's default)"
    )
    parser.add_argument(
        "--check-syncs",
        action="store_true",
        help="check one step of each Pyro variant for host syncs instead of timing; exit 1 if any syncs",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(resolve_threads(args.threads))  # the step a default run takes: its threads too
    warnings.filterwarnings("ignore", message="`torch.jit.trace", category=FutureWarning)  # deprecated in 2.14
    warnings.filterwarnings("ignore", message="TraceEnum_ELBO found no sample sites")
    if args.variants is None:
        on_cpu = [v for v in VARIANTS if "graph" not in v and "compile" not in v]
        args.variants = on_cpu if args.device == "cpu" else list(VARIANTS)
        if args.check_syncs:
            args.variants = [v for v in args.variants if v in PYRO_VARIANTS]
    if args.check_syncs:
        return check_syncs(args)
    result = run(args)
    print_tables(result)
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
