"""Rotation never overwrites (issue 22, defect 15): a set-aside name that is taken gets a
suffix, and a file a new checkpoint would replace is set aside unless it is this run's own."""

import os

import pytest

from tests.security.craft import checkpoint_path, save, valid_payload
from ugvae.trained.checkpoints import load_checkpoint, save_checkpoint, set_aside


def names(run_dir):
    return sorted(os.listdir(os.path.join(run_dir, "checkpoints")))


def test_an_earlier_unreadable_file_is_never_overwritten(tmp_path, caplog):
    """Defect 15: main renamed a second damaged step-N.pt over the first step-N.pt.unreadable."""
    run_dir = str(tmp_path)
    for step in (1, 2):
        save_checkpoint(run_dir, step, valid_payload(step), keep=3)
    damaged = checkpoint_path(run_dir, 2)
    for attempt in (b"first damage", b"second damage", b"third damage"):
        with open(damaged, "wb") as f:
            f.write(attempt)
        save_checkpoint(run_dir, 3, valid_payload(3), keep=3)
    assert names(run_dir) == [
        "step-000000001.pt",
        "step-000000002.pt.unreadable",
        "step-000000002.pt.unreadable-2",
        "step-000000002.pt.unreadable-3",
        "step-000000003.pt",
    ]
    folder = os.path.join(run_dir, "checkpoints")
    contents = [open(os.path.join(folder, n), "rb").read() for n in names(run_dir)[1:4]]
    assert contents == [b"first damage", b"second damage", b"third damage"]
    assert "set aside" in caplog.text


def test_a_foreign_checkpoint_at_the_next_name_is_set_aside_not_replaced(tmp_path):
    """Defect 15: main skipped another run's step-6 when resuming, then wrote its own over it."""
    run_dir = str(tmp_path)
    save_checkpoint(run_dir, 5, valid_payload(5, run_id="mine"), keep=3)
    foreign = save(valid_payload(6, run_id="theirs"), checkpoint_path(run_dir, 6))
    before = open(foreign, "rb").read()
    save_checkpoint(run_dir, 6, valid_payload(6, run_id="mine"), keep=3)
    assert load_checkpoint(checkpoint_path(run_dir, 6))["run_id"] == "mine"
    assert open(foreign + ".unreadable", "rb").read() == before


def test_a_damaged_file_at_the_next_name_is_set_aside(tmp_path):
    """Defect 15: whatever sits at the name is kept, under a name of its own."""
    run_dir = str(tmp_path)
    path = checkpoint_path(run_dir, 4)
    with open(path, "wb") as f:
        f.write(b"half a checkpoint")
    save_checkpoint(run_dir, 4, valid_payload(4), keep=3)
    assert open(path + ".unreadable", "rb").read() == b"half a checkpoint"


def test_the_runs_own_checkpoint_of_the_same_step_is_replaced_without_clutter(tmp_path):
    """Defect 15: rewriting the same step of the same run leaves no set-aside copy."""
    run_dir = str(tmp_path)
    save_checkpoint(run_dir, 4, valid_payload(4, run_id="mine"), keep=3)
    save_checkpoint(run_dir, 4, valid_payload(4, run_id="mine"), keep=3)
    assert names(run_dir) == ["step-000000004.pt"]


def test_a_checkpoint_of_other_shapes_is_set_aside_by_rotation(tmp_path):
    """Defect 11/15: rotation checks older files against the shapes being saved."""
    run_dir = str(tmp_path)
    save(valid_payload(1, weights=7), checkpoint_path(run_dir, 1))
    save_checkpoint(run_dir, 2, valid_payload(2), keep=3)
    assert names(run_dir) == ["step-000000001.pt.unreadable", "step-000000002.pt"]


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
    assert open(os.path.join(folder, "step-000000003.pt.unreadable"), "rb").read() == b"one"
    assert open(os.path.join(folder, "step-000000003.pt.unreadable-2"), "rb").read() == b"two"


def test_a_folder_with_a_temporary_name_never_stops_a_checkpoint(tmp_path):
    """Defect 15: the clean-up of stale temporaries removed files only; a folder crashed it."""
    os.makedirs(tmp_path / "checkpoints" / "step-000000001.pt.tmp-1-abc")
    save_checkpoint(str(tmp_path), 1, valid_payload(1), keep=3)
    assert "step-000000001.pt" in names(str(tmp_path))


@pytest.mark.parametrize("name", ["step-" + "9" * 240 + ".pt", "step-١٢.pt", "step-12.pt.pt"])
def test_odd_names_are_not_checkpoints(tmp_path, name):
    """Defect 15: a step past int64 in the name, or non-ASCII digits (int() reads them), is no checkpoint."""
    from ugvae.trained.checkpoints import list_checkpoints

    os.makedirs(tmp_path / "checkpoints")
    (tmp_path / "checkpoints" / name).write_bytes(b"x")
    assert list_checkpoints(str(tmp_path)) == []
