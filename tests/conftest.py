"""Fixtures and tiny-run helpers shared by every test package."""

import csv
import errno
import os
import signal
import subprocess
import sys
import time

import pyro
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from _checkout import use_checkout  # noqa: E402

use_checkout()  # the tests test this checkout as `ugvae`, whatever else is installed
# The tests' networks are tiny: one thread is faster than two, and never oversubscribes a busy CI box.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def fresh_pyro():
    """Every test starts with an empty param store, validation on and a fixed seed."""
    pyro.clear_param_store()
    pyro.enable_validation(True)
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


@pytest.fixture
def tiny_cfg():
    from ugvae.model import ModelConfig

    return ModelConfig(x_shape=(1, 4, 4), z_dim=2, beta_dim=3, K=3, hidden=8)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """A finished run with good checkpoints at steps 2, 4 and 5 (its epoch end), for tests that
    copy it and damage or plant files in the copy."""
    import torch

    from ugvae.model import ModelConfig
    from ugvae.train import fit
    from ugvae.trained import TrainConfig

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = TrainConfig(dataset="synthetic:40", epochs=1, group_size=8, checkpoint_every=2, keep_checkpoints=5)
    model_cfg = ModelConfig(x_shape=(1, 28, 28), z_dim=2, beta_dim=2, K=3, hidden=8)
    run_dir = fit(cfg, model_cfg, runs_dir=str(tmp_path_factory.mktemp("runs"))).run_dir
    torch.set_num_threads(threads)
    return run_dir


def tiny_flags(dataset: str = "synthetic:40", epochs: int = 1, group_size: int = 8) -> list[str]:
    """`run.py` flags of a run of a few thousand weights that trains in a second or two."""
    model = ["--hidden", "16", "--z-dim", "2", "--beta-dim", "2", "--K", "3"]
    return ["--dataset", dataset, *model, "-B", str(group_size), "--epochs", str(epochs), "--quiet"]


def tiny_train(tmp_path_factory, model: str, dataset: str = "synthetic:200") -> str:
    """A one-epoch run of `model` on synthetic digits, in a fresh folder."""
    from ugvae.model import ModelConfig
    from ugvae.train import fit
    from ugvae.trained import TrainConfig

    cfg = TrainConfig(dataset=dataset, model=model, epochs=1, group_size=4, groups_per_step=5)
    model_cfg = ModelConfig(x_shape=(1, 28, 28), z_dim=2, beta_dim=2, K=3, hidden=16)
    return fit(cfg, model_cfg, runs_dir=str(tmp_path_factory.mktemp("runs"))).run_dir


def logged(run_dir: str) -> list[dict]:
    """metrics.csv as text without its wall-clock column: equal means equal to the last digit."""
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as f:
        return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in csv.DictReader(f)]


def checkpoint_steps(run_dir: str) -> list[int]:
    from ugvae.trained.checkpoint import checkpoint_step, list_checkpoints

    return [checkpoint_step(p) for p in list_checkpoints(run_dir)]


def signal_training(flags: list[str], run_dir: str, min_step: int, sig=signal.SIGKILL, timeout: float = 120):
    """Train `run.py FLAGS` into run_dir, send `sig` once a checkpoint of min_step or later
    exists, and return (exit code, stderr) of the run."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "run.py", *flags, "--run-dir", run_dir],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if any(step >= min_step for step in checkpoint_steps(run_dir)):
            proc.send_signal(sig)
            break
        time.sleep(0.005)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MiB tmpfs of its own, so that a write can really run out of space."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], capture_output=True)
    if result.returncode != 0:
        reason = result.stderr.decode().strip()
        pytest.skip(f"cannot mount a tmpfs here ({reason}); the simulated ENOSPC tests still run")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(folder, leave: int = 0):
    """Fill the filesystem of `folder` up to `leave` bytes."""
    with open(os.path.join(folder, "filler"), "wb") as f:
        try:
            while os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize > leave:
                f.write(b"\0" * 4096)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC


@pytest.fixture
def guides_restored():
    """The guide registry as it was before the test: what a test registers or loads stays in it."""
    from ugvae.guide import registry

    guides, sources = dict(registry.GUIDES), dict(registry._sources)
    yield registry
    registry.GUIDES.clear(), registry.GUIDES.update(guides)
    registry._sources.clear(), registry._sources.update(sources)


def install_distribution(site, name: str, version: str, entry_points: dict[str, str], modules: dict[str, str]):
    """What `pip install` leaves in `site` for a distribution `name` that declares `entry_points`
    (guide name -> "module:Class") in the group ugvae.guides and holds `modules` (name -> source)."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{guide} = {target}\n" for guide, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[ugvae.guides]\n{lines}")
    for module, source in modules.items():
        (site / f"{module}.py").write_text(source)
