"""One writer per run directory: a second one is refused naming the first; a dead one never blocks."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from ugvae import run
from ugvae.model import ModelConfig
from ugvae.train import fit
from ugvae.trained import TrainConfig
from ugvae.trained.lock import RunLocked, run_lock

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from ugvae.trained.lock import run_lock

    with run_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(120)
""")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    cfg = TrainConfig(dataset="synthetic:40", epochs=1, group_size=8)
    model_cfg = ModelConfig(x_shape=(1, 28, 28), z_dim=2, beta_dim=2, K=3, hidden=8)
    return fit(cfg, model_cfg, runs_dir=str(tmp_path_factory.mktemp("runs"))).run_dir


@pytest.fixture
def holder(finished_run):
    """Another process holding the run's lock."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, finished_run], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline() == "locked\n"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


@pytest.mark.parametrize(
    "command", [["--resume", "{run}"], ["evaluate", "--run", "{run}", "--samples", "2"]], ids=["resume", "evaluate"]
)
@pytest.mark.slow
def test_a_second_writer_exits_2_naming_the_holder(finished_run, holder, capsys, command):
    assert run.main([a.format(run=finished_run) for a in command]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"is in use by process {holder.pid}" in err
    assert not os.path.exists(os.path.join(finished_run, "eval.json"))


def test_a_lock_left_by_a_killed_process_never_blocks(finished_run, holder):
    with pytest.raises(RunLocked):
        with run_lock(finished_run):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with run_lock(finished_run):
        assert open(os.path.join(finished_run, ".lock")).read() == str(os.getpid())


def test_the_lock_is_reentrant_within_a_process(finished_run):
    with run_lock(finished_run), run_lock(finished_run):
        pass
    with run_lock(finished_run):  # and released after both
        pass


def test_a_folder_that_is_no_run_gets_no_lock_file(tmp_path):
    with run_lock(str(tmp_path)):
        pass
    assert os.listdir(tmp_path) == []
