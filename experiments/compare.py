"""One table of several runs: model, guide, data, training cost and the numbers of `evaluate`.

Train time comes from RUN_DIR/summary.json (written at the end of training), the test ELBO,
the IWAE bound and the clustering accuracy from RUN_DIR/eval.json, which is computed first
where it is missing, torn, or stale (made at an older step than the run's newest checkpoint).
Writes compare.md and compare.csv to --out (default: a new compare-<time> folder) and prints the
Markdown and where it wrote them.

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
import json
import os

import torch

from ..files import atomic_write_text
from ..guide import default_guide
from ..train import RunError
from ..train.checkpoints import list_checkpoints
from ..train.rundir import load_config
from .evaluate import evaluate_run, mean_and_stderr

COLUMNS = [
    "run",
    "model",
    "guide",
    "dataset",
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
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            payload = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path} is corrupt ({e}); delete it to compute it again") from None
    if not isinstance(payload, dict):
        raise RunError(f"{path} is corrupt (not a JSON object); delete it to compute it again")
    return payload


def newest_checkpoint_step(run_dir: str) -> int | None:
    """The step of the newest checkpoint file, read from its name."""
    paths = list_checkpoints(run_dir)
    return int(os.path.basename(paths[-1])[5:14]) if paths else None


def run_row(run_dir: str, samples: int = 100, device: str = "cpu") -> dict:
    """One table row; evaluates the run first if it has no eval.json."""
    _, train_cfg, _ = load_config(run_dir)
    summary = _read_json(os.path.join(run_dir, "summary.json"))
    if summary is None:
        raise RunError(f"{run_dir} has no summary.json: its training did not finish; resume it with --resume")
    eval_path = os.path.join(run_dir, "eval.json")
    try:
        scores = _read_json(eval_path)
    except RunError:
        scores = None  # a cache: a torn eval.json is computed again
    newest = newest_checkpoint_step(run_dir)
    step = scores.get("step") if scores else None
    if scores is not None and newest is not None and not (isinstance(step, int) and step >= newest):
        scores = None  # computed at an older checkpoint than the run's newest: stale
    scores = scores or evaluate_run(run_dir, samples, device)
    row = {
        "run": os.path.basename(os.path.normpath(run_dir)),
        "model": train_cfg.model,
        "guide": train_cfg.guide or default_guide(train_cfg.model),
        "dataset": train_cfg.dataset,
        "epochs": summary["epochs"],
        "train_s": summary["train_seconds"],
    }
    return {**row, **{k: scores.get(k) for k in COLUMNS + ["group_size", "iwae_per_test_group"] if k not in row}}


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

    from ..train.rundir import new_output_dir

    return new_output_dir(".", "compare-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))


def _cell(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(rows: list[dict]) -> str:
    head = [
        "run",
        "model",
        "guide",
        "dataset",
        "epochs",
        "train time (s)",
        "test ELBO",
        "IWAE log p(x)",
        "IWAE - first run",
        "cluster acc.",
        "clusters used",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    flagged = set(mixed_samples(rows))
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
            "comparable; evaluate again with one --samples.\n"
            if flagged
            else ""
        )
    )


def to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def add_arguments(parser):
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="trained runs, one table row each")
    parser.add_argument(
        "--out", default=None, metavar="DIR", help="where compare.md and compare.csv go; None: a new ./compare-TIME"
    )
    parser.add_argument("--samples", type=int, default=100, help="IWAE samples for runs not yet evaluated")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N], for runs not yet evaluated")


def run(args) -> int:
    rows = [run_row(r, args.samples, args.device) for r in args.runs]
    add_paired_differences(rows)
    out = args.out or default_out_dir()
    os.makedirs(out, exist_ok=True)
    table = markdown(rows)
    paths = os.path.join(out, "compare.md"), os.path.join(out, "compare.csv")
    atomic_write_text(paths[0], table)
    atomic_write_text(paths[1], to_csv(rows))
    print(table)
    flagged = mixed_samples(rows)
    if flagged:
        print(f"warning: the IWAE of {', '.join(flagged)} used another S than {rows[0]['run']}'s; not comparable")
    print(f"wrote {paths[0]} and {paths[1]}")
    return 0
