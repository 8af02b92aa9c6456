"""A killed run, resumed, repeats the losses of an uninterrupted one step for step (on the CPU)."""

import glob
import json
import os
import shutil
import signal
from dataclasses import replace

import pytest

from tests.helpers import TINY_RUN, checkpoint_steps, logged, signal_training
from tests.security.craft import plant
from ugvae import run
from ugvae.errors import ConfigError, RunError
from ugvae.model import ModelConfig
from ugvae.train import fit, resume
from ugvae.trained import Run, TrainConfig, load_run
from ugvae.trained.checkpoint import list_checkpoints
from ugvae.trained.metrics import MetricsLog, read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# 25 steps per epoch, 100 in all: long enough to be killed mid-run, a second or two to train.


@pytest.fixture
def tiny_run_cfgs():
    """15 steps per epoch of synthetic digits, 2 epochs, a model of a few thousand weights."""
    return (
        TrainConfig(dataset="synthetic:120", epochs=2, group_size=8, log_every=1, checkpoint_every=5),
        ModelConfig(x_shape=(1, 28, 28), z_dim=2, beta_dim=2, K=3, hidden=16),
    )


def kill_after_checkpoint(run_dir, min_step, timeout=120):
    """Train TINY_RUN into run_dir and SIGKILL it once a checkpoint of min_step or later exists."""
    returncode, err = signal_training(TINY_RUN, run_dir, min_step, timeout=timeout)
    assert returncode == -signal.SIGKILL, f"the run was not killed mid-run (rc {returncode}): {err[-500:]}"


@pytest.mark.slow
def test_sigkilled_run_resumes_with_the_same_losses(tmp_path, one_thread):
    killed, reference = str(tmp_path / "killed"), str(tmp_path / "reference")
    kill_after_checkpoint(killed, min_step=14)
    resumed_from = checkpoint_steps(killed)[-1]
    assert 14 <= resumed_from < 100 and not os.path.exists(os.path.join(killed, "summary.json"))

    assert run.main(["--resume", killed]) == 0
    assert run.main([*TINY_RUN, "--run-dir", reference]) == 0

    rows = logged(killed)
    assert [int(r["step"]) for r in rows if not r["test_elbo"]] == list(range(1, 101))  # none lost or repeated
    assert rows == logged(reference)
    assert os.path.isfile(os.path.join(killed, "summary.json"))


def test_resume_mid_epoch_and_mid_log_window_is_exact(tmp_path, one_thread, tiny_run_cfgs):
    # Checkpoints every 5 steps but logs every 3: the checkpoint of step 20 (epoch 1, step 5 in it)
    # holds two steps not yet logged and a partial epoch's loss.
    train_cfg, model_cfg = tiny_run_cfgs
    full = fit(
        replace(train_cfg, log_every=3, checkpoint_every=5, keep_checkpoints=10),
        model_cfg,
        runs_dir=str(tmp_path / "runs"),
    ).run_dir
    cut = shutil.copytree(full, str(tmp_path / "cut"))
    for path in list_checkpoints(cut):
        if not path.endswith("step-000000020.safetensors"):
            os.remove(path)
    resume(cut)
    assert logged(cut) == logged(full)


def test_resuming_a_finished_run_keeps_its_results(tmp_path, one_thread, tiny_run_cfgs):
    train_cfg, model_cfg = tiny_run_cfgs
    run_dir = fit(train_cfg, model_cfg, runs_dir=str(tmp_path)).run_dir
    before = open(os.path.join(run_dir, "metrics.csv")).read()
    os.remove(os.path.join(run_dir, "summary.json"))  # killed after its last checkpoint
    resume(run_dir)
    assert open(os.path.join(run_dir, "metrics.csv")).read() == before
    assert "test_elbo" in open(os.path.join(run_dir, "summary.json")).read()


def test_metrics_truncation_drops_later_and_torn_rows(tmp_path):
    log = MetricsLog(str(tmp_path / "metrics.csv"))
    for step in (1, 2, 3):
        log.write(step=step, epoch=0, train_elbo=-float(step))
    with open(log.path, "a") as f:
        f.write("1")  # a crash mid-append; read as a row it would pose as step 1
    log.truncate_after(2)
    assert [(r["step"], r["train_elbo"]) for r in read_metrics(log.path)] == [(1, -1.0), (2, -2.0)]
    assert glob.glob(str(tmp_path / "*tmp*")) == []


def test_ctrl_c_says_which_run_to_resume_from_which_step(tmp_path, capsys, monkeypatch, one_thread):
    from ugvae.train.loop import Trainer

    real_step, calls = Trainer.train_step, []

    def interrupted_at_step_10(self, idx):
        calls.append(idx)
        if len(calls) == 10:
            raise KeyboardInterrupt
        return real_step(self, idx)

    monkeypatch.setattr(Trainer, "train_step", interrupted_at_step_10)
    run_dir = str(tmp_path / "run")
    assert run.main([*TINY_RUN, "--run-dir", run_dir]) == 130
    err = capsys.readouterr().err
    assert err == (
        f"interrupted: training stopped at step 9; the last good checkpoint (step 7) is kept in {run_dir}; "
        f"continue with `ugvae --resume {run_dir}`\n"
    )


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_the_resumed_run_repeats_the_losses(tmp_path, one_thread):
    stopped, reference = str(tmp_path / "stopped"), str(tmp_path / "reference")
    returncode, err = signal_training(TINY_RUN, stopped, min_step=1, sig=signal.SIGTERM)
    assert returncode == 143, err[-2000:]
    steps = checkpoint_steps(stopped)
    assert steps[-1] < 100 and not os.path.exists(os.path.join(stopped, "summary.json"))
    # The checkpoint is at the step it stopped at, not only the last periodic one.
    assert err == (
        f"interrupted: training stopped at step {steps[-1]} by SIGTERM; the last good checkpoint "
        f"(step {steps[-1]}) is kept in {stopped}; continue with `python run.py --resume {stopped}`\n"
    )

    assert run.main(["--resume", stopped]) == 0
    assert run.main([*TINY_RUN, "--run-dir", reference]) == 0
    assert logged(stopped) == logged(reference)


def test_a_metrics_header_torn_by_a_crash_is_written_again(tmp_path, one_thread, tiny_run_cfgs):
    train_cfg, model_cfg = tiny_run_cfgs
    full = fit(replace(train_cfg, keep_checkpoints=10), model_cfg, runs_dir=str(tmp_path / "runs")).run_dir
    # Killed while writing the header of its first row: no row, and no checkpoint after step 5.
    cut = shutil.copytree(full, str(tmp_path / "cut"))
    for path in list_checkpoints(cut)[1:]:
        os.remove(path)
    os.remove(os.path.join(cut, "summary.json"))
    with open(os.path.join(cut, "metrics.csv"), "r+") as f:
        f.truncate(9)  # "step,epoc"
    resume(cut)
    assert logged(cut) == [r for r in logged(full) if int(r["step"]) > 5]  # the rows before it are lost
    os.remove(os.path.join(cut, "summary.json"))
    resume(cut)  # and later resumes still read the file
    assert read_metrics(os.path.join(cut, "metrics.csv"))[-1]["step"] == 30


def test_a_metrics_file_of_another_program_is_refused_not_appended_to(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("time,loss\n1,2\n")
    with pytest.raises(RunError, match="has the columns 'time,loss'.*move it aside"):
        MetricsLog(str(path))
    assert path.read_text() == "time,loss\n1,2\n"


def send_sigterm(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)


def test_a_second_signal_during_the_checkpoint_write_stops_cleanly(tmp_path, capsys, monkeypatch, one_thread):
    """Issue 22 (5): SIGTERM, then SIGTERM again while the checkpoint it asked for is written;
    the exit code is SIGTERM's, 143 (issue 29: it was Ctrl-C's 130)."""
    from ugvae.train.loop import Trainer
    from ugvae.trained.checkpoint import store

    real_step, real_write, calls = Trainer.train_step, store.write, []

    def step_then_terminate(self, idx):
        calls.append(idx)
        loss = real_step(self, idx)
        if len(calls) == 10:
            send_sigterm()
        return loss

    def write_and_terminate_midway(f, tensors, metadata):
        if len(calls) == 10:
            f.write(b"half a checkpoint")
            send_sigterm()
        real_write(f, tensors, metadata)

    monkeypatch.setattr(Trainer, "train_step", step_then_terminate)
    monkeypatch.setattr(store, "write", write_and_terminate_midway)
    run_dir = str(tmp_path / "run")
    assert run.main([*TINY_RUN, "--run-dir", run_dir]) == 143
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("interrupted: training stopped at step 10 by SIGTERM;")
    assert checkpoint_steps(run_dir) == [7]  # the one being written is left out, none is torn
    assert not glob.glob(os.path.join(run_dir, "checkpoints", "*tmp*"))


@pytest.mark.slow
@pytest.mark.parametrize("during", ["the last evaluation", "the report"])
def test_a_signal_at_the_end_of_training_is_honoured(tmp_path, capsys, monkeypatch, one_thread, during):
    """Issue 22 (5): SIGTERM during the final epoch's evaluation, or during the report drawn under
    the lock, stops with exit 143 after a checkpoint, and --resume finishes the run."""
    from ugvae.experiments import report
    from ugvae.train.hooks import TestMetrics

    if during == "the report":
        real_report = report.training_report
        monkeypatch.setattr(report, "training_report", lambda run: (send_sigterm(), real_report(run)))
    else:
        real_metrics = TestMetrics.on_epoch_end

        def metrics_then_terminate(self, book, result):
            real_metrics(self, book, result)
            if book.epoch == book.epochs - 1:
                send_sigterm()

        monkeypatch.setattr(TestMetrics, "on_epoch_end", metrics_then_terminate)
    run_dir = str(tmp_path / "run")
    assert run.main([*TINY_RUN, "--run-dir", run_dir]) == 143
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("interrupted: training stopped at step 100 by SIGTERM") and "--resume" in last
    assert checkpoint_steps(run_dir)[-1] == 100
    assert os.path.exists(os.path.join(run_dir, "samples.png")) == (during == "the report")  # whole, if drawn
    monkeypatch.undo()
    assert run.main(["--resume", run_dir, "--quiet"]) == 0
    assert os.path.isfile(os.path.join(run_dir, "summary.json")) and os.path.isfile(
        os.path.join(run_dir, "samples.png")
    )


@pytest.mark.parametrize("planted", ["a folder", "a link"])
def test_a_metrics_file_that_is_no_regular_file_is_refused_never_followed(tmp_path, one_thread, tiny_run_cfgs, planted):
    train_cfg, model_cfg = tiny_run_cfgs
    run_dir = fit(replace(train_cfg, epochs=1), model_cfg, runs_dir=str(tmp_path / "runs")).run_dir
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    path = os.path.join(run_dir, "metrics.csv")
    os.remove(path)
    os.mkdir(path) if planted == "a folder" else os.symlink(victim, path)
    with pytest.raises(RunError, match="metrics .* (is a folder|is a symbolic link).*move it aside"):
        resume(run_dir, epochs=2)
    assert victim.read_text() == "mine"


# -- issue 29: a failed command changes nothing; moved, deleted and never-checkpointed runs -----
def without_run_id(run_dir) -> str:
    path = os.path.join(run_dir, "config.json")
    config = json.load(open(path))
    theirs = config.pop("run_id")
    open(path, "w").write(json.dumps(config))
    return theirs


def test_a_failed_resume_never_changes_a_run_whose_config_lost_its_id(small_run, tmp_path, one_thread):
    """Bricking resume: main wrote a fresh id into config.json before failing, and from then on
    refused every checkpoint as another run's. Now nothing is written before the checkpoint loads,
    and the run takes the id its checkpoints carry."""
    run_dir = shutil.copytree(small_run, str(tmp_path / "run"))
    theirs = without_run_id(run_dir)
    before = open(os.path.join(run_dir, "config.json")).read()
    with pytest.raises(ConfigError, match="`epochs`"):
        resume(run_dir, epochs=0)
    assert run.main(["evaluate", "--run", run_dir, "--samples", "2"]) == 0  # reads, writes no id
    assert open(os.path.join(run_dir, "config.json")).read() == before
    resumed = resume(run_dir, epochs=2)
    assert resumed.run_id == theirs == json.load(open(os.path.join(run_dir, "config.json")))["run_id"]
    assert load_run(run_dir).step == 10


def test_a_run_stopped_before_its_first_checkpoint_trains_from_the_start_in_place(tmp_path, one_thread, tiny_run_cfgs):
    """D16: such a run could be neither resumed nor re-created in place on main."""
    train_cfg, model_cfg = tiny_run_cfgs
    full = fit(train_cfg, model_cfg, runs_dir=str(tmp_path / "runs")).run_dir
    cut = shutil.copytree(full, str(tmp_path / "cut"))
    # Killed at step 4, before its first checkpoint (step 5): config.json and 4 logged rows are left.
    shutil.rmtree(os.path.join(cut, "checkpoints"))
    os.remove(os.path.join(cut, "summary.json"))
    with open(os.path.join(cut, "metrics.csv")) as f:
        rows = f.readlines()[:5]
    open(os.path.join(cut, "metrics.csv"), "w").write("".join(rows))
    assert run.main(["--resume", cut, "--quiet"]) == 0
    assert logged(cut) == logged(full)
    assert json.load(open(os.path.join(cut, "config.json")))["run_id"] == Run.open(full).run_id  # the same run


def test_a_run_with_only_set_aside_checkpoints_is_not_trained_again(small_run, tmp_path):
    run_dir = shutil.copytree(small_run, str(tmp_path / "run"))
    for path in list_checkpoints(run_dir):
        os.rename(path, path + ".unreadable")
    with pytest.raises(RunError, match="has no readable checkpoint to resume from"):
        resume(run_dir, epochs=2)


def stop_at_step(monkeypatch, step, action):
    from ugvae.train.loop import Trainer

    real_step, calls = Trainer.train_step, []

    def act_then_step(self, idx):
        calls.append(idx)
        if len(calls) == step:
            action()
        return real_step(self, idx)

    monkeypatch.setattr(Trainer, "train_step", act_then_step)


@pytest.mark.slow
def test_a_run_moved_while_it_trains_stops_after_a_checkpoint_in_its_new_place(
    tmp_path, monkeypatch, capsys, one_thread
):
    """D7: on main, later checkpoints went to a re-created stray OLD/checkpoints/."""
    run_dir, moved, reference = str(tmp_path / "run"), str(tmp_path / "moved"), str(tmp_path / "reference")
    stop_at_step(monkeypatch, 9, lambda: os.rename(run_dir, moved))
    assert run.main([*TINY_RUN, "--run-dir", run_dir]) == 130
    assert capsys.readouterr().err == (
        f"interrupted: the run directory {run_dir} was moved to {moved} while it trained; training stopped at "
        f"step 9 after a checkpoint there; continue with `ugvae --resume {moved}`\n"
    )
    assert not os.path.exists(run_dir) and checkpoint_steps(moved) == [7, 9]
    monkeypatch.undo()
    assert run.main(["--resume", moved]) == 0
    assert run.main([*TINY_RUN, "--run-dir", reference]) == 0
    assert logged(moved) == logged(reference)


def test_a_run_deleted_while_it_trains_stops_in_one_line(tmp_path, monkeypatch, capsys, one_thread):
    """D7: on main, the deleted run came back as a stray folder of later checkpoints."""
    run_dir = str(tmp_path / "run")
    stop_at_step(monkeypatch, 9, lambda: shutil.rmtree(run_dir))
    assert run.main([*TINY_RUN, "--run-dir", run_dir]) == 2
    assert capsys.readouterr().err == (
        f"error: the run directory {run_dir} was deleted while it trained (or moved where ugvae cannot name it); "
        "training stopped at step 9\n"
    )
    assert not os.path.exists(run_dir)


def test_a_checkpoint_of_another_number_of_processes_is_refused_by_name(run_copy):
    """L: a 2-process run resumed on 1 process silently doubled the steps per epoch on main."""

    def two_processes(checkpoint):
        config = {**checkpoint.config, "lightning": {"world_size": 2}}
        return replace(checkpoint, steps_per_epoch=2, epoch=3, step_in_epoch=0, epoch_loss=(0.0, 0), config=config)

    plant(run_copy, 6, edit_checkpoint=two_processes)
    with pytest.raises(RunError, match=r"made with 2 steps per epoch, but this session has 5 \(the run trained on 2 "):
        resume(run_copy, epochs=4)
