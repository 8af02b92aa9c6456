"""Crafted pickles in checkpoints/ (issue 22, defect 1; issue 29, D1 and D2): no command but
`upgrade` reads a pickle, each names that command in one line, and `upgrade` refuses every crafted
file in one line, before torch's unpickler sees it where the opcodes already tell.

Each crafted file is read in a subprocess: a regression would segfault there, not in pytest.
"""

import os
import shutil

import pytest

from tests.helpers import run_python
from tests.security.craft import (
    RUN_MAIN,
    NumericDtype,
    ObjectDtype,
    PointerDtype,
    RawArray,
    RunsShell,
    checkpoint_path,
    compressed_bomb,
    extra_item,
    legacy_payload,
    nested_tuple_key,
    pickle_bytes,
    pickled_payload,
    save_pickled,
    with_pickle,
)
from ugvae.trained import load_run
from ugvae.trained.checkpoint import OlderCheckpoints, list_checkpoints

FLAGGED = (3, "<", None, None, None, -1, -1, 1)  # a dtype's state with NPY_ITEM_HASOBJECT set
BINUNICODE = b"X"  # opcode: a str of a 4-byte length


def d1_file(path):
    """D1: a format-3 checkpoint with one more key, an empty tuple in 10**6 TUPLE1s."""
    return with_pickle(save_pickled(pickled_payload(7), path), nested_tuple_key)


def legacy_with(step=None, keys=None):
    def make(path):
        payload = legacy_payload(7, keys=keys)
        if step is not None:
            payload["step"] = step
        return save_pickled(payload, path)

    return make


def with_opcodes(key: bytes, value: bytes):
    return lambda path: with_pickle(save_pickled(pickled_payload(7), path), lambda d: extra_item(d, key, value))


def plain_pickle(path):
    with open(path, "wb") as f:
        f.write(pickle_bytes(pickled_payload(7)))
    return path


def huge_tensor(path):
    import torch

    payload = pickled_payload(7)
    payload["model"]["w"] = torch.zeros(2**25)  # 128 MiB: more than the run's modules and Adam hold
    return save_pickled(payload, path)


def long_string(size):
    return BINUNICODE + size.to_bytes(4, "little") + b"a" * size


# name -> (builder of the file at a path, words of the refusal)
CRAFTED = {
    "D1: an empty tuple wrapped 10**6 times": (d1_file, "nests more than 64 levels deep"),
    "D2: an int of 2**2040 (LONG1)": (
        with_opcodes(long_string(3), b"\x8a\xff" + b"\xff" * 254 + b"\x7f"),
        "an int of 2039 bits",
    ),
    "a string of 2 MB": (with_opcodes(long_string(3), long_string(2**21)), "a string of 2097152 characters"),
    "a container of 2**20 + 1 items": (
        with_opcodes(long_string(3), b"](" + b"K\x01" * (2**20 + 1) + b"e"),
        "a container of 1048577 items",
    ),
    "a pickle that runs a command": (
        lambda path: save_pickled({**pickled_payload(7), "step": RunsShell("/tmp/marker")}, path),
        "names 'posix system', which no checkpoint holds",
    ),
    "a global outside the checkpoint's": (
        with_opcodes(long_string(3), b"cbuiltins\neval\n"),
        "names 'builtins eval'",
    ),
    "the copyreg extension registry": (with_opcodes(long_string(3), b"\x82\x01"), "copyreg extension registry"),
    "a memo read before it was written": (
        with_opcodes(long_string(3), b"j" + (10**6).to_bytes(4, "little")),
        "is damaged",
    ),
    "a compressed archive (a zip bomb)": (compressed_bomb, "compressed entries, which torch.save never writes"),
    "a plain pickle": (plain_pickle, "no zip archive, as torch.save writes"),
    "128 MiB of tensors in a run of 55 kB weights": (huge_tensor, "more than the run's modules"),
    "object dtype from raw bytes": (legacy_with(step=RawArray(ObjectDtype(), (2,), b"\x41" * 16)), "numeric dtype"),
    "uint32 dtype with a subarray of objects": (
        legacy_with(step=RawArray(PointerDtype(), (1,), b"\x41" * 4)),
        "numeric dtype",  # its subarray's object dtype is refused first
    ),
    "uint32 dtype flagged as holding objects": (
        legacy_with(step=RawArray(NumericDtype(state=FLAGGED))),
        "a numpy dtype with fields, a subarray or flags",
    ),
    "structured dtype with an object field": (
        legacy_with(step=RawArray(NumericDtype([("a", "O")], None), (1,), b"\0" * 8)),
        "numeric dtype",
    ),
    "array claiming 2**30 elements": (
        legacy_with(step=RawArray(NumericDtype(), (2**15, 2**15), b"\0" * 16)),
        "a numpy array of 1073741824 elements",
    ),
    "array with a negative shape": (legacy_with(step=RawArray(NumericDtype(), (-4,), b"\0")), "array shape"),
    "numeric array where the step belongs": (
        legacy_with(step=RawArray(NumericDtype(), (4,), b"\x01" * 16)),
        "`step` is a LegacyArray",
    ),
    "numpy keys of the wrong length": (
        legacy_with(keys=RawArray(NumericDtype(), (10,), b"\0" * 40)),
        "keys are not 624 unsigned words",
    ),
    "numpy keys as floats": (
        legacy_with(keys=RawArray(NumericDtype("f8"), (624,), b"\0" * 624 * 8)),
        "keys are not 624 unsigned words",
    ),
}

UPGRADE_EACH = """
import sys
from ugvae.errors import RunError
from ugvae.trained import upgrade_run
for run_dir in sys.argv[1:]:
    try:
        upgrade_run(run_dir)
        print("UPGRADED", run_dir, flush=True)
    except RunError as e:
        print("REFUSED", run_dir, str(e).replace(chr(10), " "), flush=True)
"""


def pickled_run(small_run, folder, build, step=7):
    """A copy of `small_run` whose only checkpoint is the pickle `build` makes."""
    run_dir = shutil.copytree(small_run, str(folder))
    for path in list_checkpoints(run_dir):
        os.remove(path)
    build(checkpoint_path(run_dir, step, ".pt"))
    return run_dir


@pytest.mark.slow
def test_upgrade_refuses_each_crafted_pickle_in_one_line(small_run, tmp_path):
    """D1, D2: the opcode scan (nesting, ints, strings, containers, globals), the archive's bounds
    and the numpy stand-ins each refuse; nothing segfaults, runs a command or expands."""
    runs = [pickled_run(small_run, tmp_path / f"run{i}", build) for i, (build, _) in enumerate(CRAFTED.values())]
    proc = run_python(UPGRADE_EACH, *runs)
    assert proc.returncode == 0, proc.stderr[-3000:]  # no segfault (-11), no traceback
    lines = proc.stdout.splitlines()
    assert len(lines) == len(CRAFTED) and not os.path.exists("/tmp/marker")
    for (name, (_, words)), line, run_dir in zip(CRAFTED.items(), lines, runs):
        assert line.startswith("REFUSED") and words in line and len(line) < 700, f"{name}: {line}"
        # Refused files are set aside, never deleted, and config.json is as it was (no run id adopted).
        assert os.listdir(os.path.join(run_dir, "checkpoints")) == ["step-000000007.pt.unreadable"], name
        assert open(os.path.join(run_dir, "config.json")).read() == open(os.path.join(small_run, "config.json")).read()


@pytest.mark.slow
@pytest.mark.parametrize("command", [["evaluate", "--run", "{run}", "--samples", "2"], ["--resume", "{run}"]])
def test_a_run_of_pickles_only_names_the_upgrade_command_in_one_line(small_run, tmp_path, command):
    """D1: on main, every command of such a run exited 139 inside torch.load."""
    run_dir = pickled_run(small_run, tmp_path / "run", d1_file)
    proc = run_python(RUN_MAIN, *[arg.format(run=run_dir) for arg in command])
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-3000:]
    assert "has checkpoints of an older format (step-000000007.pt)" in proc.stderr
    assert f"upgrade {run_dir}`" in proc.stderr
    assert os.listdir(os.path.join(run_dir, "checkpoints")) == ["step-000000007.pt"]  # untouched


@pytest.mark.slow
def test_a_pickle_beside_good_checkpoints_is_never_read(run_copy):
    """D1: planted as a newer step-N.pt, it killed every command on main; now only upgrade reads it."""
    d1_file(checkpoint_path(run_copy, 99, ".pt"))
    proc = run_python(RUN_MAIN, "evaluate", "--run", run_copy, "--samples", "2")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-3000:]
    assert load_run(run_copy).step == 5


def test_load_run_and_evaluate_of_a_pickle_say_upgrade(small_run, tmp_path, capsys):
    from ugvae import run

    run_dir = pickled_run(small_run, tmp_path / "run", legacy_with())
    with pytest.raises(
        OlderCheckpoints, match=r"ugvae upgrade .*\(`python run.py upgrade .*`ugvae.trained.upgrade_run"
    ):
        load_run(run_dir)
    path = checkpoint_path(run_dir, 7, ".pt")
    assert run.main(["evaluate", "--checkpoint", path, "--samples", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "older format (step-000000007.pt)" in err
