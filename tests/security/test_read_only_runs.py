"""A run that cannot be written (issue 29, D4): every command that writes into it is refused in
one line where the lock is taken, before any work, pointing to `--out` where the command has one;
commands that only read it work. A new run under a folder that cannot be written is one line too.

The real cases use a read-only bind mount of a copy of the small run (the tests run as root,
which ignores permission bits but not a read-only mount); where mount does not work they skip,
and the simulated cases (EROFS and EACCES raised at the OS call) still run.
"""

import errno
import os
import subprocess

import pytest
import torch

from tests.helpers import tiny_flags
from ugvae import run
from ugvae.errors import NotWritable
from ugvae.files import atomic_write_text
from ugvae.trained import load_run
from ugvae.trained.lock import run_lock


def mount(*args) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def read_only(tmp_path):
    """read_only(folder): a read-only view of `folder` (a bind mount), unmounted at the end."""
    views = []

    def view(folder):
        target = tmp_path / f"read-only-{len(views)}"
        target.mkdir()
        if not mount("--bind", str(folder), str(target)):
            pytest.skip("cannot bind-mount here; the simulated read-only cases still run")
        views.append(target)
        if not mount("-o", "remount,bind,ro", str(target)):
            pytest.skip("cannot remount read-only here; the simulated read-only cases still run")
        return str(target)

    yield view
    for target in views:
        subprocess.run(["umount", "-l", str(target)], check=False)


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


WRITERS = {
    "evaluate": ["evaluate", "--samples", "2"],
    "embed": ["embed", "--split", "test"],
    "sample": ["sample", "--num-groups", "1"],
    "interpolation": ["experiment", "interpolation"],
    "group-factors": ["experiment", "group-factors"],
}


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_every_command_that_writes_into_a_read_only_run_says_so_in_one_line(run_copy, read_only, capsys, command):
    """D4: a traceback (OSError EROFS) in every writing command on 72f652f."""
    ro = read_only(run_copy)
    argv = WRITERS[command]
    argv = argv[:2] + ["--run", ro] + argv[2:] if argv[0] == "experiment" else argv[:1] + ["--run", ro] + argv[1:]
    assert run.main(argv) == 2
    err = one_line(capsys)
    assert f"error: {ro} cannot be written (its filesystem is read-only)" in err
    assert ("--out" in err) == (command in ("embed", "sample"))  # only these can write elsewhere


def test_resuming_a_read_only_run_says_so_in_one_line(run_copy, read_only, capsys):
    ro = read_only(run_copy)
    assert run.main(["--resume", ro, "--epochs", "2", "--quiet"]) == 2
    assert "cannot be written (its filesystem is read-only)" in one_line(capsys)


def test_commands_that_only_read_a_read_only_run_work(run_copy, read_only, tmp_path, capsys):
    ro = read_only(run_copy)
    assert run.main(["embed", "--run", ro, "--split", "test", "--out", str(tmp_path / "embedded"), "--quiet"]) == 0
    assert run.main(["sample", "--run", ro, "--num-groups", "1", "--out", str(tmp_path / "drawn"), "--quiet"]) == 0
    assert os.path.isfile(tmp_path / "embedded" / "beta.csv") and os.path.isfile(tmp_path / "drawn" / "samples.npz")
    trained = load_run(ro)
    assert trained.embed(torch.rand(2, 4, *trained.model_cfg.x_shape)).beta_loc.shape == (2, 2)
    assert not os.path.exists(os.path.join(ro, ".lock"))


def test_a_new_run_under_a_read_only_folder_says_so_in_one_line(tmp_path, read_only, capsys):
    """D4: os.makedirs raised OSError EROFS on 72f652f."""
    (tmp_path / "runs").mkdir()
    ro = read_only(tmp_path / "runs")
    assert run.main([*tiny_flags(), "--runs-dir", ro]) == 2
    assert f"error: cannot write {ro}/synthetic_40-ugvae-" in one_line(capsys)
    assert run.main([*tiny_flags(), "--run-dir", os.path.join(ro, "mine")]) == 2
    assert "the filesystem is read-only" in one_line(capsys)


# -- simulated: the OS call refuses -----------------------------------------------------------


def test_a_run_without_write_permission_is_refused_by_the_lock(run_copy, monkeypatch):
    """D4 for a user other than root: the permission bits say no (os.access), before any work."""
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: path != run_copy and real_access(path, mode, **kw))
    with pytest.raises(
        NotWritable, match=r"cannot be written \(permission denied\).*send the output elsewhere with `out`"
    ):
        with run_lock(run_copy, elsewhere="out"):
            pass
    assert not os.path.exists(os.path.join(run_copy, ".lock"))


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_a_lock_note_the_filesystem_refuses_means_the_run_is_not_writable(run_copy, monkeypatch, code):
    """D4: the note is the first file a writer creates; on 72f652f its refusal was ignored and the
    command failed later, after its work, with a traceback."""
    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):
        if str(path).endswith(".lock"):
            raise OSError(code, os.strerror(code), path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    why = "its filesystem is read-only" if code == errno.EROFS else "permission denied"
    with pytest.raises(NotWritable, match=rf"{run_copy} cannot be written \({why}\)"):
        with run_lock(run_copy):
            pass


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.EPERM])
def test_a_file_the_filesystem_refuses_is_one_error_naming_it(tmp_path, monkeypatch, code):
    """D4: a folder inside a run that cannot be written (checkpoints/ of another user, say)."""
    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):
        if ".tmp-" in str(path):
            raise OSError(code, os.strerror(code), path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    target = tmp_path / "eval.json"
    with pytest.raises(NotWritable, match=rf"cannot write {target}: (the filesystem is read-only|permission denied)"):
        atomic_write_text(str(target), "{}")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("command", ["embed", "sample"])
def test_an_out_folder_that_cannot_be_written_is_one_line(tmp_path, read_only, small_run, capsys, command):
    """Fourth pass: `--out` under a read-only folder was a traceback (os.makedirs EROFS)."""
    ro = read_only(tmp_path)
    source = ["--split", "test"] if command == "embed" else ["--num-groups", "1"]
    assert run.main([command, "--run", small_run, *source, "--out", os.path.join(ro, "x"), "--quiet"]) == 2
    assert f"error: cannot write {ro}/x: the filesystem is read-only" in one_line(capsys)


def test_evaluate_from_python_refuses_a_read_only_run_before_evaluating(run_copy, monkeypatch):
    """Fourth pass: evaluate_run took the lock only to write eval.json, after the evaluation."""
    from ugvae.experiments.commands.evaluate import EvaluateSettings, evaluate_run
    from ugvae.trained import Run

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: path != run_copy and real_access(path, mode, **kw))
    monkeypatch.setattr(Run, "evaluate", lambda *args, **kwargs: pytest.fail("evaluated a run it cannot write"))
    with pytest.raises(NotWritable, match="permission denied"):
        evaluate_run(Run.open(run_copy), EvaluateSettings(samples=2))
