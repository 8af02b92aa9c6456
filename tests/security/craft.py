"""Tools that build the hostile inputs of tests/security: crafted checkpoints and pickles, a
small real filesystem to fill, FIFOs and links. Each crafted file is what an attacker with
write access to a run directory (a shared run, a downloaded one) could leave there."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def valid_payload(step: int, run_id: str | None = None, weights: int = 10) -> dict:
    """The smallest payload that passes the checkpoint schema, with model weights all `step`."""
    from ugvae.model import ModelConfig
    from ugvae.trained.checkpoints import CHECKPOINT_VERSION, rng_state
    from ugvae.trained.config import TrainConfig

    return {
        "version": CHECKPOINT_VERSION,
        "run_id": run_id,
        "step": step,
        "epoch": 0,
        "step_in_epoch": step,
        "train_seconds": 0.5,
        "last_result": {"test_elbo": -500.0, "cluster_shares": [0.5, 0.5]},
        "train_samples": 40,
        "window": torch.zeros(2),
        "epoch_loss": (1.0, 1),
        "group_assignments": None,
        "model": {"w": torch.full((weights,), float(step))},
        "guide": {"g": torch.zeros(3)},
        "optimizer": {"state": {}, "param_groups": []},
        "rng": rng_state(),
        "config": {
            "model": ModelConfig().to_dict(),
            "model_name": "ugvae",
            "guide_name": "structured",
            "train": TrainConfig().to_dict(),
        },
    }


def checkpoint_path(run_dir: str, step: int) -> str:
    os.makedirs(os.path.join(run_dir, "checkpoints"), exist_ok=True)
    return os.path.join(run_dir, "checkpoints", f"step-{step:09d}.pt")


def save(payload, path: str):
    """torch.save, as the package writes checkpoints (a zip archive of stored entries)."""
    with open(path, "wb") as f:
        torch.save(payload, f)
    return path


# -- pickles that reach past weights-only loading (issue 22, defect 1) ------------------------

_reconstruct = (getattr(np, "_core", None) or np.core).multiarray._reconstruct


class ObjectDtype:
    """Pickles as np.dtype('O8'): built by the dtype constructor alone, with no BUILD."""

    def __reduce__(self):
        return (np.dtype, ("O8", False, True))


class PointerDtype:
    """Pickles as a uint32 dtype whose state adds a subarray of objects: numpy then reads the
    array's raw bytes as PyObject pointers (a segfault on the first repr or comparison)."""

    def __reduce__(self):
        return (np.dtype, ("u4", False, True), (3, "|", (ObjectDtype(), (1,)), None, None, 8, 8, 0))


class RawArray:
    """Pickles as numpy's `_reconstruct` of an array of `dtype` (a picklable stand-in) from raw bytes."""

    def __init__(self, dtype, shape=(4,), data=b"\x41" * 16):
        self.dtype, self.shape, self.data = dtype, shape, data

    def __reduce__(self):
        return (_reconstruct, (np.ndarray, (0,), b"b"), (1, self.shape, self.dtype, False, self.data))


class NumericDtype:
    def __init__(self, name="u4", state=(3, "<", None, None, None, -1, -1, 0)):
        self.name, self.state = name, state

    def __reduce__(self):
        return (np.dtype, (self.name, False, True), self.state)


class RunsShell:
    """Unpickling this runs a shell command: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def legacy_payload(step: int, keys=None) -> dict:
    """A checkpoint of format 1: numpy's RNG state pickled as an ndarray (or `keys` instead)."""
    payload = valid_payload(step)
    del payload["version"], payload["run_id"]
    name, array, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = __import__("random").getstate()
    payload["rng"] = {
        "torch": torch.get_rng_state(),
        "numpy": (name, array if keys is None else keys, pos, has_gauss, cached),
        "python": (version, internal, gauss_next),
    }
    return payload


def self_referencing_list(depth: int = 0):
    """A list that holds itself; with `depth`, a chain of `depth` lists each holding the next twice
    (2**depth leaves when walked, from a pickle of a few kB)."""
    if depth == 0:
        loop = []
        loop.append(loop)
        return loop
    node = [1.0]
    for _ in range(depth):
        node = [node, node]
    return node


def compressed_bomb(path: str, size: int = 256 * 2**20):
    """A torch-like zip whose data.pkl is `size` bytes of zeros deflated to a few hundred kB."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("archive/data.pkl", "w") as f:
            chunk = b"\0" * 2**20
            for _ in range(size // len(chunk)):
                f.write(chunk)
        archive.writestr("archive/version", "3\n")
    return path


def pickle_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    pickle.Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def python_in_checkout(code: str, *args, timeout: float = 300, env=None) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter that imports this checkout as `ugvae`."""
    prelude = "from _checkout import use_checkout\nuse_checkout()\n"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **(env or {}))
    return subprocess.run(
        [sys.executable, "-c", prelude + code, *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
