"""Output folders (trained/outputs.py): whole or absent, never over an earlier one, never through a
link out of the run, and what killed writers left swept by the next command on the run."""

import os
import shutil
import subprocess
import sys

import pytest

from ugvae import run
from ugvae.errors import RunError
from ugvae.trained.outputs import OutputFolder, latest_output, sweep_temporaries


def dead_pid() -> int:
    """The id of a process that has exited: what a killed writer's temporaries carry."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_folder_appears_whole_under_a_new_name_each_time(tmp_path):
    names = []
    for text in ("first", "second", "third"):
        with OutputFolder(str(tmp_path), "result") as folder:
            assert os.path.basename(folder.path).startswith(".result.tmp-")  # not under its name yet
            assert not os.path.exists(tmp_path / "result-3")
            with open(folder.file("a.txt"), "w") as f:
                f.write(text)
        names.append(os.path.basename(folder.path))
        assert folder.files == [os.path.join(folder.path, "a.txt")]
    assert names == ["result", "result-2", "result-3"]
    assert latest_output(str(tmp_path), "result") == str(tmp_path / "result-3")
    assert (tmp_path / "result" / "a.txt").read_text() == "first"  # earlier outputs untouched
    # The highest number is the newest, even where a lower one was deleted.
    shutil.rmtree(tmp_path / "result-2")
    with OutputFolder(str(tmp_path), "result") as folder:
        pass
    assert os.path.basename(folder.path) == "result-4" == os.path.basename(latest_output(str(tmp_path), "result"))


def test_a_failed_writer_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="killed"):
        with OutputFolder(str(tmp_path), "result") as folder:
            open(folder.file("half.txt"), "w").write("half")
            raise RuntimeError("killed")
    assert os.listdir(tmp_path) == []


def test_a_named_out_must_be_absent_or_empty_and_is_refused_before_any_work(tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("mine")
    with pytest.raises(RunError, match="already holds files and outputs are never overwritten"):
        OutputFolder(str(tmp_path), "x", out=str(taken))
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (empty, tmp_path / "new" / "deeper"):
        with OutputFolder(str(tmp_path), "x", out=str(out)) as folder:
            open(folder.file("a.txt"), "w").write("a")
        assert folder.path == str(out) and os.listdir(out) == ["a.txt"]
    assert (taken / "mine.txt").read_text() == "mine"


def test_an_out_that_is_a_link_is_written_where_it_points(tmp_path):
    """The fourth hostile pass: `--out LINK` to an empty folder was a NotADirectoryError traceback."""
    target, link = tmp_path / "target", tmp_path / "link"
    target.mkdir()
    link.symlink_to(target)
    with OutputFolder(str(tmp_path), "x", out=str(link)) as folder:
        open(folder.file("a.txt"), "w").write("a")
    assert os.listdir(target) == ["a.txt"] and os.path.islink(link)
    (target / "a.txt").unlink()
    (target / "b.txt").write_text("b")  # a link to a folder that holds files is refused like the folder
    with pytest.raises(RunError, match="already holds files"):
        OutputFolder(str(tmp_path), "x", out=str(link))


@pytest.fixture
def run_copy(small_run, tmp_path):
    return shutil.copytree(small_run, str(tmp_path / "run"))


def test_the_next_command_on_a_run_sweeps_what_killed_writers_left(run_copy, tmp_path):
    """Issue 29 (6, L-list): `eval.json.tmp-*`, `*.npz.tmp-*` and killed output folders stayed forever."""
    pid = dead_pid()
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    planted = [
        os.path.join(run_copy, f"eval.json.tmp-{pid}-0123abcd"),
        os.path.join(run_copy, "experiments", f".interpolation.tmp-{pid}-0123abcd", "cluster_0.png"),
        os.path.join(run_copy, "embed", "sets", f"embeddings.npz.tmp-{pid}-89abcdef"),
        os.path.join(run_copy, "samples", f".prior.tmp-{pid}-00000000", "samples.png"),
    ]
    for path in planted:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "w").write("torn")
    link = os.path.join(run_copy, f"summary.json.tmp-{pid}-aaaaaaaa")
    os.symlink(outside, link)
    mine = os.path.join(run_copy, f"eval.json.tmp-{os.getpid()}-bbbbbbbb")  # a live writer's: kept
    open(mine, "w").write("in progress")
    assert run.main(["evaluate", "--run", run_copy, "--samples", "2"]) == 0
    assert not any(os.path.lexists(p) for p in planted + [link])
    assert not os.path.lexists(os.path.dirname(planted[1])) and not os.path.lexists(os.path.dirname(planted[3]))
    assert outside.read_text() == "precious" and os.path.exists(mine)
    assert os.path.isfile(os.path.join(run_copy, "eval.json"))
    assert sweep_temporaries(run_copy) == []  # nothing left to sweep


@pytest.mark.parametrize(
    "argv, folder",
    [
        (["experiment", "interpolation", "--rows", "2", "--cols", "2"], "experiments"),
        (["sample", "--num-groups", "1", "-B", "2"], "samples"),
        (["embed", "--split", "test"], "embed"),
    ],
    ids=["experiment", "sample", "embed"],
)
def test_a_linked_output_folder_is_never_followed_out_of_the_run(run_copy, tmp_path, capsys, argv, folder):
    """Issue 29 D18: `ln -s /elsewhere RUN/experiments` made commands write and replace files there."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, os.path.join(run_copy, folder))
    command = argv[:2] if argv[0] == "experiment" else argv[:1]
    assert run.main([*command, "--run", run_copy, *argv[len(command) :]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{folder} is a symbolic link; outputs are never written through a link" in err
    assert os.listdir(elsewhere) == []
