"""Time a whole training run, `python run.py --dataset mnist` by default, end to end and by phase.

The run is the command line's own (`ugvae.run.main`), in this process, with its functions and
methods wrapped from the outside so that every moment of the run counts for the phase under way
then -- the innermost one, so that a checkpoint taken at an epoch's end counts as a checkpoint,
not as epoch-end work -- and nothing the run computes changes:

    start-up: python        the interpreter, before this module ran (Linux, from /proc)
    start-up: imports       torch, pyro and the package's training and report modules
    start-up: data          load_training_data: datasets, their caches, the test groups
    start-up: set-up        fit, Session.begin and open_hooks less the above: configs, model and
                            guide, the run directory and its lock, environment.json, hook writers
    steps                   Session.step: loss, backward and Adam update of every step
    steps: tracing          recording the step's graph (train/elbo.py; on a CPU, once a run's
                            first 100 steps ran eagerly)
    loop                    Trainer.fit less its parts: drawing groups, progress bar, log windows
    logging                 every hook's on_log: the metrics.csv (and TensorBoard) rows of a window
    epoch end: <hook>       test metrics and beta diagnostics at each evaluated epoch's end;
                            every other hook's on_epoch_end: cluster refresh, the metrics.csv
                            row, TensorBoard
    epoch end: other        Session.end_epoch less its hooks and checkpoint
    checkpoints             Session.checkpoint
    end: summary            Session.finish: summary.json
    end: figures            the report written into the run (experiments/report.py)
    end: printed report     the report printed after training
    other                   the rest: parsing flags, closing the hooks, leaving

A phase whose code is not found (renamed, say) is reported as missing, never silently dropped;
tests/bench/test_run.py runs a tiny run and checks that the phases add up to the wall time.
Threads: run.py's `--threads` (trained/threads.py); the table shows the count the run trained with.

    python -m bench.run                                   # the default MNIST run (200 epochs)
    python -m bench.run --epochs 25 --threads 2 --json run.json
    python -m bench.run --dataset synthetic:200 --epochs 2 --quiet --hidden 16   # flags go to run.py
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # before any import this benchmark makes

import argparse  # noqa: E402
import contextlib  # noqa: E402
import functools  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402

# Modules the training command imports, timed as the imports phase.
IMPORTED = ("torch", "pyro", "ugvae.run", "ugvae.train", "ugvae.trained", "ugvae.experiments.report")
# The evaluation of an evaluated epoch's end, timed where it is computed: its hooks pass at the others.
EVALUATION = {
    ("ugvae.trained.evaluation", "test_metrics"): "epoch end: test metrics",
    ("ugvae.trained.diagnostics", "beta_diagnostics"): "epoch end: beta diagnostics",
}
EVALUATION_HOOKS = ("TestMetrics", "BetaDiagnostics")
# Readable names of the other epoch-end hooks of train/hooks.py; another hook is shown by its class name.
HOOK_NAMES = {
    "ClusterRefresh": "cluster refresh",
    "MetricsFile": "metrics.csv",
    "TensorBoard": "TensorBoard",
}


class PhaseClock:
    """Wall time by phase: each moment counts for the innermost phase open then, `other` when none.

    `seconds` and `calls` list the phases in the order they were first entered.
    """

    def __init__(self, start: float, now=time.perf_counter):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: Counter = Counter()
        self.stack, self.start, self.last, self.now = ["other"], start, start, now
        self.wrapped: list[tuple[object, str, object]] = []

    def _switch(self) -> None:
        now = self.now()
        self.seconds[self.stack[-1]] += now - self.last
        self.last = now

    @contextlib.contextmanager
    def phase(self, name: str):
        self._switch()
        self.stack.append(name)
        self.calls[name] += 1
        try:
            yield
        finally:
            self._switch()
            self.stack.pop()

    def stop(self) -> None:
        self._switch()

    def wrap(self, owner, attribute: str, name: str) -> None:
        """Time `owner.attribute` as phase `name`, and so every module's binding of that function."""
        original = getattr(owner, attribute)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            with self.phase(name):
                return original(*args, **kwargs)

        bindings = [(owner, attribute)]
        if isinstance(owner, type(sys)):  # a module function: also where others imported it by name
            bindings += [
                (module, key)
                for module in list(sys.modules.values())
                if getattr(module, "__name__", "").startswith("ugvae.") and module is not owner
                for key, value in list(vars(module).items())
                if value is original
            ]
        for where, key in bindings:
            self.wrapped.append((where, key, original))
            setattr(where, key, timed)

    def unwrap(self) -> None:
        for where, key, original in reversed(self.wrapped):
            setattr(where, key, original)
        self.wrapped.clear()


def python_startup_seconds() -> float | None:
    """How long this process ran before this module was loaded (Linux: from /proc), else None."""
    try:
        with open("/proc/self/stat") as f:
            started_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    age = uptime - started_ticks / os.sysconf("SC_CLK_TCK")
    return max(0.0, age - (time.perf_counter() - STARTED))


def instrument(clock: PhaseClock) -> list[str]:
    """Wrap the run's phases (module docstring); returns the targets that were not found."""
    missing = []

    def wrap(module_name: str, path: str, name: str):
        owner = importlib.import_module(module_name)
        *outer, attribute = path.split(".")
        try:
            for part in outer:
                owner = getattr(owner, part)
            getattr(owner, attribute)
        except AttributeError:
            missing.append(f"{module_name}.{path}")
            return
        clock.wrap(owner, attribute, name)

    wrap("ugvae.train.session", "load_training_data", "start-up: data")
    wrap("ugvae.train.fit", "fit", "start-up: set-up")
    wrap("ugvae.train.fit", "resume", "start-up: set-up")
    wrap("ugvae.train.session", "Session.begin", "start-up: set-up")
    wrap("ugvae.train.session", "Session.open_hooks", "start-up: set-up")
    wrap("ugvae.train.session", "Session.step", "steps")
    wrap("ugvae.train.elbo", "TracedELBOModule._trace", "steps: tracing")
    wrap("ugvae.train.loop", "Trainer.fit", "loop")
    wrap("ugvae.train.session", "Session.end_epoch", "epoch end: other")
    wrap("ugvae.train.session", "Session.checkpoint", "checkpoints")
    wrap("ugvae.train.session", "Session.finish", "end: summary")
    wrap("ugvae.experiments.report", "training_report", "end: figures")
    wrap("ugvae.experiments.report", "print_training_report", "end: printed report")
    for (module_name, function), name in EVALUATION.items():
        wrap(module_name, function, name)
    hooks = importlib.import_module("ugvae.train.hooks")
    for hook in _subclasses(hooks.Hook):
        if hook.__name__ in EVALUATION_HOOKS:
            continue
        label = HOOK_NAMES.get(hook.__name__, hook.__name__)
        if "on_epoch_end" in vars(hook):
            clock.wrap(hook, "on_epoch_end", f"epoch end: {label}")
        if "on_log" in vars(hook):
            clock.wrap(hook, "on_log", "logging")
    return missing


def _subclasses(cls) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def run_args(args, extra: list[str]) -> tuple[list[str], str | None]:
    """run.py's arguments, and the temporary runs directory made for them (None if the flags name one)."""
    resumed = any(a.split("=")[0] == "--resume" for a in extra)
    argv = [*([] if resumed else ["--dataset", args.dataset]), *extra]
    if args.epochs is not None:
        argv += ["--epochs", str(args.epochs)]
    if args.device is not None:
        argv += ["--device", args.device]
    if resumed or any(a.split("=")[0] in ("--runs-dir", "--run-dir") for a in extra):
        return argv, None
    runs_dir = tempfile.mkdtemp(prefix="ugvae-bench-run-")
    return [*argv, "--runs-dir", runs_dir], runs_dir


def measure(argv: list[str], started: float | None = None) -> dict:
    """Run `run.py argv` in this process and return its phases, wall time and exit code.

    The clock starts at `started` (this module's loading, for `python -m bench.run`, whose
    interpreter start-up is then counted too) or now.
    """
    whole_process = started is not None
    clock = PhaseClock(started if whole_process else time.perf_counter())
    python = python_startup_seconds() if whole_process else None
    load_before = _load_average()
    with clock.phase("start-up: imports"):
        for name in IMPORTED:
            importlib.import_module(name)
    missing = instrument(clock)
    torch = sys.modules["torch"]
    session, threads = sys.modules["ugvae.train.session"].Session, []
    timed_begin = session.begin

    def begin(self):  # the threads the session trains with (fit restores the caller's count after)
        threads.append(torch.get_num_threads())
        return timed_begin(self)

    session.begin = begin
    try:
        code = sys.modules["ugvae.run"].main(argv)
    finally:
        session.begin = timed_begin
        clock.stop()
        clock.unwrap()
    wall = time.perf_counter() - (started if whole_process else clock.start) + (python or 0.0)
    seconds = {**({"start-up: python": python} if python is not None else {}), **clock.seconds}
    order = [*(["start-up: python"] if python is not None else []), *clock.calls, "other"]
    return {
        "command": "python run.py " + " ".join(argv),
        "exit_code": code,
        "wall_s": wall,
        "phases": [
            {"phase": name, "seconds": seconds[name], "share": seconds[name] / wall, "calls": clock.calls[name]}
            for name in dict.fromkeys(order)
            if name in seconds
        ],
        "missing": missing,
        "steps": clock.calls["steps"],
        "threads": threads[0] if threads else torch.get_num_threads(),
        "load_average": {"before": load_before, "after": _load_average()},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10,
        "torch": torch.__version__,
    }


def _load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def print_table(result: dict, out=None) -> None:
    out = out or sys.stdout
    load = result["load_average"]
    load = f", load average {load['before'][0]:.2f} before and {load['after'][0]:.2f} after" if load["before"] else ""
    print(f"\n{result['command']}", file=out)
    print(
        f"torch {result['torch']}, {result['threads']} thread(s){load}, peak memory {result['peak_rss_mb']:.0f} MiB",
        file=out,
    )
    print(f"{'phase':<34}{'seconds':>10}{'share':>9}{'calls':>8}", file=out)
    for row in result["phases"]:
        per_call = ""
        if row["phase"] == "steps" and row["calls"]:
            per_call = f"   {row['seconds'] / row['calls'] * 1e3:.1f} ms a step"
        print(
            f"{row['phase']:<34}{row['seconds']:>10.2f}{row['share']:>8.1%}{row['calls']:>8}{per_call}",
            file=out,
        )
    print(f"{'total (wall)':<34}{result['wall_s']:>10.2f}{1:>8.0%}", file=out)
    for target in result["missing"]:
        print(f"warning: {target} was not found: its phase is not measured (counted as other)", file=out)
    if result["exit_code"]:
        print(f"warning: the run exited with {result['exit_code']}", file=out)


def main(argv=None, started: float | None = None) -> int:
    """`python -m bench.run [flags]`; `started` as in `measure`."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="Other flags go to run.py (e.g. --quiet, --groups-per-step 4, --hidden 16).",
    )
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--epochs", type=int, default=None, help="run.py's default when left out (200)")
    parser.add_argument("--device", default=None, help="run.py's default when left out")
    parser.add_argument("--json", help="write the phases here as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the run's directory (else a temporary one)")
    args, extra = parser.parse_known_args(argv)
    run_argv, runs_dir = run_args(args, extra)
    try:
        result = measure(run_argv, started)
    finally:
        if runs_dir is not None and not args.keep:
            shutil.rmtree(runs_dir, ignore_errors=True)
    if runs_dir is not None and args.keep:
        result["runs_dir"] = runs_dir
    print_table(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result["exit_code"]


if __name__ == "__main__":
    raise SystemExit(main(started=STARTED))
