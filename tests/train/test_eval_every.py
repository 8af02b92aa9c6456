"""End-of-epoch evaluation every `eval_every` epochs and at the last: which epochs, what their rows
hold, where checkpoints fall, and exact resumes between evaluated epochs."""

import json
import os
import shutil
import signal
from dataclasses import replace

import pytest

from tests.helpers import checkpoint_steps, logged
from ugvae.errors import ConfigError, TrainingInterrupted
from ugvae.model import ModelConfig
from ugvae.train import fit, new_trainer, resume
from ugvae.train.book import RunBook
from ugvae.train.hooks import Hook
from ugvae.trained import TrainConfig
from ugvae.trained.checkpoint import list_checkpoints
from ugvae.trained.metrics import read_metrics

TEST_COLUMNS = ("test_elbo", "clusters_used", "beta_kl", "beta_active_dims", "pixel_change_beta")
MODEL = ModelConfig(x_shape=(1, 28, 28), z_dim=2, beta_dim=2, K=3, hidden=16)
# 15 steps per epoch; epochs 2, 4 and 5 (1-based) evaluated; a checkpoint every 5 steps.
CFG = TrainConfig(
    dataset="synthetic:120", epochs=5, group_size=8, eval_every=2, log_every=3, checkpoint_every=5, keep_checkpoints=50
)


def evaluated_epochs(epochs: int, eval_every: int) -> list[int]:
    """0-based indices of the epochs whose ends a run of `epochs` evaluates."""
    book = RunBook(
        epochs, steps_per_epoch=1, samples_per_step=1, log_every=1, checkpoint_every=10**6, eval_every=eval_every
    )
    evaluated = []
    while not book.finished:
        if book.evaluation_due:
            evaluated.append(book.epoch)
        book.next_epoch({})
    return evaluated


def test_every_eval_every_th_epoch_and_the_last_are_evaluated():
    assert evaluated_epochs(5, 2) == [1, 3, 4]
    assert evaluated_epochs(6, 3) == [2, 5]
    assert evaluated_epochs(3, 1) == [0, 1, 2]
    assert evaluated_epochs(2, 10) == [1]


def test_the_default_evaluates_about_twenty_epoch_ends_of_a_run():
    assert TrainConfig().evaluation_period == 10  # the default run: 200 epochs, 20 evaluations
    assert TrainConfig(epochs=4).evaluation_period == 1  # short runs: every epoch, as before
    assert TrainConfig(epochs=21).evaluation_period == 2
    assert TrainConfig(epochs=200, eval_every=1).evaluation_period == 1
    assert len(evaluated_epochs(200, TrainConfig().evaluation_period)) == 20


def test_eval_every_is_checked_by_name():
    with pytest.raises(ConfigError, match="`eval_every` must be between 1 and"):
        TrainConfig(eval_every=0)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    run_dir = fit(CFG, MODEL, runs_dir=str(tmp_path_factory.mktemp("runs"))).run_dir
    torch.set_num_threads(threads)
    return run_dir


def test_each_epoch_has_a_row_and_only_evaluated_ones_have_test_numbers(full):
    epochs = [r for r in logged(full) if r["kind"] == "epoch"]
    assert [int(r["epoch"]) for r in epochs] == [0, 1, 2, 3, 4]
    assert all(r["train_elbo"] for r in epochs)
    for row in epochs:
        evaluated = int(row["epoch"]) in (1, 3, 4)
        assert all(bool(row[column]) == evaluated for column in TEST_COLUMNS), row


def test_the_summary_holds_the_last_epochs_evaluation(full):
    summary = json.load(open(os.path.join(full, "summary.json")))
    last = [r for r in read_metrics(os.path.join(full, "metrics.csv")) if r["kind"] == "epoch"][-1]
    for column in TEST_COLUMNS:
        assert summary[column] == pytest.approx(last[column], rel=1e-9)
    assert summary["epochs"] == 5 and summary["steps"] == 75


def test_epoch_ends_checkpoint_where_evaluated_or_where_checkpoint_every_falls(full):
    # Steps 5, 10, ... mid-epoch; epoch ends 15, 45 (on the multiple of 5) and 30, 60, 75 (evaluated) too.
    assert checkpoint_steps(full) == list(range(5, 76, 5))
    ends = {15 * (e + 1) for e in range(5)}
    assert ends <= set(checkpoint_steps(full))
    sparse = fit(replace(CFG, checkpoint_every=7), MODEL, runs_dir=os.path.dirname(full) + "-sparse").run_dir
    assert [s for s in checkpoint_steps(sparse) if s in ends] == [30, 60, 75]  # 15 and 45 are no multiple of 7


def test_tensorboard_shows_the_evaluated_epochs(full):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(os.path.join(full, "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("test/elbo")] == [30, 60, 75]
    assert [e.step for e in events.Scalars("beta/kl")] == [30, 60, 75]
    assert [e.step for e in events.Scalars("train/epoch_elbo")] == [15, 30, 45, 60, 75]


@pytest.mark.parametrize("step", [20, 40, 45])
def test_a_run_resumed_between_evaluated_epochs_repeats_every_row(full, tmp_path, one_thread, step):
    # 20: mid-epoch before the first evaluation; 40: mid-epoch between the evaluated ends 30 and
    # 60; 45: the checkpoint of the end of an epoch that was not evaluated.
    cut = shutil.copytree(full, str(tmp_path / "cut"))
    for path in list_checkpoints(cut):
        if not path.endswith(f"step-{step:09d}.safetensors"):
            os.remove(path)
    assert checkpoint_steps(cut) == [step]
    resume(cut)
    assert logged(cut) == logged(full)
    assert checkpoint_steps(cut) == [s for s in checkpoint_steps(full) if s >= step]
    assert numbers(cut) == numbers(full)


def numbers(run_dir: str) -> dict:
    """summary.json without its wall-clock times."""
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    return {k: v for k, v in summary.items() if k not in ("train_seconds", "seconds_per_epoch")}


class SignalAtEpochEnd(Hook):
    """Sends this process SIGINT at the end of the epoch with 0-based index `epoch`."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, book, result):
        if book.epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGINT)


def test_a_signal_at_an_unevaluated_epoch_end_stops_at_a_checkpoint_there(full, tmp_path, one_thread):
    trainer = new_trainer(replace(CFG, checkpoint_every=1000), MODEL)
    run = trainer.start(run_dir=str(tmp_path / "stopped"))
    trainer.session.open_hooks()
    trainer.session.hooks.append(SignalAtEpochEnd(epoch=2))  # not evaluated, no checkpoint due there
    with pytest.raises(TrainingInterrupted, match="stopped at step 45"), run.lock(new=True):
        trainer.fit()
    assert checkpoint_steps(run.run_dir) == [30, 45]
    resume(run.run_dir)
    assert logged(run.run_dir) == logged(full)  # where checkpoints fall changes no number
    assert numbers(run.run_dir) == numbers(full)


@pytest.mark.slow
def test_lightning_evaluates_and_checkpoints_the_same_epochs(tmp_path, one_thread):
    pytest.importorskip("lightning")
    from ugvae.trained import LaunchConfig

    cfg = replace(CFG, epochs=3, checkpoint_every=7)
    single = fit(cfg, MODEL, runs_dir=str(tmp_path / "single")).run_dir
    one_cpu = LaunchConfig(strategy="auto", devices=1, accelerator="cpu")
    light = fit(cfg, MODEL, runs_dir=str(tmp_path / "lightning"), launch=one_cpu).run_dir
    assert logged(light) == logged(single)
    assert [bool(r["test_elbo"]) for r in logged(light) if r["kind"] == "epoch"] == [False, True, True]
    assert checkpoint_steps(light) == checkpoint_steps(single) == [7, 14, 21, 28, 30, 35, 42, 45]
