"""metrics.csv: the numbers logged during training (train/hooks.py), a row per logged window and per epoch.

`kind` tells the two apart: a `step` row holds the train ELBO of the window of steps up to
`step`; an `epoch` row, written when the epoch with 0-based index `epoch` ends, holds its mean
train ELBO and, where the epoch was evaluated (every `eval_every`-th and the last), its test
numbers. `history` reads it as a pandas DataFrame (`Run.history`), where `df[df.kind == "epoch"]`
are the epochs. Logs of earlier versions, which had no `kind` and evaluated every epoch, are
widened in place (the rows with a test ELBO are the epochs).

Loggers outside the run (TensorBoard, the Lightning loggers a user passes) get the same numbers
under names that say which row they belong to (`logged_scalars`): a step row's train ELBO is
train/elbo, an epoch row's train/epoch_elbo, its test numbers test/..., its beta diagnostics
beta/..., its wall-clock time train/elapsed_s.

Rows are appended whole or not at all (files.py `append_whole`: a full disk mid-row leaves the
file as it was); a kill mid-append can still leave a torn last line, which a resume drops, and a
crash while the header was written leaves a torn header, which the next writer rewrites (the
file holds no rows then). A file with another header is refused rather than appended to.
"""

from __future__ import annotations

import csv
import io
import math
import os

from ..errors import MissingPackage, RunError
from ..files import NotARegularFile, append_whole, atomic_write_bytes, open_regular

METRIC_FIELDS = [
    "step",
    "epoch",
    "kind",
    "train_elbo",
    "test_elbo",
    "cluster_entropy",
    "clusters_used",
    "clusters_used_argmax",
    # beta diagnostics on test groups (trained/diagnostics.py)
    "beta_kl",
    "beta_mi",
    "beta_mi_bound",
    "beta_marginal_kl",
    "beta_active_dims",
    "beta_spread",
    "pixel_change_beta",
    "pixel_change_z",
    "elapsed_s",
]


class MetricsLog:
    """Appends rows to RUN_DIR/metrics.csv; a row per logged step and a fuller one per epoch."""

    HEADER = ",".join(METRIC_FIELDS) + "\r\n"  # as csv.DictWriter writes it

    def __init__(self, path: str):
        self.path = path
        header = ""
        if os.path.lexists(path):
            first, newline, _ = self._text().partition("\n")
            header = first + newline
        if header.rstrip("\r\n") == self.HEADER.rstrip("\r\n"):
            return
        columns = header.strip().split(",")
        if header.endswith("\n") and set(columns) < set(METRIC_FIELDS) and columns[:2] == ["step", "epoch"]:
            self._widen(columns)  # a log of an earlier version, which had fewer columns
            return
        if header.endswith("\n") and header.strip():
            raise RunError(
                f"{path} has the columns {header.strip()!r}, not those of this package's metrics; "
                "move it aside to start a new log"
            )
        # No file, or one cut inside its header (then it holds no row yet): write the header whole.
        atomic_write_bytes(path, self.HEADER.encode())

    def _text(self) -> str:
        """The log's text; a link, FIFO or folder in its place is refused, never followed."""
        try:
            with open_regular(self.path, "metrics") as f:
                return f.read().decode("utf-8", errors="replace")
        except NotARegularFile as e:
            raise RunError(f"{e}; move it aside to start a new log") from None

    def _widen(self, columns: list[str]):
        rows = list(csv.DictReader(io.StringIO(self._text(), newline="")))
        complete = [r for r in rows if None not in r.values()]  # drops a line torn mid-append
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, METRIC_FIELDS)
        writer.writeheader()
        writer.writerows({**{k: r.get(k, "") for k in METRIC_FIELDS}, "kind": row_kind(r)} for r in complete)
        atomic_write_bytes(self.path, buffer.getvalue().encode())

    def write(self, **row):
        line = io.StringIO(newline="")
        csv.DictWriter(line, METRIC_FIELDS).writerow({k: row.get(k, "") for k in METRIC_FIELDS})
        try:
            append_whole(self.path, line.getvalue().encode("utf-8"), "metrics")
        except NotARegularFile as e:
            raise RunError(f"{e}; move it aside to start a new log") from None

    def truncate_after(self, step: int):
        """Drop rows logged after `step`: a resumed run logs those steps again.

        The rewrite is atomic, and a last line torn by a crash mid-append (no newline) is dropped.
        """
        lines = self._text().splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines.pop()
        kept = [line for line in lines[1:] if line.split(",", 1)[0].isdigit() and int(line.split(",", 1)[0]) <= step]
        atomic_write_bytes(self.path, "".join(lines[:1] + kept).encode())


def logged_scalars(row: dict) -> dict[str, float]:
    """The numbers of a metrics.csv row (a dict with `kind`) by the names loggers outside the run
    get them (module docstring); missing ones, NaN and anything not a number are left out."""
    scalars = {}
    for key, value in row.items():
        if key in ("step", "epoch", "kind") or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if value != value:  # NaN: a number nobody could plot
            continue
        if key == "train_elbo":
            name = "train/elbo" if row["kind"] == "step" else "train/epoch_elbo"
        elif key == "elapsed_s":
            name = "train/elapsed_s"
        elif key.startswith(("beta_", "pixel_change")):
            name = f"beta/{key.removeprefix('beta_')}"
        else:
            name = f"test/{key.removeprefix('test_')}"
        scalars[name] = value
    return scalars


def row_kind(row: dict) -> str:
    """`kind` of a row, also of a log written before the column existed (only epochs have a test ELBO)."""
    return row.get("kind") or ("epoch" if row.get("test_elbo") not in ("", None) else "step")


def read_metrics(path: str) -> list[dict]:
    """Rows of a metrics.csv with numbers parsed (missing values as NaN). Lines torn by a crash,
    or damaged by hand (a value that is no number), are left out: the log serves figures and
    tables, and one bad line must not cost the rest."""
    try:
        with open_regular(path, "metrics") as f:
            text = f.read().decode("utf-8", errors="replace")
    except NotARegularFile as e:
        raise RunError(f"{e}; move it aside") from None
    out = []
    for r in csv.DictReader(io.StringIO(text, newline="")):
        if not (r.get("step") or "").isdigit() or not (r.get("epoch") or "").isdigit():
            continue  # a line torn by a crash mid-append
        numbers = {k: v for k, v in r.items() if k in METRIC_FIELDS and k != "kind"}
        try:
            parsed = {k: (float(v) if v not in ("", None) else math.nan) for k, v in numbers.items()}
        except ValueError:
            continue
        parsed["step"], parsed["epoch"], parsed["kind"] = int(parsed["step"]), int(parsed["epoch"]), row_kind(r)
        out.append(parsed)
    return out


def history(path: str):
    """metrics.csv at `path` as a pandas DataFrame of the columns METRIC_FIELDS, rows as
    `read_metrics` parses them (missing numbers NaN; `step` and `epoch` whole numbers); no rows
    where nothing was logged yet. pandas is no dependency of ugvae: it is imported here."""
    try:
        import pandas
    except ImportError:
        raise MissingPackage(
            "`history` needs pandas, which ugvae does not install: pip install pandas "
            "(ugvae.trained.metrics.read_metrics reads metrics.csv as dicts without it)"
        ) from None
    rows = read_metrics(path) if os.path.lexists(path) else []
    return pandas.DataFrame(rows, columns=METRIC_FIELDS).astype({"step": "int64", "epoch": "int64", "kind": str})
