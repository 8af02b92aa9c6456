"""The user's Lightning logger (train/lightning.py `LoggedNumbers`): it receives the rows of
metrics.csv, one for one, through LightningModule.log, on one process and on two; callbacks see
the numbers; a resumed run logs from its checkpoint on; misuse is one line before any work."""

import csv
import os

import pytest

pytest.importorskip("lightning")

from lightning.pytorch import Callback  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402

from ugvae.errors import ConfigError  # noqa: E402
from ugvae.model import ModelConfig  # noqa: E402
from ugvae.train import fit, resume  # noqa: E402
from ugvae.trained import LaunchConfig, TrainConfig  # noqa: E402
from ugvae.trained.metrics import logged_scalars, read_metrics  # noqa: E402

pytestmark = pytest.mark.slow  # Lightning's start-up costs a few seconds per run

MODEL = ModelConfig(x_shape=(1, 8, 8), z_dim=2, beta_dim=2, K=3, hidden=16)
ONE_CPU = LaunchConfig(strategy="auto", devices=1, accelerator="cpu")


def tiny(**changes) -> TrainConfig:
    fields = dict(dataset="synthetic:96", image_size=8, epochs=2, group_size=4, groups_per_step=2, log_every=5)
    return TrainConfig(**{**fields, **changes})


def logger_rows(logger: CSVLogger) -> list[dict]:
    """The rows a CSVLogger wrote, numbers parsed, empty cells left out."""
    with open(os.path.join(logger.log_dir, "metrics.csv"), newline="") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def assert_same_rows(run_dir: str, logged: list[dict], after_step: int = -1):
    """Every row of metrics.csv after `after_step` is one row of the logger, in order, with every number."""
    rows = [r for r in read_metrics(os.path.join(run_dir, "metrics.csv")) if r["step"] > after_step]
    assert len(logged) == len(rows) and {r["kind"] for r in rows} == {"step", "epoch"}
    for row, got in zip(rows, logged):
        want = {"step": row["step"], "epoch": row["epoch"], **logged_scalars(row)}
        assert got.keys() == want.keys()
        assert got == pytest.approx(want, rel=1e-12), row["kind"]


class SeenMetrics(Callback):
    """What a callback monitoring the run (EarlyStopping, ModelCheckpoint) reads at the end."""

    def on_train_end(self, trainer, module):
        self.seen = {k: float(v) for k, v in trainer.callback_metrics.items()}


def test_a_csv_logger_gets_the_rows_of_metrics_csv_and_callbacks_see_them(tmp_path, one_thread):
    logger, seen = CSVLogger(tmp_path, name="csv", version=0), SeenMetrics()
    run = fit(tiny(), MODEL, runs_dir=str(tmp_path / "runs"), launch=ONE_CPU, logger=logger, lightning_callbacks=[seen])
    assert_same_rows(run.run_dir, logger_rows(logger))
    last = read_metrics(run.path("metrics.csv"))[-1]
    assert last["kind"] == "epoch" and seen.seen["test/elbo"] == pytest.approx(last["test_elbo"], rel=1e-12)
    assert seen.seen["beta/kl"] == pytest.approx(last["beta_kl"], rel=1e-12)

    # Extended by an epoch with another logger: it gets the rows from the checkpoint on, and a list is taken.
    again = CSVLogger(tmp_path, name="resumed", version=0)
    resume(run.run_dir, epochs=3, logger=[again])
    assert_same_rows(run.run_dir, logger_rows(again), after_step=last["step"])


def test_two_processes_log_rank_zeros_numbers_once(tmp_path, one_thread):
    logger = CSVLogger(tmp_path, name="csv", version=0)
    launch = LaunchConfig(strategy="ddp_spawn", devices=2, accelerator="cpu")
    run = fit(tiny(epochs=1), MODEL, runs_dir=str(tmp_path / "runs"), launch=launch, logger=logger)
    assert_same_rows(run.run_dir, logger_rows(logger))


@pytest.mark.parametrize(
    "extra, field",
    [
        ({"logger": "csv"}, "`logger`"),
        ({"logger": []}, "`logger`"),
        ({"logger": object(), "launch": None}, "`launch`"),
        ({"datamodule": object()}, "`train_data`"),
    ],
)
def test_a_logger_or_datamodule_that_cannot_be_used_is_one_line_before_any_work(tmp_path, extra, field):
    with pytest.raises(ConfigError) as raised:
        fit(tiny(), MODEL, runs_dir=str(tmp_path), **{"launch": ONE_CPU, **extra})
    assert field in str(raised.value) and "\n" not in str(raised.value)
    assert os.listdir(tmp_path) == []
