"""The wheel installs one package, `ugvae`, and it works beside a user's own `train.py`,
`model.py` and `data/`.

Built offline (`pip wheel --no-deps --no-build-isolation`) from a copy of the tracked files, so
the checkout gains no build/ or egg-info; installed with `pip install --target` next to the
test environment's own packages, and run from a directory that is not the checkout and that
holds modules named like the package's parts, as a user's project often does.
"""

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import ROOT, tiny_flags


def subpackages() -> list[str]:
    """Every folder of the checkout's package that holds an __init__.py (tests/ holds none)."""
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("build", "tests", "__pycache__")]
        if folder != ROOT and "__init__.py" in files:
            found.append(os.path.relpath(folder, ROOT).replace(os.sep, "/"))
    return found


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
def test_the_wheel_holds_only_the_ugvae_package(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    tops = {n.split("/")[0] for n in names}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert tops - dist_info == {"ugvae"}, f"the wheel installs more than ugvae at the top: {sorted(tops)}"
    for package in ("", *(f"{p}/" for p in subpackages())):
        assert f"ugvae/{package}__init__.py" in names, f"ugvae/{package} is missing from the wheel"
    for module in ("ugvae/run.py", "ugvae/__main__.py", "ugvae/experiments/commands/embed.py", "ugvae/data/folder.py"):
        assert module in names
    assert not any(n.startswith("ugvae/tests/") for n in names)
    assert any(n.endswith("LICENSE") for n in names)
    assert "ugvae = ugvae.run:main" in entry_points


@pytest.mark.slow
def test_the_installed_package_works_beside_a_users_train_model_and_data(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    # A user's project: its own train.py, model.py and data package, which shadow any
    # top-level modules of those names.
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "train.py").write_text("raise SystemExit('the user train.py was imported')\n")
    (project / "model.py").write_text("raise SystemExit('the user model.py was imported')\n")
    (project / "data" / "__init__.py").write_text("raise SystemExit('the user data package was imported')\n")
    env = {**os.environ, "PYTHONPATH": str(target)}

    def call(*argv):
        return subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=600)

    command = str(target / "bin" / "ugvae")
    proc = call(command, *tiny_flags(), "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    run_dir = proc.stdout.splitlines()[-1]
    assert os.path.isfile(project / run_dir / "summary.json")
    assert "ugvae evaluate --run" in proc.stdout and "run.py" not in proc.stdout

    code = (
        "import sys, ugvae\n"
        f"assert ugvae.__file__.startswith({str(target)!r}), ugvae.__file__\n"
        f"run = ugvae.load_run({run_dir!r})\n"
        "print(type(run).__name__, run.step, ugvae.__version__)\n"
    )
    proc = call(sys.executable, "-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[1].isdigit()

    for argv in ([command, "--help"], [sys.executable, "-m", "ugvae", "--help"]):
        proc = call(*argv)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("usage: ugvae") and "embed" in proc.stdout
    proc = call(command, "--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"ugvae {version()}"


def version() -> str:
    import ugvae

    return ugvae.__version__
