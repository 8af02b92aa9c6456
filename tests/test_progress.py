"""Progress as logging records (progress.py): a line per tenth of the work, silenced and
redirected by logging alone, a tqdm bar only where ugvae's console is a terminal."""

import io
import logging
import os
import subprocess
import sys
import textwrap

import pytest

import ugvae.progress as progress_module
from ugvae.progress import Console, plural, progress


@pytest.fixture
def no_delay(monkeypatch):
    monkeypatch.setattr(progress_module, "DELAY_S", 0.0)


def progress_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ugvae.progress"]


def test_a_record_comes_once_per_tenth_with_the_unit_in_the_right_number(no_delay, caplog):
    with caplog.at_level(logging.INFO, logger="ugvae"):
        for _ in progress(range(20), desc="work", unit="pass"):
            pass
    lines = progress_lines(caplog)
    assert len(lines) == 10 and "\r" not in "".join(lines)
    assert lines[0].startswith("work: 10% (2/20 passes), ") and lines[-1].startswith("work: 100% (20/20 passes), ")
    state = caplog.records[-1].progress
    assert (state.desc, state.n, state.total, state.unit, state.on_bar) == ("work", 20, 20, "pass", False)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ugvae"):
        bar = progress(total=1, desc="one", unit="step")
        bar.set_postfix(elbo="-1.50")
        bar.update()
    assert progress_lines(caplog) == ["one: 100% (1/1 step), 0 s, elbo=-1.50"]


def test_quick_work_logs_nothing(caplog):
    with caplog.at_level(logging.INFO, logger="ugvae"):
        for _ in progress(range(50), desc="quick", unit="step"):  # done before DELAY_S
            pass
    assert progress_lines(caplog) == []


@pytest.mark.parametrize(
    "silence",
    [
        lambda: logging.getLogger("ugvae").setLevel(logging.WARNING),
        lambda: logging.getLogger("ugvae.progress").setLevel(logging.WARNING),
        lambda: progress_module.set_enabled(False),  # the older switch, now the same thing
    ],
)
def test_a_level_of_warning_silences_progress(no_delay, caplog, silence):
    package, own = logging.getLogger("ugvae").level, logging.getLogger("ugvae.progress").level
    try:
        silence()
        caplog.set_level(logging.DEBUG)  # the handler takes anything: the level of ugvae's logger decides
        for _ in progress(range(20), desc="quiet", unit="step"):
            pass
    finally:
        logging.getLogger("ugvae").setLevel(package)
        logging.getLogger("ugvae.progress").setLevel(own)
    assert progress_lines(caplog) == []


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_console_on_a_terminal_draws_a_bar_and_other_handlers_still_get_the_lines(no_delay, monkeypatch, caplog):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    console = Console()
    logging.getLogger("ugvae").addHandler(console)
    try:
        with caplog.at_level(logging.INFO, logger="ugvae"):
            work = progress(range(20), desc="bar", unit="step")
            assert work.bar is not None
            list(work)
            work.close()
            logging.getLogger("ugvae.notice").warning("a notice")
    finally:
        logging.getLogger("ugvae").removeHandler(console)
    drawn = terminal.getvalue()
    assert "\r" in drawn and "20/20" in drawn  # tqdm's frames
    assert "bar: 10% (2/20 steps)" not in drawn  # the console leaves the lines to the bar ...
    assert "a notice" in drawn  # ... but prints every other record
    assert len(progress_lines(caplog)) == 10 and all(r.progress.on_bar for r in caplog.records[:10])


def test_without_a_console_there_is_no_bar_even_on_a_terminal(no_delay, monkeypatch):
    # Under pytest the root logger has handlers: the fallback steps aside, so no console prints.
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert progress(range(3)).bar is None


def test_without_a_stderr_nothing_is_shown_and_nothing_reaches_stdout(no_delay, monkeypatch, capsys):
    """Issue 29, fourth pass: with stderr closed (2>&-, or pythonw) sys.stderr is None; progress
    crashed on its isatty(), and print(file=None) would write to stdout."""
    monkeypatch.setattr(sys, "stderr", None)
    console = Console()
    logging.getLogger("ugvae").addHandler(console)
    try:
        assert list(progress(range(20), desc="work")) == list(range(20))
    finally:
        logging.getLogger("ugvae").removeHandler(console)
    assert capsys.readouterr().out == ""


def test_plurals():
    assert [plural(1, "epoch"), plural(2, "epoch"), plural(0, "group")] == ["1 epoch", "2 epochs", "0 groups"]
    assert [plural(3, "pass"), plural(2, "batch"), plural(2, "feature set")] == [
        "3 passes",
        "2 batches",
        "2 feature sets",
    ]


# A process of its own, with the installed package: logging as a user's script finds it, without pytest's handlers.
SCRIPT = textwrap.dedent(
    """
    import io, logging, sys
    import ugvae
    import ugvae.progress
    ugvae.progress.DELAY_S = 0.0
    mode = sys.argv[1]
    if mode == "warning":
        logging.getLogger("ugvae").setLevel(logging.WARNING)
    redirected = io.StringIO()
    if mode == "handler":
        logging.getLogger("ugvae").addHandler(logging.StreamHandler(redirected))
    run = ugvae.fit(dataset="synthetic:40", epochs=1, group_size=8, z_dim=2, beta_dim=2, K=3, hidden=8,
                    runs_dir=sys.argv[2])
    print(redirected.getvalue(), end="")
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["default", "warning", "handler"])
def test_a_script_silences_or_redirects_progress_by_logging_alone(tmp_path, mode):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), mode, str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    steps = [line for line in result.stderr.splitlines() if "% (" in line and " steps)" in line]
    redirected = [line for line in result.stdout.splitlines() if "% (" in line]
    if mode == "default":  # a script that configured no logging sees the lines on stderr
        assert len(steps) == 5 and steps[-1].split(": ", 1)[1].startswith("100% (5/5 steps)")
    elif mode == "warning":
        assert steps == [] and redirected == []
    else:  # its own handler takes them, and the fallback steps aside: nothing twice
        assert steps == [] and len(redirected) == 5
