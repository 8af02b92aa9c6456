"""An experiment's results over training seeds: what `compare --experiment NAME` tables are made of.

Runs are grouped into settings by their folder name without a trailing -sSEED (mix-loo-s1 ->
mix-loo), settings in the order given. Of each run this reads the newest
RUN/experiments/NAME[-n]/ (trained/outputs.py `latest_output`), its summary.json (test ELBO and
beta diagnostics at the end of training) and config.json. A cell is the mean over a setting's
seeds ± the half-width of the 95% t-interval of that mean, t quantile of n - 1 degrees of
freedom (none for one seed):

    mean +- t_{0.975, n-1} s / sqrt(n),   s the standard deviation over seeds (ddof 1)

The reference setting, against which ELBO costs and configurations are read, is the one named
`reference`, else the first whose name ends in "default" (within the same prefix, so that
mix-loo is read against mix-default), else the first.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

from ..errors import RunError
from ..files import read_json
from ..trained.outputs import latest_output


@dataclass
class SeededRun:
    run_dir: str
    setting: str
    results: dict  # the experiment's results file
    summary: dict  # summary.json
    config: dict  # config.json: "model" and "train" fields


def setting_name(run_dir: str) -> str:
    return re.sub(r"-s\d+$", "", os.path.basename(os.path.normpath(run_dir)))


def read_object(path: str, fix: str) -> dict:
    try:
        payload = read_json(path)  # a regular file of bounded size and depth
    except FileNotFoundError:
        raise RunError(f"{path} is missing; {fix}") from None
    except ValueError as e:
        raise RunError(f"{path} cannot be read ({e}); {fix}") from None
    if not isinstance(payload, dict):
        raise RunError(f"{path} is not a JSON object; {fix}")
    return payload


def load_runs(run_dirs: list[str], experiment: str, results_file: str) -> list[SeededRun]:
    """Every run with its newest results of `experiment`; a run without any is named, with the command to run."""
    runs = []
    for run_dir in run_dirs:
        folder = latest_output(os.path.join(run_dir, "experiments"), experiment)
        if folder is None:
            raise RunError(
                f"{run_dir} has no {experiment} results; run `experiment {experiment}` on it first, or leave it out"
            )
        fix = f"run `experiment {experiment}` on {run_dir} again"
        results = read_object(os.path.join(folder, results_file), fix)
        summary = read_object(os.path.join(run_dir, "summary.json"), "its training did not finish; resume it")
        config = read_object(os.path.join(run_dir, "config.json"), "restore it from a copy")
        runs.append(SeededRun(run_dir, setting_name(run_dir), results, summary, config))
    return runs


def by_setting(runs: list[SeededRun]) -> dict[str, list[SeededRun]]:
    out: dict[str, list[SeededRun]] = {}
    for run in runs:
        out.setdefault(run.setting, []).append(run)
    return out


def reference_setting(settings: list[str], name: str, forced: str | None = None) -> str:
    """The setting `name` is read against, among `settings`; see the module docstring."""
    if forced in settings:
        return forced
    prefix = name.split("-")[0]
    defaults = [s for s in settings if s.endswith("default")]
    return next((s for s in defaults if s == f"{prefix}-default"), defaults[0] if defaults else settings[0])


def check_reference(settings: list[str], forced: str | None) -> None:
    if forced is not None and forced not in settings:
        raise RunError(f"`reference` {forced} is none of the settings: {', '.join(settings)}")


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with `df` degrees of freedom (scipy, a dependency of scikit-learn)."""
    from scipy import stats

    return float(stats.t.ppf(p, df))


def interval(values) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (0 for one value)."""
    values = [float(v) for v in values]
    n, mean = len(values), sum(values) / len(values)
    if n < 2:
        return mean, 0.0
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, t_quantile(0.975, n - 1) * sd / math.sqrt(n)


def fmt(values, digits: int = 3, signed: bool = False) -> str:
    """`mean ± half-width` of `values` (no ± for one value); '-' for none."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mean, half = interval(values)
    sign = "+" if signed else ""
    return f"{mean:{sign}.{digits}f}" + (f" ± {half:.{digits}f}" if len(values) > 1 else "")


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def config_differences(run: SeededRun, reference: SeededRun) -> str:
    """The config fields in which `run` differs from `reference`, as `field` value; '-' for none."""
    ignored = {"seed", "run_dir", "epochs"}
    differences = []
    for part in ("model", "train"):
        mine, theirs = run.config.get(part, {}), reference.config.get(part, {})
        for key in sorted(set(mine) | set(theirs)):
            if key not in ignored and mine.get(key) != theirs.get(key):
                differences.append(f"`{key}` {mine.get(key)}")
    return escape(", ".join(differences)) or "-"


def escape(text) -> str:
    """A Markdown table cell: `|` escaped and line breaks as spaces, so that no name breaks the table."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
