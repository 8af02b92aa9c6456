"""RUN/tensorboard/: never written through a link out of the run (issue 29 D18), and a failure to
write events is handled like every other file of a run: a full disk is one line, anything else
one warning, and tensorboard's writer thread never prints a traceback of its own."""

import errno
import json
import logging
import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT, fill, one_thread_env, run_python
from ugvae.errors import DiskFull
from ugvae.trained.tensorboard import Events, summary_writer

pytest.importorskip("torch.utils.tensorboard")


class FailingWriter:
    """A SummaryWriter whose writes fail with `error`, as tensorboard raises its thread's error again."""

    def __init__(self, log_dir, error):
        self.log_dir, self.error, self.calls, self.closed = str(log_dir), error, 0, False

    def add_scalar(self, *args):
        self.calls += 1
        raise self.error

    def close(self):
        self.closed = True


def test_a_tensorboard_folder_linked_out_of_the_run_gets_no_events(tmp_path, caplog):
    outside = tmp_path / "outside"
    outside.mkdir()
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(outside, run / "tensorboard")
    with caplog.at_level(logging.WARNING):
        assert summary_writer(str(run / "tensorboard")) is None
    assert "symbolic link" in caplog.text
    assert list(outside.iterdir()) == []


def test_a_full_disk_while_writing_events_is_a_disk_full(tmp_path):
    writer = FailingWriter(tmp_path, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(DiskFull, match="no space left on the device to write"):
        Events(writer).add_scalar("train/elbo", 1.0, 3)
    assert writer.closed


def test_closing_on_a_full_disk_warns_and_never_raises(tmp_path, caplog):
    """close runs while a session stops: its signal or error is the one to report."""

    class FullAtClose(FailingWriter):
        def close(self):
            raise self.error

    writer = FullAtClose(tmp_path, OSError(errno.ENOSPC, "No space left on device"))
    with caplog.at_level(logging.WARNING, logger="ugvae"):
        Events(writer).close()
    assert [r.getMessage() for r in caplog.records] == [
        f"TensorBoard events can no longer be written to {tmp_path} (No space left on device); metrics.csv has "
        "every number"
    ]


def test_another_failure_is_one_warning_and_the_events_stop(tmp_path, caplog):
    writer = FailingWriter(tmp_path, OSError(errno.EIO, "Input/output error"))
    events = Events(writer)
    with caplog.at_level(logging.WARNING, logger="ugvae"):
        for step in range(3):
            events.add_scalar("train/elbo", 1.0, step)
        events.close()
    assert writer.calls == 1 and writer.closed
    assert [r.getMessage() for r in caplog.records] == [
        f"TensorBoard events can no longer be written to {tmp_path} (Input/output error); metrics.csv has every number"
    ]


def test_a_folder_that_went_away_is_left_to_the_session_to_report(tmp_path, caplog):
    writer = FailingWriter(tmp_path / "gone", FileNotFoundError(errno.ENOENT, "No such file or directory"))
    with caplog.at_level(logging.WARNING, logger="ugvae"):
        Events(writer).add_scalar("train/elbo", 1.0, 3)
    assert caplog.records == []


def test_the_writer_threads_error_prints_no_traceback(tmp_path):
    """The real writer, its folder deleted under it: the thread fails, its error comes back as one
    call's OSError, handled by Events, and Python prints nothing of the thread's."""
    code = (
        "import shutil, sys, time\n"
        "from ugvae.trained.tensorboard import summary_writer\n"
        "events = summary_writer(sys.argv[1])\n"
        "shutil.rmtree(sys.argv[1])\n"
        "for step in range(50):\n"
        "    events.add_scalar('x', 1.0, step)\n"
        "    time.sleep(0.01)\n"
        "events.close()\n"
        "print('done')\n"
    )
    result = run_python(code, tmp_path / "tensorboard")
    assert result.returncode == 0 and result.stdout == "done\n"
    assert "Traceback" not in result.stderr and "Exception in thread" not in result.stderr, result.stderr


@pytest.mark.slow
def test_a_resume_onto_a_full_disk_is_one_line_without_the_threads_traceback(small_run, tiny_disk):
    run_dir = shutil.copytree(small_run, str(tiny_disk / "run"))
    config_path = os.path.join(run_dir, "config.json")
    config = json.load(open(config_path))
    config["train"]["epochs"] = 3
    with open(config_path, "w") as f:
        json.dump(config, f)
    fill(tiny_disk)
    result = subprocess.run(
        [sys.executable, "-m", "ugvae", "--resume", run_dir, "--quiet"],
        cwd=ROOT,
        env=one_thread_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no space left on the device to write" in result.stderr, result.stderr
