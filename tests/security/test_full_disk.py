"""A disk that fills up (issue 22, defect 8): "no space" in any form becomes one DiskFull line
naming the file and the bytes needed; the older files stay whole and no temporary is left.

Each case runs on a real 2 MiB tmpfs where mount works, and as a simulated fault everywhere.
"""

import errno
import io
import os

import pytest

from tests.helpers import fill, tiny_flags
from tests.security.craft import fake_expect, save_fake
from ugvae import run
from ugvae.errors import DiskFull
from ugvae.files import atomic_write, write_json
from ugvae.trained.checkpoint import list_checkpoints, load
from ugvae.trained.lock import run_lock


def test_a_checkpoint_running_out_of_space_is_disk_full(tiny_disk):
    """Defect 8: a full disk mid-checkpoint was a 44-line traceback on main."""
    save_fake(str(tiny_disk), 1, weights=200_000)
    fill(tiny_disk, leave=64 * 1024)
    with pytest.raises(DiskFull, match=r"to write .*step-000000002\.safetensors \(it needs \d+ bytes, \d+ bytes are"):
        save_fake(str(tiny_disk), 2, weights=200_000)
    assert [os.path.basename(p) for p in list_checkpoints(str(tiny_disk))] == ["step-000000001.safetensors"]
    assert load(list_checkpoints(str(tiny_disk))[0], fake_expect(weights=200_000)).step == 1
    assert not [n for n in os.listdir(tiny_disk / "checkpoints") if ".tmp-" in n]


def test_torch_running_out_of_space_is_disk_full_simulated(tmp_path, monkeypatch):
    """Defect 8: torch's error without the OSError behind it still reads as a full disk when
    the file needs more than is free."""

    def torch_save(f):
        f.write(b"x" * 100)
        if not isinstance(f, io.BytesIO):  # the replay into memory, which tells the size, works
            raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr("ugvae.files.free_bytes", lambda folder: 10)
    with pytest.raises(DiskFull, match=r"blob \(it needs 100 bytes, 10 bytes are free\)"):
        atomic_write(str(tmp_path / "blob"), torch_save)
    assert os.listdir(tmp_path) == []


def test_a_torch_error_that_is_no_full_disk_stays_what_it_is(tmp_path):
    """Defect 8: only "no space" becomes DiskFull; any other writer error is left alone."""

    def broken(f):
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    with pytest.raises(RuntimeError, match="file write failed"):
        atomic_write(str(tmp_path / "blob"), broken)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_no_space_and_no_quota_are_disk_full(tmp_path, monkeypatch, code):
    """Defect 8: OSError 28 and EDQUOT, raised when the data reaches the disk."""
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(code, os.strerror(code))))
    with pytest.raises(DiskFull, match=r"summary\.json \(it needs 12 bytes"):
        write_json(str(tmp_path / "summary.json"), {"a": 1})


def test_the_lock_on_a_full_disk_never_hides_the_real_error(tiny_disk):
    """Defect 8: on main, closing .lock raised [Errno 28] first, and .lock was left behind."""
    run_dir = tiny_disk / "run"
    run_dir.mkdir()
    fill(tiny_disk)
    with pytest.raises(DiskFull, match="config.json"):
        with run_lock(str(run_dir), new=True):
            write_json(str(run_dir / "config.json"), {"model": {}})
    assert os.listdir(run_dir) == []


def test_the_lock_on_a_full_disk_never_hides_the_real_error_simulated(tmp_path, monkeypatch):
    """Defect 8: the PID note cannot be written (ENOSPC): the lock holds, nothing is left to flush."""
    real_write = os.write

    def no_space(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".lock"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", no_space)
    with pytest.raises(KeyError):
        with run_lock(str(tmp_path), new=True):
            raise KeyError("the real error")
    assert os.listdir(tmp_path) == []


def test_a_new_run_on_a_full_disk_says_so_in_one_line(tiny_disk, capsys):
    """Defect 8: `run.py` on a full disk names the file it could not write, and leaves no .lock."""
    fill(tiny_disk)
    run_dir = tiny_disk / "run"
    assert run.main([*tiny_flags(), "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no space left on the device to write" in err
    assert not os.path.exists(run_dir / ".lock")
