"""The `compare` command: one table of several runs, with model, guide, data, training cost and
the numbers of `evaluate`; or, with `experiment`, an experiment's tables over training seeds.

Train time comes from RUN/summary.json (written at the end of training), the data each run really
read (source, train and test sizes) from RUN/environment.json, the test ELBO, the IWAE bound and
the clustering accuracy from RUN/eval.json, which is computed first where it is missing, torn, of
another run (its run id) or stale (not made at the run's newest checkpoint). Writes compare.md
and compare.csv to `out` (which must be absent or empty; default: a new ./compare-<time>
folder), whole or absent (trained/outputs.py). Runs trained on other data than the first are
flagged (‡).

IWAE bounds tighten as S grows, so rows whose IWAE used another S than the first row are
flagged (a dagger in the table, a line on the console): evaluate them again with one S.

Runs on the same data and group size are scored on the same test groups, so their IWAE
difference to the first run is also given with its paired standard error over those groups,
which is much smaller than the standard error of each bound (most of that is the spread of
log p(X) between groups, common to every model). Two evaluations of one `folder:` dataset that
grew in between score different test groups: both runs are evaluated again on the data as it is.

With `experiment` (set-generation, group-factors, structured-batches), compare.md holds that
experiment's tables over training seeds instead, from each run's newest results of it (runs
named SETTING-sSEED are seeds of one setting; experiments/over_seeds.py): the result tables of
the README, made by the package.
"""

from __future__ import annotations

import csv
import datetime
import importlib
import io
import os
from dataclasses import dataclass

import torch

from ...errors import ConfigError, DataError, RunError
from ...files import atomic_write_text, read_json
from ...progress import progress
from ...settings import Settings, same_setting, setting
from ...trained import Run
from ...trained.checkpoint import checkpoint_step, list_checkpoints
from ...trained.environment import data_summary
from ...trained.evaluation import EvaluateArguments, mean_and_stderr
from ...trained.outputs import OutputFolder
from ..over_seeds import escape, load_runs
from .evaluate import EvaluateSettings, evaluate_run

# experiment -> its results file, and the module and function of its tables over seeds
SEED_TABLES = {
    "set-generation": ("results.json", "..set_generation.over_seeds", "seed_tables"),
    "group-factors": ("results.json", "..group_factors", "seed_tables"),
    "structured-batches": ("table.json", "..structured_batches.over_seeds", "seed_table"),
}

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


def run_row(run_dir: str, samples: int = 100, device: str = "auto", again: bool = False) -> dict:
    """One table row; evaluates the run first unless its eval.json is of this run and its newest
    checkpoint (or `again`)."""
    run = Run.open(run_dir, device)
    summary = _read_json(run.path("summary.json"))
    if summary is None:
        raise RunError(f"{run_dir} has no summary.json: its training did not finish; resume it")
    try:
        scores = None if again else _read_json(run.path("eval.json"))
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
        "epochs": summary.get("epochs"),  # a summary of an older version may lack them
        "train_s": summary.get("train_seconds"),
    }
    extra = ["group_size", "test_images", "iwae_per_test_group"]
    return {**row, **{k: scores.get(k) for k in COLUMNS + extra if k not in row}}


def evaluated_rows(run_dirs: list[str], samples: int, device: str) -> list[dict]:
    """A row per run; runs scored on other test groups than the first run's of the same data and B
    (a `folder:` dataset that grew between their evaluations) are evaluated again, with the first."""
    rows = [run_row(r, samples, device) for r in progress(run_dirs, desc="runs", unit="run")]
    regrown = [i for i, r in enumerate(rows) if same_groups(r, rows[0]) and not same_test_images(r, rows[0])]
    if regrown:
        for i in [0, *regrown]:
            rows[i] = run_row(run_dirs[i], samples, device, again=True)
    return rows


def same_groups(row: dict, first: dict) -> bool:
    return (row["dataset"], row["group_size"]) == (first["dataset"], first["group_size"])


def same_test_images(row: dict, first: dict) -> bool:
    sizes = [len(r.get("iwae_per_test_group") or []) for r in (row, first)]
    return row.get("test_images") == first.get("test_images") and sizes[0] == sizes[1]


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
        paired = same_groups(r, first) and same_test_images(r, first)
        if paired and r.get("iwae_per_test_group") and first.get("iwae_per_test_group"):
            diff = torch.tensor(r["iwae_per_test_group"]) - torch.tensor(first["iwae_per_test_group"])
            r["iwae_vs_first"], r["iwae_vs_first_se"] = mean_and_stderr(diff)


def mixed_samples(rows: list[dict]) -> list[str]:
    """Runs whose IWAE used another number of importance samples S than the first row's."""
    return [r["run"] for r in rows if r.get("samples") != rows[0].get("samples")]


def _cell(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else escape(value)


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
            escape(r["run"]),
            escape(r["model"]),
            escape(r["guide"]),
            escape(r["dataset"]),
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


@dataclass(frozen=True)
class CompareSettings(Settings):
    out: str | None = setting(
        None, "where compare.md and compare.csv go", default_is="a new ./compare-TIME", metavar="DIR"
    )
    samples: int = same_setting(EvaluateArguments, "samples", help="IWAE samples for runs not yet evaluated")
    experiment: str | None = setting(
        None,
        "tables of this experiment's results over seeds instead of the runs' scores",
        choices=tuple(SEED_TABLES),
        default_is="none: the runs' scores",
    )
    reference: str | None = setting(
        None,
        "with `experiment`: the setting others are read against",
        default_is="the first setting",
        metavar="SETTING",
    )


@dataclass
class CompareResult:
    rows: list[dict]  # the runs' scores; empty for an experiment's tables
    table: str
    files: list[str]


def compare(run_dirs: list[str], settings: CompareSettings | None = None, device: str = "auto") -> CompareResult:
    """One table of several runs, or an experiment's tables over training seeds; writes compare.md
    (and compare.csv) to a new folder.

    Without ``settings.experiment``: a row per run with its model, guide, the data it really read,
    training time, test ELBO, IWAE bound (and its difference to the first run, paired over the same
    test groups) and clustering; runs not yet evaluated at their newest checkpoint are evaluated
    first. Runs whose IWAE used another S, or that trained on other data than the first, are flagged.
    With ``settings.experiment``: that experiment's tables over seeds (runs named ``SETTING-sSEED``
    are seeds of one setting), each cell the mean ± the half-width of its 95% t-interval.

    Parameters
    ----------
    run_dirs : list of str
        Run directories; the first is the reference.
    settings : CompareSettings, optional
        Default: ``CompareSettings()``.
    device : str, default "auto"
        Where runs not yet evaluated are evaluated.

    Returns
    -------
    CompareResult
        The rows, the Markdown table and the files written.

    Raises
    ------
    RunError
        A run that did not finish training, or (with ``experiment``) without results of it.
    ConfigError
        An unknown experiment or reference setting, or an ``out`` that holds files.
    """
    settings = settings or CompareSettings()
    if settings.experiment is not None and settings.experiment not in SEED_TABLES:
        raise ConfigError(f"`experiment` is one of {', '.join(SEED_TABLES)}, got {settings.experiment!r}")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = OutputFolder(".", f"compare-{stamp}", out=settings.out)  # refuses a bad `out` before any evaluation
    rows = []
    if settings.experiment is not None:
        table = experiment_tables(run_dirs, settings.experiment, settings.reference)
    else:
        rows = evaluated_rows(run_dirs, settings.samples, device)
        add_paired_differences(rows)
        table = markdown(rows)
    with folder:
        atomic_write_text(folder.file("compare.md"), table)
        if rows:
            atomic_write_text(folder.file("compare.csv"), to_csv(rows))
    return CompareResult(rows, table, folder.files)


def experiment_tables(run_dirs: list[str], experiment: str, reference: str | None = None) -> str:
    """An experiment's tables over the seeds of `run_dirs` (see the module docstring)."""
    results_file, module, function = SEED_TABLES[experiment]
    tables = getattr(importlib.import_module(module, __package__), function)
    return tables(load_runs(run_dirs, experiment, results_file), reference)


def report(result: CompareResult) -> str:
    lines = [result.table]
    if result.rows:
        flagged = mixed_samples(result.rows)
        if flagged:
            first = result.rows[0]["run"]
            lines.append(f"warning: the IWAE of {', '.join(flagged)} used another S than {first}'s; not comparable")
        other = other_data(result.rows)
        if other:
            first = result.rows[0]["run"]
            lines.append(f"warning: {', '.join(other)} trained on other data than {first}; not comparable")
    lines.append("wrote " + " and ".join(result.files))
    return "\n".join(lines)
