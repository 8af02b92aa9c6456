"""Run.history: metrics.csv as a pandas DataFrame, pandas imported only when asked for."""

import csv
import math
import os
import shutil
import subprocess
import sys

import pytest

from ugvae.errors import MissingPackage
from ugvae.trained import Run
from ugvae.trained.metrics import METRIC_FIELDS

pandas = pytest.importorskip("pandas")


def test_history_is_metrics_csv_with_steps_and_epochs_told_apart(small_run):
    history = Run.open(small_run).history
    rows = list(csv.DictReader(open(os.path.join(small_run, "metrics.csv"), newline="")))
    assert list(history.columns) == METRIC_FIELDS and len(history) == len(rows) > 1
    assert history["step"].dtype == "int64" and history["epoch"].dtype == "int64"
    assert history["kind"].tolist() == [r["kind"] for r in rows]
    for (_, got), want in zip(history.iterrows(), rows):
        for field in ("train_elbo", "test_elbo", "beta_kl"):
            value = float(want[field]) if want[field] else math.nan
            assert got[field] == pytest.approx(value, nan_ok=True), field
    epochs = history[history.kind == "epoch"]
    assert epochs["step"].tolist() == [5] and epochs["test_elbo"].notna().all()  # 40 images, groups of 8
    assert history[history.kind == "step"]["test_elbo"].isna().all()


def test_a_run_that_logged_nothing_has_an_empty_history(small_run, tmp_path):
    copy = shutil.copytree(small_run, tmp_path / "run")
    os.remove(copy / "metrics.csv")
    history = Run.open(str(copy)).history
    assert list(history.columns) == METRIC_FIELDS and history.empty


def test_without_pandas_history_says_how_to_get_it(small_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # what `import pandas` finds when it is not installed
    with pytest.raises(MissingPackage, match=r"`history` needs pandas.*pip install pandas") as raised:
        Run.open(small_run).history  # noqa: B018 (a property that reads)
    assert "\n" not in str(raised.value)


def test_opening_a_run_imports_no_pandas(small_run):
    code = (
        f"import sys, ugvae; run = ugvae.load_run({small_run!r}); assert 'pandas' not in sys.modules\n"
        "run.history; assert 'pandas' in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
