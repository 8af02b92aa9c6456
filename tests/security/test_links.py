"""Links planted where ugvae writes (issue 22, defects 2 and 7): the lock note and temporary
files are opened with O_NOFOLLOW and created with O_EXCL, so no write goes through a link."""

import os

import pytest

from ugvae import run
from ugvae.errors import RunError
from ugvae.files import atomic_write_text, create_temporary
from ugvae.trained.lock import run_lock


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "victim.txt"
    path.write_text("precious data\n")
    return path


def test_a_lock_note_linked_to_a_victim_is_refused_and_the_victim_kept(run_copy, victim, capsys):
    """Defect 2: `ln -s ../victim.txt RUN/.lock`, then any writer cut the victim to a PID on main."""
    os.symlink(victim, os.path.join(run_copy, ".lock"))
    with pytest.raises(RunError, match=r"\.lock is a symbolic link"):
        with run_lock(run_copy):
            pass
    assert run.main(["evaluate", "--run", run_copy, "--samples", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a symbolic link" in err
    assert victim.read_text() == "precious data\n"
    assert not os.path.exists(os.path.join(run_copy, "eval.json"))


def test_a_dangling_lock_link_creates_nothing(run_copy, tmp_path):
    """Defect 2: O_CREAT through a dangling link would create its target anywhere."""
    target = tmp_path / "created-by-ugvae"
    os.symlink(target, os.path.join(run_copy, ".lock"))
    with pytest.raises(RunError, match="symbolic link"):
        with run_lock(run_copy):
            pass
    assert not target.exists()


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_lock_note_that_is_no_file_is_refused_in_one_line(run_copy, kind):
    """Defect 2: a FIFO would block the writer, a folder would raise IsADirectoryError."""
    note = os.path.join(run_copy, ".lock")
    os.mkfifo(note) if kind == "fifo" else os.mkdir(note)
    with pytest.raises(RunError, match=r"\.lock is (a folder|not a regular file)"):
        with run_lock(run_copy):
            pass


def test_a_link_planted_at_the_old_temporary_name_is_never_written_through(tmp_path, victim):
    """Defect 7: main wrote `eval.json.tmp-<PID>` through a planted link."""
    target = tmp_path / "eval.json"
    os.symlink(victim, f"{target}.tmp-{os.getpid()}")
    atomic_write_text(str(target), "{}")
    assert target.read_text() == "{}" and victim.read_text() == "precious data\n"


def test_a_taken_random_name_is_never_opened(tmp_path, victim, monkeypatch):
    """Defect 7: a link at the very name drawn is refused by O_EXCL, and another name drawn."""
    draws = iter(["aaaaaaaa", "bbbbbbbb"])
    monkeypatch.setattr("ugvae.files.secrets.token_hex", lambda n: next(draws))
    target = tmp_path / "eval.json"
    os.symlink(victim, f"{target}.tmp-{os.getpid()}-aaaaaaaa")
    tmp, fd = create_temporary(str(target))
    os.close(fd)
    assert tmp.endswith("-bbbbbbbb") and victim.read_text() == "precious data\n"


def test_a_link_at_the_target_is_replaced_not_written_through(tmp_path, victim):
    """Defect 7: the rename replaces a link at the file's own name; the victim is kept."""
    target = tmp_path / "summary.json"
    os.symlink(victim, target)
    atomic_write_text(str(target), "{}")
    assert not os.path.islink(target) and victim.read_text() == "precious data\n"


def test_a_folder_at_the_target_gives_one_line(tmp_path):
    """Defect 7: a folder planted at the name is named, and no temporary file is left."""
    os.mkdir(tmp_path / "eval.json")
    with pytest.raises(RunError, match="a folder of that name is in the way"):
        atomic_write_text(str(tmp_path / "eval.json"), "{}")
    assert os.listdir(tmp_path) == ["eval.json"]
