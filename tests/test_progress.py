"""Plain progress lines (stderr not a terminal): one per tenth of the work, counted in words."""

import sys

import ugvae.progress as progress_module
from ugvae.progress import plural, progress


def test_plain_lines_come_once_per_tenth_with_the_unit_in_the_right_number(monkeypatch, capsys):
    monkeypatch.setattr(progress_module, "DELAY_S", 0.0)
    for _ in progress(range(20), desc="work", unit="pass"):
        pass
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 10 and "\r" not in "".join(lines)
    assert lines[0].startswith("work: 10% (2/20 passes), ") and lines[-1].startswith("work: 100% (20/20 passes), ")
    for _ in progress(range(1), desc="one", unit="step"):
        pass
    assert capsys.readouterr().err.startswith("one: 100% (1/1 step), ")


def test_quick_work_and_quiet_runs_print_nothing(monkeypatch, capsys):
    for _ in progress(range(50), desc="quick", unit="step"):  # done before DELAY_S
        pass
    monkeypatch.setattr(progress_module, "DELAY_S", 0.0)
    progress_module.set_enabled(False)
    try:
        for _ in progress(range(50), desc="quiet", unit="step"):
            pass
    finally:
        progress_module.set_enabled(True)
    assert capsys.readouterr().err == ""


def test_plurals():
    assert [plural(1, "epoch"), plural(2, "epoch"), plural(0, "group")] == ["1 epoch", "2 epochs", "0 groups"]
    assert [plural(3, "pass"), plural(2, "batch"), plural(2, "feature set")] == [
        "3 passes",
        "2 batches",
        "2 feature sets",
    ]


def test_without_a_stderr_nothing_is_shown_and_nothing_reaches_stdout(monkeypatch, capsys):
    """Issue 29, fourth pass: with stderr closed (2>&-, or pythonw) sys.stderr is None; progress
    crashed on its isatty(), and print(file=None) would write to stdout."""
    monkeypatch.setattr(progress_module, "DELAY_S", 0.0)
    monkeypatch.setattr(sys, "stderr", None)
    progress_module.set_enabled(True)
    assert list(progress_module.progress(range(20), desc="work")) == list(range(20))
    assert capsys.readouterr().out == ""
