"""The run lock between threads of one process (issue 29, D17) and a hard link planted at
RUN/.lock (issue 29, `st_nlink == 1`)."""

import os
import threading

import pytest

from ugvae.errors import RunError, RunLocked
from ugvae.experiments.commands.evaluate import EvaluateSettings, evaluate_run
from ugvae.trained import Run
from ugvae.trained.lock import run_lock


def in_thread(target):
    """Run `target` in a new thread; returns (thread, what it raised or returned)."""
    outcome = {}

    def body():
        try:
            outcome["value"] = target()
        except BaseException as e:  # the test inspects it
            outcome["error"] = e

    thread = threading.Thread(target=body)
    thread.start()
    return thread, outcome


def test_a_second_thread_is_refused_like_a_second_process(run_copy):
    """D17: on 72f652f the lock was re-entrant for the whole process, so both threads wrote."""
    holding, release = threading.Event(), threading.Event()

    def hold():
        with run_lock(run_copy):
            holding.set()
            release.wait(30)

    holder, outcome = in_thread(hold)
    assert holding.wait(30)
    try:
        with pytest.raises(RunLocked, match=r"in use by another thread of this process \(\d+\)"):
            with run_lock(run_copy):
                pass
        with pytest.raises(RunLocked):  # and again: a refusal leaves the holder's lock as it was
            with run_lock(run_copy):
                pass
    finally:
        release.set()
        holder.join(30)
    assert outcome == {"value": None}
    with run_lock(run_copy):  # free once the holder let go
        with run_lock(run_copy):  # and re-entrant within one thread (evaluate inside compare)
            assert os.path.isfile(os.path.join(run_copy, ".lock"))
    assert not os.path.exists(os.path.join(run_copy, ".lock"))


def test_two_threads_evaluating_one_run_one_is_refused_the_other_writes(run_copy):
    """D17: two threads of one process writing the same run: one RunLocked, one eval.json."""
    started, proceed = threading.Event(), threading.Event()
    real_evaluate = Run.evaluate

    def slow_evaluate(self, *args, **kwargs):
        started.set()
        proceed.wait(30)
        return real_evaluate(self, *args, **kwargs)

    def evaluate():
        run = Run.open(run_copy)
        run.evaluate = slow_evaluate.__get__(run)
        with run.lock():
            return evaluate_run(run, EvaluateSettings(samples=2))

    first, first_outcome = in_thread(evaluate)
    assert started.wait(60)
    second, second_outcome = in_thread(lambda: evaluate_run(Run.open(run_copy), EvaluateSettings(samples=2)))
    second.join(60)
    proceed.set()
    first.join(60)
    assert isinstance(second_outcome.get("error"), RunLocked), second_outcome
    assert first_outcome["value"]["written"] == os.path.join(run_copy, "eval.json")


def test_a_hard_link_at_the_lock_note_is_refused_and_its_file_kept(run_copy, tmp_path):
    """`.lock` must be a regular file with one link: on 72f652f a hard link planted there to
    another file of the same filesystem had that file cut to the writer's PID."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious data\n")
    os.link(victim, os.path.join(run_copy, ".lock"))
    with pytest.raises(RunError, match=r"\.lock has 2 links: a hard link to another file.*remove it"):
        with run_lock(run_copy):
            pass
    assert victim.read_text() == "precious data\n"
