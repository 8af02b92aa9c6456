"""Odd environments (issue 29): an unknown MPLBACKEND, a console that cannot encode a path
(PYTHONIOENCODING=ascii with a non-ASCII run directory), closed stdout/stderr, and (the fourth
pass) paths too long, `python -OO` and a deleted current folder give working output or one line,
not a traceback."""

import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT


def ugvae(*argv, **env):
    environment = dict(os.environ, OMP_NUM_THREADS="1", **env)
    return subprocess.run(
        [sys.executable, "run.py", *argv], cwd=ROOT, env=environment, capture_output=True, text=True, errors="replace"
    )


@pytest.mark.slow
def test_an_unknown_matplotlib_backend_still_draws_figures(small_run, tmp_path):
    """On 72f652f `import matplotlib` raised ValueError: figures are files, drawn with Agg anyway."""
    out = tmp_path / "drawn"
    result = ugvae("sample", "--run", small_run, "--num-groups", "1", "--out", str(out), MPLBACKEND="nonexistent")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "samples.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_an_ascii_console_shows_a_non_ascii_run_directory_escaped(small_run, tmp_path):
    """On 72f652f printing the report raised UnicodeEncodeError after eval.json was written."""
    run_dir = shutil.copytree(small_run, str(tmp_path / "rün"))
    result = ugvae("evaluate", "--run", run_dir, "--samples", "2", PYTHONIOENCODING="ascii")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == f"wrote {tmp_path}/r\\xfcn/eval.json"
    missing = tmp_path / "nö"
    result = ugvae("embed", "--run", run_dir, "--folder", str(missing), PYTHONIOENCODING="ascii")
    assert result.returncode == 2
    assert result.stderr == f"error: image folder {tmp_path}/n\\xf6 does not exist; check --folder\n"


def test_a_path_longer_than_the_filesystem_allows_is_one_line(tmp_path, capsys):
    """Fourth pass: a run directory past PATH_MAX (or a name past NAME_MAX) was OSError ENAMETOOLONG."""
    from tests.helpers import tiny_flags
    from ugvae import run

    too_deep = os.path.join(tmp_path, "d" * 300)  # a name past NAME_MAX (255 bytes)
    assert run.main([*tiny_flags(), "--run-dir", too_deep]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is longer than the filesystem allows" in err


def test_a_run_named_after_a_long_folder_keeps_its_name_short(tmp_path):
    """Fourth pass: `folder:` with a 240-byte folder name made a run name past NAME_MAX (255 bytes)."""
    from ugvae.trained.run import new_run_dir

    run_dir = new_run_dir(str(tmp_path), f"folder:{tmp_path}/{'i' * 240}", "ugvae")
    assert os.path.isdir(run_dir) and len(os.path.basename(run_dir)) < 160
    assert os.path.basename(run_dir).startswith("iii")  # the end of the path names it best


@pytest.mark.parametrize(
    "environment, message",
    [
        ({"PYTHONOPTIMIZE": "2"}, "error: Pyro cannot run without docstrings"),  # pyro's own import fails
        ({}, "error: the current folder no longer exists"),  # torch's own import fails (MKL)
    ],
)
def test_environments_no_command_can_run_in_are_one_line(tmp_path, environment, message):
    """Fourth pass: `python -OO` was a traceback inside pyro's import; a deleted current folder a
    misleading `Intel oneMKL FATAL ERROR: Cannot load libtorch_cpu.so`."""
    cwd = tmp_path / "gone"
    cwd.mkdir()
    command = [sys.executable, os.path.join(ROOT, "run.py"), "sample", "--run", str(tmp_path)]
    if not environment:  # start in the folder, then remove it under the process
        command = ["sh", "-c", f'cd "{cwd}" && rmdir "{cwd}" && exec "$@"', "sh", *command]
    result = subprocess.run(
        command,
        cwd=ROOT if environment else tmp_path,
        capture_output=True,
        text=True,
        env=dict(os.environ, **environment),
    )
    assert result.returncode == 2 and result.stderr.startswith(message) and result.stderr.count("\n") == 1, (
        result.stderr
    )


@pytest.mark.slow
def test_closed_stdout_and_stderr_are_no_error_and_progress_never_lands_on_stdout(small_run, tmp_path):
    """Fourth pass: with stderr closed (2>&-) evaluate crashed on sys.stderr.isatty() (None), and
    progress lines would have gone to stdout."""
    out = tmp_path / "embedded"
    result = subprocess.run(
        [sys.executable, "run.py", "embed", "--run", small_run, "--split", "train", "--out", str(out)],
        cwd=ROOT, capture_output=False, stdout=subprocess.PIPE, preexec_fn=lambda: os.close(2), text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )  # fmt: skip
    assert result.returncode == 0 and (out / "beta.csv").is_file()
    assert all(line.startswith(("embedded", "wrote")) for line in result.stdout.splitlines()), result.stdout
