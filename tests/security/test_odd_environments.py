"""Odd environments (issue 29): an unknown MPLBACKEND, and a console that cannot encode a path
(PYTHONIOENCODING=ascii with a non-ASCII run directory), give working output, not a traceback."""

import os
import shutil
import subprocess
import sys

from tests.security.craft import ROOT


def ugvae(*argv, **env):
    environment = dict(os.environ, OMP_NUM_THREADS="1", **env)
    return subprocess.run(
        [sys.executable, "run.py", *argv], cwd=ROOT, env=environment, capture_output=True, text=True, errors="replace"
    )


def test_an_unknown_matplotlib_backend_still_draws_figures(small_run, tmp_path):
    """On 72f652f `import matplotlib` raised ValueError: figures are files, drawn with Agg anyway."""
    out = tmp_path / "drawn"
    result = ugvae("sample", "--run", small_run, "--groups", "1", "--out", str(out), MPLBACKEND="nonexistent")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "samples.png").read_bytes().startswith(b"\x89PNG")


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
