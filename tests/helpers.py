"""Helpers shared by the tests (fixtures live in tests/conftest.py): tiny runs, the command line
in a subprocess, what a run logged, and hostile conditions (a full disk, a killed writer).

The tests import the installed package `ugvae` (CI installs the checkout editable), never the
checkout by path; `python run.py` is the one command that runs straight from a checkout.
"""

from __future__ import annotations

import csv
import errno
import gzip
import os
import signal
import subprocess
import sys
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Sizes of a model of a few thousand weights that trains in a second or two.
TINY_SIZES = dict(z_dim=2, beta_dim=2, K=3, hidden=16)


# -- tiny runs -----------------------------------------------------------------------------------
def tiny_flags(dataset: str = "synthetic:40", epochs: int = 1, group_size: int = 8) -> list[str]:
    """`run.py` flags of a run of a few thousand weights that trains in a second or two."""
    model = ["--hidden", "16", "--z-dim", "2", "--beta-dim", "2", "--K", "3"]
    return ["--dataset", dataset, *model, "-B", str(group_size), "--epochs", str(epochs), "--quiet"]


# Four epochs of 5 steps, every loss logged and a checkpoint mid-epoch: the run the resume tests kill.
TINY_RUN = [*tiny_flags("synthetic:200", epochs=4), "--log-every", "1", "--checkpoint-every", "7"]


def tiny_train(tmp_path_factory, model: str, dataset: str = "synthetic:200") -> str:
    """A one-epoch run of `model` on synthetic digits, in a fresh folder."""
    from ugvae.model import ModelConfig
    from ugvae.train import fit
    from ugvae.trained import TrainConfig

    cfg = TrainConfig(dataset=dataset, model=model, epochs=1, group_size=4, groups_per_step=5)
    model_cfg = ModelConfig(x_shape=(1, 28, 28), **TINY_SIZES)
    return fit(cfg, model_cfg, runs_dir=str(tmp_path_factory.mktemp("runs"))).run_dir


def train_small_images(runs_dir, dataset: str, model: str = "ugvae", epochs: int = 3) -> str:
    """A run of `model` on `dataset` resized to 8x8, trained fast (lr 1e-2): the domain tests' run."""
    from ugvae.model import ModelConfig
    from ugvae.train import fit
    from ugvae.trained import TrainConfig

    cfg = TrainConfig(
        dataset=dataset, model=model, image_size=8, epochs=epochs, group_size=4, groups_per_step=2, lr=1e-2, log_every=1
    )
    return fit(cfg, ModelConfig(x_shape=(1, 8, 8), **TINY_SIZES), runs_dir=str(runs_dir)).run_dir


def write_domain(folder, count, background, size=(12, 12), mode="L", seed=0):
    """`count` images of a random contrasting square on a uniform background: the domain is the background."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    for i in range(count):
        w, h = size
        pixels = np.full((h, w, channels), background, dtype=np.int64) + rng.integers(-8, 9, (h, w, channels))
        side = min(w, h) // 3
        top, left = rng.integers(0, h - side), rng.integers(0, w - side)
        pixels[top : top + side, left : left + side] = 255 - background
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8).squeeze()).save(folder / f"{i:03d}.png")
    return folder


def write_idx(path, array):
    """`array` as a gzipped IDX file, the format MNIST and Fashion-MNIST ship in."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


# -- what a run holds ------------------------------------------------------------------------------
def logged(run_dir: str) -> list[dict]:
    """metrics.csv as text without its wall-clock column: equal means equal to the last digit."""
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as f:
        return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in csv.DictReader(f)]


def checkpoint_steps(run_dir: str) -> list[int]:
    from ugvae.trained.checkpoint import checkpoint_step, list_checkpoints

    return [checkpoint_step(p) for p in list_checkpoints(run_dir)]


def files_under(folder) -> dict[str, int]:
    """Every file under `folder`, with its modification time: what a reader of it would find."""
    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            found[os.path.relpath(path, folder)] = os.stat(path).st_mtime_ns
    return found


# -- processes -------------------------------------------------------------------------------------
def one_thread_env(**extra) -> dict:
    """The environment of a subprocess: one thread, so that it sums in the order the tests do."""
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)


def run_python(code: str, *args, timeout: float = 300, env=None) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter (the installed ugvae), from the checkout."""
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=ROOT,
        env=one_thread_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def signal_training(flags: list[str], run_dir: str, min_step: int, sig=signal.SIGKILL, timeout: float = 120):
    """Train `run.py FLAGS` into run_dir, send `sig` once a checkpoint of min_step or later
    exists, and return (exit code, stderr) of the run."""
    proc = subprocess.Popen(
        [sys.executable, "run.py", *flags, "--run-dir", run_dir],
        cwd=ROOT,
        env=one_thread_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # Under `nohup` (a CI job started so) SIGHUP is ignored and training rightly keeps it so:
        # the run gets the default a terminal's process has.
        preexec_fn=None if sig == signal.SIGKILL else lambda: signal.signal(sig, signal.SIG_DFL),
    )
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if any(step >= min_step for step in checkpoint_steps(run_dir)):
            proc.send_signal(sig)
            break
        time.sleep(0.005)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


# -- hostile conditions ---------------------------------------------------------------------------
def fill(folder, leave: int = 0):
    """Fill the filesystem of `folder` up to `leave` bytes."""
    with open(os.path.join(folder, "filler"), "wb") as f:
        try:
            while os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize > leave:
                f.write(b"\0" * 4096)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC


def fail_at_figure(monkeypatch, k: int) -> None:
    """The k-th figure an experiment saves is written, then the command dies there, as if killed."""
    from ugvae.experiments import plotting

    real, written = plotting.atomic_write, []

    def write(path, writer):
        real(path, writer)
        written.append(path)
        if len(written) == k:
            raise RuntimeError("killed mid-write")

    monkeypatch.setattr(plotting, "atomic_write", write)


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
