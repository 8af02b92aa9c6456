"""The wheel holds every package and run.py, and the installed `ugvae` command works outside the checkout.

Built offline (`pip wheel --no-deps --no-build-isolation`) from a copy of the tracked files, so
the checkout gains no build/ or egg-info; installed with `pip install --target` next to the
test environment's own packages, and run from a directory that is not the checkout.
"""

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("model", "guide", "data", "train", "experiments", "bench")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    source = tmp / "source"
    for name in files:
        if os.path.isfile(os.path.join(ROOT, name)):
            os.makedirs(source / os.path.dirname(name), exist_ok=True)
            shutil.copy(os.path.join(ROOT, name), source / name)
    out = tmp / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (path,) = out.glob("ugvae-*.whl")
    return path


@pytest.mark.slow
def test_the_wheel_holds_every_package_run_py_and_the_entry_point(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "run.py" in names
    for package in PACKAGES:
        assert f"{package}/__init__.py" in names, f"{package} is missing from the wheel"
    for module in ("experiments/embed.py", "experiments/sample.py", "experiments/cli.py", "data/folder.py"):
        assert module in names
    assert any(n.endswith("LICENSE") for n in names)
    assert "ugvae = run:main" in entry_points


@pytest.mark.slow
def test_the_installed_command_trains_and_helps_from_another_directory(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}

    def call(*argv):
        return subprocess.run(argv, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)

    where = call(sys.executable, "-c", "import run, experiments.embed; print(run.__file__)")
    assert where.stdout.strip().startswith(str(target)), "the test imported the checkout, not the installed wheel"
    for argv in ([str(target / "bin" / "ugvae"), "--help"], [sys.executable, "-m", "run", "--help"]):
        proc = call(*argv)
        assert proc.returncode == 0, proc.stderr
        assert "embed" in proc.stdout and "sample" in proc.stdout
    tiny = ["--dataset", "synthetic:40", "--hidden", "8", "--z-dim", "2", "--beta-dim", "2", "--K", "2", "-B", "8"]
    proc = call(str(target / "bin" / "ugvae"), *tiny, "--epochs", "1", "--quiet", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    run_dir = proc.stdout.splitlines()[-1]
    assert os.path.isfile(os.path.join(elsewhere, run_dir, "summary.json"))
