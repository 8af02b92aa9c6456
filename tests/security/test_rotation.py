"""Rotation never overwrites (issue 22, defect 15): a set-aside name that is taken gets a
suffix, and a file a new checkpoint would replace is set aside unless it is this run's own."""

import os

import pytest

from tests.security.craft import checkpoint_path, fake_checkpoint, fake_expect, save_fake, write_unchecked
from ugvae.trained.checkpoint import list_checkpoints, load, set_aside
from ugvae.trained.checkpoint.payload import encode


def names(run_dir):
    return sorted(os.listdir(os.path.join(run_dir, "checkpoints")))


def plant_fake(run_dir, step, **kwargs):
    """A checkpoint file written as another run or another model would write it (no checks)."""
    return write_unchecked(checkpoint_path(run_dir, step), *encode(fake_checkpoint(step, **kwargs)))


def test_an_earlier_unreadable_file_is_never_overwritten(tmp_path, caplog):
    """Defect 15: main renamed a second damaged step-N over the first step-N.unreadable."""
    run_dir = str(tmp_path)
    for step in (1, 2):
        save_fake(run_dir, step)
    damaged = checkpoint_path(run_dir, 2)
    for attempt in (b"first damage", b"second damage", b"third damage"):
        with open(damaged, "wb") as f:
            f.write(attempt)
        save_fake(run_dir, 3)
    assert names(run_dir) == [
        "step-000000001.safetensors",
        "step-000000002.safetensors.unreadable",
        "step-000000002.safetensors.unreadable-2",
        "step-000000002.safetensors.unreadable-3",
        "step-000000003.safetensors",
    ]
    folder = os.path.join(run_dir, "checkpoints")
    contents = [open(os.path.join(folder, n), "rb").read() for n in names(run_dir)[1:4]]
    assert contents == [b"first damage", b"second damage", b"third damage"]
    assert "set aside" in caplog.text


def test_a_foreign_checkpoint_at_the_next_name_is_set_aside_not_replaced(tmp_path):
    """Defect 15: main skipped another run's step-6 when resuming, then wrote its own over it."""
    run_dir = str(tmp_path)
    save_fake(run_dir, 5, run_id="mine")
    foreign = plant_fake(run_dir, 6, run_id="theirs")
    before = open(foreign, "rb").read()
    save_fake(run_dir, 6, run_id="mine")
    assert load(checkpoint_path(run_dir, 6), fake_expect("mine")).run_id == "mine"
    assert open(foreign + ".unreadable", "rb").read() == before


def test_a_damaged_file_at_the_next_name_is_set_aside(tmp_path):
    """Defect 15: whatever sits at the name is kept, under a name of its own."""
    path = checkpoint_path(str(tmp_path), 4)
    with open(path, "wb") as f:
        f.write(b"half a checkpoint")
    save_fake(str(tmp_path), 4)
    assert open(path + ".unreadable", "rb").read() == b"half a checkpoint"


def test_the_runs_own_checkpoint_of_the_same_step_is_replaced_without_clutter(tmp_path):
    """Defect 15: rewriting the same step of the same run leaves no set-aside copy."""
    save_fake(str(tmp_path), 4)
    save_fake(str(tmp_path), 4)
    assert names(str(tmp_path)) == ["step-000000004.safetensors"]


def test_a_checkpoint_of_other_shapes_is_set_aside_by_rotation(tmp_path):
    """Defect 11/15: rotation checks older files against the shapes being saved."""
    plant_fake(str(tmp_path), 1, weights=7)
    save_fake(str(tmp_path), 2)
    assert names(str(tmp_path)) == ["step-000000001.safetensors.unreadable", "step-000000002.safetensors"]


def test_a_renamed_checkpoint_is_set_aside_by_rotation(tmp_path):
    """A file renamed to pose as another step is no checkpoint of that step."""
    os.rename(save_fake(str(tmp_path), 1), checkpoint_path(str(tmp_path), 3))
    save_fake(str(tmp_path), 4)
    assert names(str(tmp_path)) == ["step-000000003.safetensors.unreadable", "step-000000004.safetensors"]


def test_rotation_reads_headers_only_and_each_kept_file_once(tmp_path, monkeypatch):
    """Issue 26: a save reads no kept file's tensors, and no header of a file it wrote or checked."""
    from ugvae.trained.checkpoint import CheckpointFolder, store

    run_dir = str(tmp_path)
    for step in (1, 2, 3):
        save_fake(run_dir, step, keep=3)  # a session before this one
    opened, tensors = [], []
    real_open = store.open_regular
    monkeypatch.setattr(store, "open_regular", lambda path, what: opened.append(path) or real_open(path, what))
    monkeypatch.setattr(store, "read_tensor", lambda *a: tensors.append(a))
    folder = CheckpointFolder(run_dir, fake_expect(), keep=3)
    for step in (4, 5, 6, 7):
        folder.write(fake_checkpoint(step))
    # The files of the earlier session are checked by their header once each (step 1 too, before it
    # is deleted: a file that is no checkpoint of this run is set aside, not deleted); the files
    # this folder wrote are never opened again.
    assert sorted(os.path.basename(p) for p in opened) == [f"step-00000000{n}.safetensors" for n in (1, 2, 3)]
    assert tensors == [] and [os.path.basename(p) for p in list_checkpoints(run_dir)][0] == "step-000000005.safetensors"


def test_setting_aside_without_hard_links_still_never_overwrites(tmp_path, monkeypatch):
    """Defect 15: on a filesystem without hard links the rename path checks the name first."""

    def no_links(*args, **kwargs):
        raise PermissionError("hard links are not supported here")

    monkeypatch.setattr(os, "link", no_links)
    path = checkpoint_path(str(tmp_path), 3)
    for content in (b"one", b"two"):
        with open(path, "wb") as f:
            f.write(content)
        set_aside(path)
    folder = os.path.dirname(path)
    assert open(os.path.join(folder, "step-000000003.safetensors.unreadable"), "rb").read() == b"one"
    assert open(os.path.join(folder, "step-000000003.safetensors.unreadable-2"), "rb").read() == b"two"


def test_a_folder_with_a_temporary_name_never_stops_a_checkpoint(tmp_path):
    """Defect 15: the clean-up of stale temporaries removed files only; a folder crashed it."""
    os.makedirs(tmp_path / "checkpoints" / "step-000000001.safetensors.tmp-1-abc")
    save_fake(str(tmp_path), 1)
    assert "step-000000001.safetensors" in names(str(tmp_path))


@pytest.mark.parametrize(
    "name", ["step-" + "9" * 230 + ".safetensors", "step-١٢.safetensors", "step-12.safetensors.safetensors"]
)
def test_odd_names_are_not_checkpoints(tmp_path, name):
    """Defect 15: a step past int64 in the name, or non-ASCII digits (int() reads them), is no checkpoint."""
    os.makedirs(tmp_path / "checkpoints")
    (tmp_path / "checkpoints" / name).write_bytes(b"x")
    assert list_checkpoints(str(tmp_path)) == []
