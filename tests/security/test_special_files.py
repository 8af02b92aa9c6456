"""FIFOs, devices, folders and links where a checkpoint or a JSON file belongs (issue 22,
defect 10, and the "only regular files" part of defect 1): never opened, never waited on."""

import os
import shutil
import stat

import pytest

from tests.helpers import run_python
from tests.security.craft import RUN_MAIN, checkpoint_path, fake_expect, save_fake
from ugvae.errors import CheckpointError, DataError
from ugvae.files import read_json
from ugvae.trained import load_run
from ugvae.trained.checkpoint import list_checkpoints, load


@pytest.mark.slow
def test_a_fifo_as_the_newest_checkpoint_never_hangs_evaluate(run_copy):
    """Defect 10: on main, evaluate opened the FIFO and waited for a writer forever."""
    os.mkfifo(checkpoint_path(run_copy, 99))
    proc = run_python(RUN_MAIN, "evaluate", "--run", run_copy, "--samples", "2", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step-000000099.safetensors (is a FIFO, not a regular file)" in proc.stderr


@pytest.mark.slow
def test_a_fifo_among_the_checkpoints_is_set_aside_by_training(run_copy):
    """Defect 10: training resumed past the FIFO, and rotation renames it instead of opening it."""
    os.mkfifo(checkpoint_path(run_copy, 99))
    proc = run_python(RUN_MAIN, "--resume", run_copy, "--epochs", "2", "--quiet", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    aside = os.path.join(run_copy, "checkpoints", "step-000000099.safetensors.unreadable")
    assert stat.S_ISFIFO(os.lstat(aside).st_mode)


def test_a_link_to_a_checkpoint_outside_the_run_is_refused(run_copy, tmp_path):
    """Defect 1: a symbolic link is never followed, even to a good checkpoint."""
    outside = shutil.copy(list_checkpoints(run_copy)[-1], str(tmp_path / "elsewhere.safetensors"))
    link = checkpoint_path(run_copy, 99)
    os.symlink(outside, link)
    with pytest.raises(CheckpointError, match="is a symbolic link"):
        load(link, fake_expect())
    assert load_run(run_copy).step == 5


@pytest.mark.parametrize("target", ["/dev/zero", "/dev/urandom", "/proc/self/mem"])
def test_a_link_to_a_device_is_refused(tmp_path, target):
    """Defect 1: /dev/zero or /dev/urandom behind a link would be read without end."""
    link = checkpoint_path(str(tmp_path), 3)
    os.symlink(target, link)
    with pytest.raises(CheckpointError, match="is a symbolic link"):
        load(link, fake_expect())


def test_a_device_node_is_refused(tmp_path):
    """Defect 1: a character device made in checkpoints/ (root can) is not read."""
    path = checkpoint_path(str(tmp_path), 3)
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero's numbers
    except PermissionError as e:
        pytest.skip(f"cannot make a device node here ({e})")
    with pytest.raises(CheckpointError, match="is a device or socket, not a regular file"):
        load(path, fake_expect())


def test_a_folder_named_like_a_checkpoint_is_refused_and_set_aside(tmp_path):
    """Defect 1: a folder step-N.safetensors is neither read nor counted, and rotation moves it aside."""
    folder = checkpoint_path(str(tmp_path), 98)
    os.makedirs(folder)
    with pytest.raises(CheckpointError, match="is a folder, not a regular file"):
        load(folder, fake_expect())
    save_fake(str(tmp_path), 99, keep=2)
    assert os.path.isdir(folder + ".unreadable")


def test_a_fifo_or_a_link_as_a_json_file_is_refused(tmp_path):
    """Defect 10: read_json opens regular files only (a FIFO config.json would hang a command)."""
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="is a FIFO, not a regular file"):
        read_json(str(fifo), what="config")
    (tmp_path / "real.json").write_text("{}")
    os.symlink(tmp_path / "real.json", tmp_path / "link.json")
    with pytest.raises(DataError, match="is a symbolic link"):
        read_json(str(tmp_path / "link.json"))


@pytest.mark.slow
def test_a_file_where_the_checkpoints_folder_belongs_is_named(run_copy):
    """A third pass: `checkpoints` made a file said only "holds no readable checkpoint; train it first"."""
    shutil.rmtree(os.path.join(run_copy, "checkpoints"))
    with open(os.path.join(run_copy, "checkpoints"), "w") as f:
        f.write("not a folder")
    proc = run_python(RUN_MAIN, "evaluate", "--run", run_copy, "--samples", "2", timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-3000:]
    assert "checkpoints is a file, not the folder of the run's checkpoints; move it aside" in proc.stderr
