"""Crafted pickles in checkpoints/ (issue 22, defect 1): no file builds an object from raw
bytes, runs code or expands in memory; every command falls back to the previous checkpoint.

Each crafted file is loaded in a subprocess: a regression would segfault there, not in pytest.
"""

import os
import random
import shutil

import numpy as np
import pytest
import torch

from tests.security.craft import (
    NumericDtype,
    ObjectDtype,
    PointerDtype,
    RawArray,
    RunsShell,
    checkpoint_path,
    compressed_bomb,
    legacy_payload,
    pickle_bytes,
    python_in_checkout,
    save,
    valid_payload,
)
from ugvae.errors import CheckpointError
from ugvae.trained.checkpoints import load_checkpoint, set_rng_state

LOAD_EACH = """
import sys
from ugvae.errors import CheckpointError
from ugvae.trained.checkpoints import load_checkpoint
for path in sys.argv[1:]:
    try:
        load_checkpoint(path)
        print("LOADED", path, flush=True)
    except CheckpointError as e:
        print("REFUSED", path, e.reason, flush=True)
"""

FLAGGED = (3, "<", None, None, None, -1, -1, 1)  # a dtype's state with NPY_ITEM_HASOBJECT set
# name -> what replaces a field of a valid format-1 payload (numpy RNG state pickled as an ndarray)
CRAFTED = {
    "object dtype from raw bytes": ("step", RawArray(ObjectDtype(), (2,), b"\x41" * 16)),
    "uint32 dtype with a subarray of objects": ("step", RawArray(PointerDtype(), (1,), b"\x41" * 4)),
    "uint32 dtype flagged as holding objects": ("step", RawArray(NumericDtype(state=FLAGGED))),
    "structured dtype with an object field": ("step", RawArray(NumericDtype([("a", "O")], None), (1,), b"\0" * 8)),
    "array claiming 2**30 elements": ("step", RawArray(NumericDtype(), (2**15, 2**15), b"\0" * 16)),
    "array with a negative shape": ("step", RawArray(NumericDtype(), (-4,), b"")),
    "numeric array where the step belongs": ("step", RawArray(NumericDtype(), (4,), b"\x01" * 16)),
    "numpy keys of the wrong length": ("keys", RawArray(NumericDtype(), (10,), b"\0" * 40)),
    "numpy keys as floats": ("keys", RawArray(NumericDtype("f8"), (624,), b"\0" * 624 * 8)),
}


def crafted_file(folder, name: str, step: int) -> str:
    field, value = CRAFTED[name]
    payload = legacy_payload(step, keys=value if field == "keys" else None)
    if field == "step":
        payload["step"] = value
    return save(payload, checkpoint_path(folder, step))


def test_crafted_numpy_arrays_are_refused_one_by_one(tmp_path):
    """Defect 1: numpy's names are bound to numeric-only stand-ins; every crafted array is refused."""
    paths = [crafted_file(str(tmp_path / f"run{i}"), name, 7) for i, name in enumerate(CRAFTED)]
    proc = python_in_checkout(LOAD_EACH, *paths)
    assert proc.returncode == 0, proc.stderr[-3000:]  # no segfault (-11), no traceback
    lines = proc.stdout.splitlines()
    assert len(lines) == len(CRAFTED)
    for name, line in zip(CRAFTED, lines):
        assert line.startswith("REFUSED"), f"{name}: {line}"


def test_an_object_array_in_the_newest_checkpoint_never_reaches_evaluate(run_copy):
    """Defect 1: on main, evaluate compared the crafted step (a pointer 0x41414141) and exited 139."""
    crafted_file(run_copy, "uint32 dtype with a subarray of objects", 99)
    proc = python_in_checkout(
        "import sys; from ugvae import run; sys.exit(run.main(sys.argv[1:]))",
        "evaluate",
        "--run",
        run_copy,
        "--samples",
        "2",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step-000000099.pt (cannot be read (holds objects other than tensors" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_a_crafted_older_checkpoint_is_set_aside_when_training_rotates(run_copy):
    """Defect 1: planted as an older checkpoint, it killed training inside rotation on main."""
    crafted_file(run_copy, "uint32 dtype with a subarray of objects", 1)
    proc = python_in_checkout(
        "import sys; from ugvae import run; sys.exit(run.main(sys.argv[1:]))",
        "--resume",
        run_copy,
        "--epochs",
        "2",
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = os.listdir(os.path.join(run_copy, "checkpoints"))
    assert "step-000000001.pt.unreadable" in names and "step-000000010.pt" in names


def test_a_format_1_checkpoint_loads_with_its_rng_state_converted(tmp_path):
    """Defect 1: the restricted reader still reads a real format-1 file, RNG state exactly."""
    np.random.seed(3), random.seed(3), torch.manual_seed(3)
    path = save(legacy_payload(5), checkpoint_path(str(tmp_path), 5))
    expected = (np.random.rand(3), random.random(), torch.rand(2))
    np.random.seed(9), random.seed(9), torch.manual_seed(9)
    checkpoint = load_checkpoint(path)
    assert checkpoint["rng"]["numpy"]["keys"].dtype == torch.int64 and "version" not in checkpoint
    set_rng_state(checkpoint["rng"])
    again = (np.random.rand(3), random.random(), torch.rand(2))
    assert np.array_equal(expected[0], again[0]) and expected[1] == again[1] and torch.equal(expected[2], again[2])


def test_numpy_arrays_in_a_file_of_the_current_format_are_refused(tmp_path):
    """Defect 1: only formats 1 and 2 pickled arrays; a version-3 file holding one is crafted."""
    payload = {**legacy_payload(5), "version": 3}
    path = save(payload, checkpoint_path(str(tmp_path), 5))
    with pytest.raises(CheckpointError, match=r"format 1 or 2 \(says format version 3"):
        load_checkpoint(path)


def test_a_pickle_that_runs_a_command_never_runs_it(tmp_path):
    """Defect 1: the weights-only loader stays in front of the legacy one."""
    marker = tmp_path / "marker"
    payload = {**legacy_payload(5), "step": RunsShell(marker)}
    path = save(payload, checkpoint_path(str(tmp_path), 5))
    with pytest.raises(CheckpointError, match="holds objects other than tensors"):
        load_checkpoint(path)
    assert not marker.exists()


def test_a_compressed_archive_is_refused_before_it_expands(tmp_path):
    """Defect 1 (bounded sizes): a 256 MiB data.pkl deflated to 256 kB is never inflated."""
    path = compressed_bomb(checkpoint_path(str(tmp_path), 5))
    assert os.path.getsize(path) < 2**20
    with pytest.raises(CheckpointError, match="compressed entries, which torch.save never writes"):
        load_checkpoint(path)


def test_a_plain_pickle_is_no_checkpoint(tmp_path):
    """Defect 1: only zip archives as torch.save writes them are read (no legacy tar/pickle format)."""
    path = checkpoint_path(str(tmp_path), 5)
    with open(path, "wb") as f:
        f.write(pickle_bytes(valid_payload(5)))
    with pytest.raises(CheckpointError, match="no zip archive"):
        load_checkpoint(path)


def test_the_fixture_run_of_format_1_still_loads(tmp_path):
    """Defect 1: tests/fixtures/run-v1 (a real format-1 run) loads through the restricted reader."""
    fixture = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "run-v1")
    run_dir = shutil.copytree(fixture, str(tmp_path / "run"))
    checkpoint = load_checkpoint(os.path.join(run_dir, "checkpoints", "step-000000008.pt"))
    assert checkpoint["step"] == 8 and checkpoint["rng"]["numpy"]["name"] == "MT19937"
