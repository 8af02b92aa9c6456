"""The whole-run benchmark times a tiny run by phase, and its phases add up to the run's wall time."""

import importlib.util
import json
import os

import pytest

from ugvae.bench.run import PhaseClock, instrument, main


@pytest.mark.slow
def test_every_phase_of_a_tiny_run_is_timed_and_they_add_up_to_its_wall_time(tmp_path, capsys):
    out = tmp_path / "run.json"
    runs_dir = tmp_path / "runs"
    flags = ["--hidden", "16", "--z-dim", "2", "--beta-dim", "2", "--K", "3", "-B", "8", "--quiet"]
    # clusters:ALPHA groups refresh their clusters at each epoch end once the warm-up epoch is over.
    groups = ["--groups", "clusters:1", "--group-warmup", "1", "--epochs", "3", "--checkpoint-every", "4"]
    argv = ["--dataset", "synthetic:200", *flags, *groups, "--runs-dir", str(runs_dir), "--json", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())

    phases = {row["phase"]: row for row in result["phases"]}
    tensorboard = importlib.util.find_spec("tensorboard") is not None
    expected = {
        "start-up: imports",
        "start-up: data",
        "start-up: set-up",
        "steps",
        "loop",
        "logging",
        "epoch end: test metrics",
        "epoch end: beta diagnostics",
        "epoch end: cluster refresh",
        "epoch end: metrics.csv",
        *(["epoch end: TensorBoard"] if tensorboard else []),
        "epoch end: other",
        "checkpoints",
        "end: summary",
        "end: figures",
        "end: printed report",
        "other",
    }
    assert set(phases) == expected and result["missing"] == [] and result["exit_code"] == 0
    assert sum(row["seconds"] for row in phases.values()) == pytest.approx(result["wall_s"], rel=0.02)
    assert sum(row["share"] for row in phases.values()) == pytest.approx(1, rel=0.02)
    assert all(row["seconds"] >= 0 for row in phases.values())

    (run_dir,) = os.listdir(runs_dir)
    summary = json.loads((runs_dir / run_dir / "summary.json").read_text())
    assert result["steps"] == summary["steps"] == phases["steps"]["calls"] > 0
    assert phases["epoch end: test metrics"]["calls"] == phases["epoch end: other"]["calls"] == 3
    assert phases["epoch end: cluster refresh"]["calls"] == 3  # the hook runs at every epoch end
    assert phases["checkpoints"]["calls"] >= 3 and phases["end: figures"]["calls"] == 1

    table = capsys.readouterr().out
    assert "ms a step" in table and "total (wall)" in table and "epoch end: test metrics" in table


def test_each_moment_counts_for_the_innermost_phase_open_then():
    ticks = iter([1.0, 3.0, 4.0, 8.0, 9.0, 12.0])
    clock = PhaseClock(0.0, now=lambda: next(ticks))
    with clock.phase("epoch end"):  # enters at 1: other 0-1
        with clock.phase("checkpoints"):  # enters at 3: epoch end 1-3
            pass  # leaves at 4: checkpoints 3-4
    # epoch end leaves at 8: epoch end 4-8
    with clock.phase("checkpoints"):  # enters at 9: other 8-9
        pass  # leaves at 12
    assert dict(clock.seconds) == {"other": 2.0, "epoch end": 6.0, "checkpoints": 4.0}
    assert list(clock.calls) == ["epoch end", "checkpoints"] and clock.calls["checkpoints"] == 2


def test_a_phase_whose_code_is_gone_is_named_as_missing(monkeypatch):
    from ugvae.train.session import Session

    monkeypatch.delattr(Session, "end_epoch")
    clock = PhaseClock(0.0)
    try:
        assert instrument(clock) == ["ugvae.train.session.Session.end_epoch"]
    finally:
        clock.unwrap()
    assert not hasattr(Session, "end_epoch") and "timed" not in Session.step.__code__.co_name
