"""metrics.csv: step rows and epoch rows told apart by `kind`, and older logs widened to it."""

import csv
import os
import shutil

import pytest

from tests.helpers import tiny_train
from ugvae.trained.metrics import METRIC_FIELDS, MetricsLog, read_metrics

FIXTURE_V1 = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "run-v1")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return tiny_train(tmp_path_factory, "ugvae")


def test_every_row_says_whether_it_is_a_step_or_an_epoch(trained):
    rows = list(csv.DictReader(open(os.path.join(trained, "metrics.csv"))))
    assert {r["kind"] for r in rows} == {"step", "epoch"}
    assert all((r["kind"] == "epoch") == (r["test_elbo"] != "") for r in rows)
    epochs = [r for r in read_metrics(os.path.join(trained, "metrics.csv")) if r["kind"] == "epoch"]
    assert len(epochs) == 1 and epochs[0]["step"] == 10  # 200 images in steps of 5 groups of 4


def test_a_log_written_before_kind_existed_is_widened_with_the_kinds(tmp_path):
    path = shutil.copy(os.path.join(FIXTURE_V1, "metrics.csv"), tmp_path / "metrics.csv")
    header = open(path).readline().strip().split(",")
    assert "kind" not in header
    before = read_metrics(path)
    MetricsLog(str(path))  # what a resumed run does first
    assert open(path).readline().strip().split(",") == METRIC_FIELDS
    after = read_metrics(path)
    assert [r["kind"] for r in after] == ["epoch" if r["test_elbo"] == r["test_elbo"] else "step" for r in before]
    assert [r["step"] for r in after] == [r["step"] for r in before]


def test_tensorboard_holds_every_number_of_the_epoch_rows(trained):
    """Issue 20 (6): the beta diagnostics and test metrics reach TensorBoard too, not only metrics.csv."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(os.path.join(trained, "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/elbo", "train/epoch_elbo", "test/elbo", "test/cluster_entropy", "test/clusters_used"} <= tags
    assert {"beta/kl", "beta/mi", "beta/marginal_kl", "beta/active_dims", "beta/pixel_change_beta"} <= tags
    epochs = [r for r in read_metrics(os.path.join(trained, "metrics.csv")) if r["kind"] == "epoch"]
    assert events.Scalars("test/elbo")[-1].value == pytest.approx(epochs[-1]["test_elbo"], rel=1e-5)
