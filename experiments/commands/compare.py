"""The `compare` command: one table of several runs, with model, guide, data, training cost and
the numbers of `evaluate`.

Train time comes from RUN/summary.json (written at the end of training), the data each run really
read (source, train and test sizes) from RUN/environment.json, the test ELBO, the IWAE bound and
the clustering accuracy from RUN/eval.json, which is computed first where it is missing, torn, of
another run (its run id) or stale (not made at the run's newest checkpoint). Writes compare.md
and compare.csv to `out` (default: a new compare-<time> folder). Runs trained on other data than
the first are flagged (‡).

IWAE bounds tighten as S grows, so rows whose IWAE used another S than the first row are
flagged (a dagger in the table, a line on the console): evaluate them again with one S.

Runs on the same data and group size are scored on the same test groups, so their IWAE
difference to the first run is also given with its paired standard error over those groups,
which is much smaller than the standard error of each bound (most of that is the spread of
log p(X) between groups, common to every model).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass

import torch

from ...errors import DataError, RunError
from ...files import atomic_write_text, read_json
from ...progress import progress
from ...settings import setting
from ...trained import Run
from ...trained.checkpoint import checkpoint_step, list_checkpoints
from ...trained.environment import data_summary
from ...trained.evaluation import mean_and_stderr
from .evaluate import EvaluateSettings, evaluate_run

COLUMNS = [
    "run",
    "model",
    "guide",
    "dataset",
    "data",
    "epochs",
    "train_s",
    "test_elbo",
    "iwae",
    "iwae_se",
    "samples",
    "iwae_vs_first",
    "iwae_vs_first_se",
    "clustering_accuracy",
    "clusters_used",
]


def _read_json(path: str) -> dict | None:
    if not os.path.lexists(path):
        return None
    try:
        payload = read_json(path)  # a regular file of bounded size and depth
    except DataError as e:
        raise RunError(f"{path} is corrupt ({e}); delete it to compute it again") from None
    if not isinstance(payload, dict):
        raise RunError(f"{path} is corrupt (not a JSON object); delete it to compute it again")
    return payload


def newest_checkpoint_step(run_dir: str) -> int | None:
    """The step of the newest checkpoint file, read from its name."""
    paths = list_checkpoints(run_dir)
    return checkpoint_step(paths[-1]) if paths else None


def run_row(run_dir: str, samples: int = 100, device: str = "auto") -> dict:
    """One table row; evaluates the run first unless its eval.json is of this run and its newest checkpoint."""
    run = Run.open(run_dir, device)
    summary = _read_json(run.path("summary.json"))
    if summary is None:
        raise RunError(f"{run_dir} has no summary.json: its training did not finish; resume it")
    try:
        scores = _read_json(run.path("eval.json"))
    except RunError:
        scores = None  # a cache: a torn eval.json is computed again
    if scores is not None and not is_current(scores, run):
        scores = None
    scores = scores or evaluate_run(run, EvaluateSettings(samples=samples))
    row = {
        "run": os.path.basename(os.path.normpath(run_dir)),
        "model": run.model_name,
        "guide": run.guide_name,
        "dataset": run.train_cfg.dataset,
        "data": data_summary(run.run_dir),  # what the run really read (environment.json)
        "epochs": summary["epochs"],
        "train_s": summary["train_seconds"],
    }
    return {**row, **{k: scores.get(k) for k in COLUMNS + ["group_size", "iwae_per_test_group"] if k not in row}}


def is_current(scores: dict, run: Run) -> bool:
    """Whether an eval.json was computed for this run (its run id) at its newest checkpoint; one
    copied in from another run, or made at an older checkpoint, is computed again."""
    newest = newest_checkpoint_step(run.run_dir)
    if scores.get("run_id") != run.run_id or not isinstance(scores.get("step"), int) or scores["step"] != newest:
        return False
    per_group = scores.get("iwae_per_test_group")
    return isinstance(per_group, list) and all(isinstance(v, (int, float)) for v in per_group)


def add_paired_differences(rows: list[dict]):
    """iwae_vs_first(_se): IWAE minus the first run's, paired over the test groups both were scored on."""
    first = rows[0]
    for r in rows:
        same_groups = (r["dataset"], r["group_size"]) == (first["dataset"], first["group_size"])
        if same_groups and r.get("iwae_per_test_group") and first.get("iwae_per_test_group"):
            diff = torch.tensor(r["iwae_per_test_group"]) - torch.tensor(first["iwae_per_test_group"])
            r["iwae_vs_first"], r["iwae_vs_first_se"] = mean_and_stderr(diff)


def mixed_samples(rows: list[dict]) -> list[str]:
    """Runs whose IWAE used another number of importance samples S than the first row's."""
    return [r["run"] for r in rows if r.get("samples") != rows[0].get("samples")]


def default_out_dir() -> str:
    """A new ./compare-<time>[-n] folder: a table is never written over an earlier one."""
    import datetime

    from ...trained.run import new_output_dir

    return new_output_dir(".", "compare-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))


def _cell(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def other_data(rows: list[dict]) -> list[str]:
    """Runs whose recorded data (source and sizes) differ from the first row's."""
    return [r["run"] for r in rows if r.get("data") != rows[0].get("data")]


def markdown(rows: list[dict]) -> str:
    head = [
        "run",
        "model",
        "guide",
        "dataset",
        "data (source, sizes)",
        "epochs",
        "train time (s)",
        "test ELBO",
        "IWAE log p(x)",
        "IWAE - first run",
        "cluster acc.",
        "clusters used",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    flagged, other = set(mixed_samples(rows)), set(other_data(rows))
    for r in rows:
        iwae = f"{_cell(r['iwae'])} ± {_cell(r['iwae_se'])} (S={r['samples']}{'†' if r['run'] in flagged else ''})"
        paired = "-"
        if r.get("iwae_vs_first") is not None:
            paired = f"{_cell(r['iwae_vs_first'])} ± {_cell(r['iwae_vs_first_se'])}"
        cells = [
            r["run"],
            r["model"],
            r["guide"],
            r["dataset"],
            _cell(r["data"]) + (" ‡" if r["run"] in other else ""),
            _cell(r["epochs"]),
            _cell(r["train_s"], 0),
            _cell(r["test_elbo"]),
            iwae,
            paired,
            _cell(r["clustering_accuracy"], 3),
            _cell(r["clusters_used"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + (
        "\n\nNats per sample on the test split; ± is the standard error over test groups "
        "(paired over the same groups for the difference to the first run).\n"
        + (
            f"\n† IWAE with another S than the first run's (S={rows[0].get('samples')}): the bounds are not "
            "comparable; evaluate again with one `samples`.\n"
            if flagged
            else ""
        )
        + (
            "\n‡ trained on other data than the first run (another source or size; see each run's "
            "environment.json): the numbers are not comparable.\n"
            if other
            else ""
        )
    )


def to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


@dataclass
class CompareSettings:
    out: str | None = setting(None, "where compare.md and compare.csv go; None: a new ./compare-TIME", metavar="DIR")
    samples: int = setting(100, "IWAE samples for runs not yet evaluated")


@dataclass
class CompareResult:
    rows: list[dict]
    table: str
    files: list[str]


def compare(run_dirs: list[str], settings: CompareSettings | None = None, device: str = "auto") -> CompareResult:
    """The table of the module docstring for `run_dirs`, written to `settings.out`."""
    settings = settings or CompareSettings()
    if settings.out and os.path.lexists(settings.out) and not os.path.isdir(settings.out):
        raise RunError(f"`out` {settings.out} is a file, not a folder; pick another `out`")  # before any evaluation
    rows = [run_row(r, settings.samples, device) for r in progress(run_dirs, desc="runs", unit="run")]
    add_paired_differences(rows)
    out = settings.out or default_out_dir()
    os.makedirs(out, exist_ok=True)
    table = markdown(rows)
    files = [os.path.join(out, "compare.md"), os.path.join(out, "compare.csv")]
    atomic_write_text(files[0], table)
    atomic_write_text(files[1], to_csv(rows))
    return CompareResult(rows, table, files)


def report(result: CompareResult) -> str:
    lines = [result.table]
    flagged = mixed_samples(result.rows)
    if flagged:
        first = result.rows[0]["run"]
        lines.append(f"warning: the IWAE of {', '.join(flagged)} used another S than {first}'s; not comparable")
    other = other_data(result.rows)
    if other:
        lines.append(f"warning: {', '.join(other)} trained on other data than {result.rows[0]['run']}; not comparable")
    lines.append(f"wrote {result.files[0]} and {result.files[1]}")
    return "\n".join(lines)
