"""A metrics row on a full disk (issue 29, L: "ENOSPC on a metrics row says the file is intact
while it ends torn"): a row is appended whole or not at all, so the message is true."""

import errno
import os

import pytest

from tests.helpers import fill
from ugvae.errors import DiskFull
from ugvae.files import atomic_write
from ugvae.trained.metrics import MetricsLog, read_metrics

ROW = {"step": 12, "epoch": 0, "kind": "step", "train_elbo": -543.21, "elapsed_s": 1.5}


def log_of_size(path, size: int) -> bytes:
    """A metrics.csv of this package's header and one row, padded to exactly `size` bytes."""
    MetricsLog(str(path))
    row = b"1,0,step,-500.%s,,,,,,,,,,,,,0.5\r\n"
    padding = size - os.path.getsize(path) - len(row % b"")
    with open(path, "ab") as f:
        f.write(row % (b"0" * padding))
    assert os.path.getsize(path) == size
    return path.read_bytes()


def test_a_row_cut_short_by_a_full_disk_leaves_the_file_as_it_was(tiny_disk):
    """On 72f652f the row's first bytes stayed (a torn last line) under a message saying the
    file was intact. The log ends 6 bytes before a page boundary of the tmpfs, so those 6 bytes of
    the row fit and the rest finds no free page: a short write, then ENOSPC."""
    path = tiny_disk / "metrics.csv"
    before = log_of_size(path, 4096 - 6)
    fill(tiny_disk)
    with pytest.raises(DiskFull, match=r"to add \d+ bytes to .*metrics\.csv .*the file is as it was before"):
        MetricsLog(str(path)).write(**ROW)
    assert path.read_bytes() == before


def test_a_row_cut_short_by_a_full_disk_leaves_the_file_as_it_was_simulated(tmp_path, monkeypatch):
    """The same where no tmpfs can be mounted: the kernel takes half the row, then says ENOSPC."""
    path = tmp_path / "metrics.csv"
    before = log_of_size(path, 300)
    real_write = os.write

    def half_then_full(fd, data):
        if len(data) > 1:
            return real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(DiskFull, match="the file is as it was before"):
        MetricsLog(str(path)).write(**ROW)
    monkeypatch.undo()
    assert path.read_bytes() == before
    MetricsLog(str(path)).write(**ROW)  # and the next row, with space again, follows the old ones
    assert read_metrics(str(path))[-1]["step"] == 12


def test_a_file_past_the_file_size_limit_is_one_line_and_the_old_one_stays(tmp_path):
    """Fourth pass: under `ulimit -f` a checkpoint ended in torch's "unexpected pos" RuntimeError
    (EFBIG behind it), a traceback; now it is one DiskFull line naming the limit."""
    import resource

    import torch

    target = tmp_path / "step.pt"
    atomic_write(str(target), lambda f: torch.save({"w": torch.zeros(10)}, f))
    before = target.read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, hard))  # Python ignores SIGXFSZ: writes fail with EFBIG
    try:
        with pytest.raises(DiskFull, match=r"step\.pt \(\d+ bytes\): it is larger than this process may write "):
            atomic_write(str(target), lambda f: torch.save({"w": torch.zeros(100_000)}, f))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert target.read_bytes() == before and os.listdir(tmp_path) == ["step.pt"]


def test_a_row_damaged_by_hand_is_left_out_of_the_figures_not_fatal(small_run, tmp_path, capsys):
    """Fourth pass: a metrics.csv row with bytes that are no number (\\xff\\xfe as train ELBO)
    survived a resume and crashed its report (ValueError in float); now it is skipped like a torn line."""
    import shutil

    from ugvae import run

    run_dir = shutil.copytree(small_run, str(tmp_path / "run"))
    os.remove(os.path.join(run_dir, "summary.json"))
    with open(os.path.join(run_dir, "metrics.csv"), "ab") as f:
        f.write(b"1,0,step,\xff\xfe,,,,,,,,,,,,,1\r\n")
    rows = read_metrics(os.path.join(run_dir, "metrics.csv"))
    assert rows and all(row["step"] != 1 or row["kind"] == "epoch" for row in rows)
    assert run.main(["--resume", run_dir, "--epochs", "2", "--quiet"]) == 0, capsys.readouterr().err
    assert os.path.isfile(os.path.join(run_dir, "summary.json"))
