"""`threads`: its default, its checks, and that training, a resume and every command compute with it
and give the caller's count back."""

import json
import os

import pytest
import torch

from tests.helpers import tiny_flags
from ugvae import run
from ugvae.errors import ConfigError
from ugvae.experiments.cli import COMMANDS, EXPERIMENTS
from ugvae.model import ModelConfig
from ugvae.train import fit, resume
from ugvae.trained import TrainConfig
from ugvae.trained.threads import default_threads, resolve_threads, using_threads

TINY = ModelConfig(x_shape=(1, 28, 28), z_dim=2, beta_dim=2, K=3, hidden=8)


@pytest.fixture
def threads_kept():
    """The test may change torch's thread count: it is put back after."""
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def sessions_threads(run_dir: str) -> list[int]:
    sessions = json.load(open(os.path.join(run_dir, "environment.json")))["sessions"]
    return [s["threads"] for s in sessions]


def test_the_default_is_one_thread_unless_the_environment_asks_for_more(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert default_threads() == 1 and default_threads(processes=4) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "6")
    assert default_threads() == 6
    assert default_threads(processes=4) == 1 and default_threads(processes=3) == 2  # processes divide them
    for unusable in ("", "0", "two", "-1"):
        monkeypatch.setenv("OMP_NUM_THREADS", unusable)
        assert default_threads() == 1


def test_a_count_is_kept_and_a_bad_one_is_named(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert resolve_threads(3) == 3 and resolve_threads(None) == 1
    for bad in (0, -2, True, 2.0, "2"):
        with pytest.raises(ConfigError, match="`threads` must be a whole number from 1 to"):
            resolve_threads(bad)
    with pytest.raises(ConfigError, match="`threads` must be between 1 and"):
        TrainConfig(threads=0)


def test_using_threads_gives_the_count_back_also_after_an_error(threads_kept):
    torch.set_num_threads(1)
    with pytest.raises(RuntimeError), using_threads(2) as count:
        assert count == 2 and torch.get_num_threads() == 2
        raise RuntimeError
    assert torch.get_num_threads() == 1


def test_fit_and_resume_train_with_their_threads_and_give_the_count_back(tmp_path, threads_kept):
    torch.set_num_threads(1)
    cfg = TrainConfig(dataset="synthetic:40", epochs=1, group_size=8, threads=2)
    trained = fit(cfg, TINY, runs_dir=str(tmp_path))
    assert torch.get_num_threads() == 1
    assert sessions_threads(trained.run_dir) == [2]
    assert json.load(open(trained.path("config.json")))["train"]["threads"] == 2

    resume(trained.run_dir, epochs=2, threads=3)  # this session's count; the config keeps its own
    assert sessions_threads(trained.run_dir) == [2, 3]
    assert json.load(open(trained.path("config.json")))["train"]["threads"] == 2
    resume(trained.run_dir, epochs=3)
    assert sessions_threads(trained.run_dir) == [2, 3, 2]
    assert torch.get_num_threads() == 1
    with pytest.raises(ConfigError, match="`threads`"):
        resume(trained.run_dir, threads=0)


def test_the_command_line_takes_threads_for_a_run_and_its_resume(tmp_path, threads_kept):
    run_dir = str(tmp_path / "run")
    assert run.main([*tiny_flags(), "--threads", "2", "--run-dir", run_dir]) == 0
    assert run.main(["--resume", run_dir, "--epochs", "2", "--threads", "1"]) == 0
    assert sessions_threads(run_dir) == [2, 1]


def test_a_bad_thread_count_is_one_line_naming_the_flag(tmp_path, capsys):
    assert run.main([*tiny_flags(), "--threads", "0", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--threads must be between 1 and" in err
    assert not os.path.exists(tmp_path / "run")


def test_every_command_takes_threads_and_computes_with_them(small_run, monkeypatch, threads_kept, capsys):
    parser = run.build_parser()
    for name in [*COMMANDS, *(f"experiment {e}" for e in EXPERIMENTS)]:
        sub = parser
        for word in name.split():
            sub = next(a for a in sub._actions if a.dest in ("command", "experiment")).choices[word]
        computes = name not in COMMANDS or COMMANDS[name].computes  # upgrade computes nothing
        assert ("--threads" in sub.format_help()) == computes, name

    from ugvae.experiments.commands import evaluate

    seen = []
    monkeypatch.setattr(evaluate, "evaluate_run", lambda run, settings: seen.append(torch.get_num_threads()) or {})
    monkeypatch.setattr(evaluate, "report", lambda result: "")
    torch.set_num_threads(1)
    assert run.main(["evaluate", "--run", small_run, "--device", "cpu", "--threads", "2"]) == 0
    assert seen == [2] and torch.get_num_threads() == 1
