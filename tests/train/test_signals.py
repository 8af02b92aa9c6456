"""Signals during training (train/loop.py `stop_on_signals`, issue 29): SIGHUP stops with a
checkpoint like SIGTERM, a signal ignored on entry stays ignored, and the exit code follows the
signal (128 + its number)."""

import os
import signal

import pytest

from tests.helpers import checkpoint_steps, logged, signal_training, tiny_flags
from ugvae import run
from ugvae.train.loop import stop_on_signals

TINY_RUN = [*tiny_flags("synthetic:200", epochs=4), "--log-every", "1", "--checkpoint-every", "7"]


@pytest.mark.slow
def test_sighup_writes_a_checkpoint_and_exits_129(tmp_path, one_thread):
    """On 72f652f a closed terminal (SIGHUP) killed training without the checkpoint SIGTERM gets."""
    hung_up, reference = str(tmp_path / "hung-up"), str(tmp_path / "reference")
    returncode, err = signal_training(TINY_RUN, hung_up, min_step=1, sig=signal.SIGHUP)
    assert returncode == 129, err[-2000:]
    steps = checkpoint_steps(hung_up)
    assert steps[-1] < 100
    assert err.startswith(f"interrupted: training stopped at step {steps[-1]} by SIGHUP; the last good checkpoint")
    assert run.main(["--resume", hung_up, "--quiet"]) == 0
    assert run.main([*TINY_RUN, "--run-dir", reference]) == 0
    assert logged(hung_up) == logged(reference)


def test_a_second_signal_is_noted_and_stops_at_once():
    outside = []  # a SIGHUP the block does not take lands here, not in the test process's death
    previous = signal.signal(signal.SIGHUP, lambda signum, frame: outside.append(signum))
    try:
        with stop_on_signals() as stops:
            os.kill(os.getpid(), signal.SIGHUP)
            assert stops == [signal.SIGHUP]
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert stops == [signal.SIGHUP, signal.SIGTERM] and outside == []  # the exit code follows the last: 143


def test_a_signal_ignored_on_entry_stays_ignored(monkeypatch):
    """`nohup` ignores SIGHUP; a shell ignores SIGINT in background jobs: training must not undo that."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with stop_on_signals() as stops:
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)
        assert stops == []
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)
