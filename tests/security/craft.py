"""Tools that build the hostile inputs of tests/security: checkpoint files edited past what the
package writes, crafted pickles of the older format, a small real filesystem to fill, FIFOs and
links. Each crafted file is what an attacker with write access to a run directory (a shared run,
a downloaded one) could leave there."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from dataclasses import replace

import numpy as np
import torch

RUN_MAIN = "import sys; from ugvae import run; sys.exit(run.main(sys.argv[1:]))"


# -- checkpoints of format 4 ------------------------------------------------------------------
def fake_config() -> dict:
    from ugvae.model import ModelConfig
    from ugvae.trained.config import TrainConfig

    return {
        "model": ModelConfig().to_dict(),
        "train": TrainConfig().to_dict(),
        "model_name": "ugvae",
        "guide_name": "structured",
    }


def fake_checkpoint(step: int, run_id: str = "mine", weights: int = 10):
    """The smallest checkpoint that passes validation against `fake_expect`, weights all `step`."""
    from ugvae.trained.checkpoint import Checkpoint, rng_state

    window = min(step, 2)
    return Checkpoint(
        run_id=run_id,
        step=step,
        epoch=0,
        step_in_epoch=step,
        steps_per_epoch=1000,
        train_seconds=0.5,
        epoch_loss=(1.0, step - window),
        last_result={"test_elbo": -500.0, "cluster_shares": [0.5, 0.5], "nmi": float("nan")},
        train_samples=40,
        config={**fake_config(), "run_id": run_id},
        model={"w": torch.full((weights,), float(step))},
        guide={"g": torch.zeros(3)},
        window=torch.zeros(window),
        optimizer={"state": {}, "param_groups": [{"params": [0, 1], "lr": 1e-3, "betas": [0.9, 0.999]}]},
        rng=rng_state(),
    )


def fake_expect(run_id: str | None = "mine", weights: int = 10):
    """What `fake_checkpoint` fits (the Expected a Run of ModelConfig() would build for such modules)."""
    from ugvae.model import ModelConfig
    from ugvae.trained.checkpoint import Expected

    model, guide = {"w": ((weights,), torch.float32)}, {"g": ((3,), torch.float32)}
    return Expected(model, guide, ((weights,), (3,)), (ModelConfig(), "ugvae", "structured", None), run_id, True)


def save_fake(run_dir: str, step: int, keep: int = 3, run_id: str = "mine", weights: int = 10) -> str:
    """Save `fake_checkpoint(step)` as training does (validated, written atomically, rotated)."""
    from ugvae.trained.checkpoint import CheckpointFolder

    folder = CheckpointFolder(run_dir, fake_expect(run_id, weights), keep)
    return folder.write(fake_checkpoint(step, run_id, weights))


def checkpoint_path(run_dir: str, step: int, suffix: str = ".safetensors") -> str:
    os.makedirs(os.path.join(run_dir, "checkpoints"), exist_ok=True)
    return os.path.join(run_dir, "checkpoints", f"step-{step:09d}{suffix}")


def write_unchecked(path: str, tensors: dict, metadata: dict) -> str:
    """A safetensors file of `tensors` and `metadata`, however wrong (no validation)."""
    from ugvae.trained.checkpoint.tensorfile import write

    with open(path, "wb") as f:
        write(f, tensors, metadata)
    return path


def plant(run_dir: str, step: int, edit_checkpoint=None, edit_file=None) -> str:
    """A copy of the newest real checkpoint of `run_dir` as step `step` (counters kept consistent),
    edited as a Checkpoint (`edit_checkpoint(c) -> c`) and then as its file's (tensors, metadata)
    (`edit_file(tensors, metadata)`, in place), written without validation."""
    from ugvae.trained import Run
    from ugvae.trained.checkpoint.payload import encode

    run = Run.open(run_dir)
    checkpoint = run.latest_checkpoint(training=True)
    per_epoch = checkpoint.steps_per_epoch
    checkpoint = replace(
        checkpoint, step=step, epoch=step // per_epoch, step_in_epoch=step % per_epoch, window=torch.zeros(0)
    )
    checkpoint = replace(checkpoint, epoch_loss=(1.0, checkpoint.step_in_epoch))
    if edit_checkpoint:
        checkpoint = edit_checkpoint(checkpoint)
    tensors, metadata = encode(checkpoint)
    if edit_file:
        edit_file(tensors, metadata)
    return write_unchecked(checkpoint_path(run_dir, step), tensors, metadata)


def edit_json(metadata: dict, key: str, edit) -> None:
    """Replace the JSON field `key` of `metadata` by `edit(value)` (a value, dumped again)."""
    metadata[key] = json.dumps(edit(json.loads(metadata[key])))


def declare_huge(path: str, name: str, shape: list[int]) -> str:
    """Rewrite the checkpoint file at `path` so that its tensor `name` declares `shape`, its new
    bytes a hole of the file (sparse: a 2 GiB declaration costs no disk)."""
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        header, data = json.loads(f.read(length)), f.read()
    begin, end = header[name]["data_offsets"]
    grown = 4 * int(np.prod(shape)) - (end - begin)  # F32
    header[name]["shape"] = shape
    for entry in header.values():
        if isinstance(entry, dict) and "data_offsets" in entry and entry["data_offsets"][0] > begin:
            entry["data_offsets"] = [entry["data_offsets"][0] + grown, entry["data_offsets"][1] + grown]
    header[name]["data_offsets"] = [begin, end + grown]
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + data[:begin])
        f.seek(grown + end - begin, os.SEEK_CUR)
        f.write(data[end:])
    return path


def raw_file(path: str, header: dict | bytes | None, data: bytes = b"", length: int | None = None) -> str:
    """A file of a header (a dict dumped as JSON, raw bytes, or None for none at all) and data,
    with a length field that says `length` (default: the header's true length)."""
    with open(path, "wb") as f:
        if header is not None:
            text = header if isinstance(header, bytes) else json.dumps(header).encode()
            f.write((len(text) if length is None else length).to_bytes(8, "little") + text)
        f.write(data)
    return path


# -- pickles of the older format (issue 22, defect 1; issue 29, D1) ------------------------------
def pickled_payload(step: int, run_id: str | None = None, weights: int = 10) -> dict:
    """A checkpoint dict of format 3, as torch.save wrote it before format 4."""
    checkpoint = fake_checkpoint(step, run_id or "x", weights)
    rng = checkpoint.rng
    rng["numpy"] = {**rng["numpy"], "name": "MT19937", "keys": rng["numpy"]["keys"].to(torch.int64)}
    payload = {
        "version": 3,
        "run_id": run_id,
        "step": step,
        "epoch": 0,
        "step_in_epoch": step,
        "train_seconds": 0.5,
        "last_result": checkpoint.last_result,
        "train_samples": 40,
        "window": checkpoint.window,
        "epoch_loss": checkpoint.epoch_loss,
        "group_assignments": None,
        "model": checkpoint.model,
        "guide": checkpoint.guide,
        "optimizer": checkpoint.optimizer,
        "rng": rng,
        "config": fake_config(),
    }
    return payload


def save_pickled(payload, path: str) -> str:
    """torch.save, as formats 1-3 were written (a zip archive of stored entries)."""
    with open(path, "wb") as f:
        torch.save(payload, f)
    return path


def legacy_payload(step: int, keys=None) -> dict:
    """A checkpoint of format 1: numpy's RNG state pickled as an ndarray (or `keys` instead)."""
    payload = pickled_payload(step)
    del payload["version"], payload["run_id"]
    name, array, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = __import__("random").getstate()
    payload["rng"] = {
        "torch": torch.get_rng_state(),
        "numpy": (name, array if keys is None else keys, pos, has_gauss, cached),
        "python": (version, internal, gauss_next),
    }
    return payload


def with_pickle(path: str, edit) -> str:
    """Rewrite the torch.save archive at `path` with its data.pkl replaced by `edit(data.pkl)`."""
    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for info, data in entries:
            archive.writestr(info, edit(data) if info.filename.endswith("/data.pkl") else data)
    return path


def nested_tuple_key(data: bytes, depth: int = 10**6) -> bytes:
    """data.pkl with one more key in its top dict: an empty tuple wrapped `depth` times in TUPLE1
    (D1: torch's weights-only unpickler builds it, and hashing it overflows the C stack)."""
    assert data.endswith(b".")
    return data[:-1] + b")" + b"\x85" * depth + b"N" + b"s" + b"."  # EMPTY_TUPLE, TUPLE1..., NONE, SETITEM, STOP


def extra_item(data: bytes, key: bytes, value: bytes) -> bytes:
    """data.pkl with the pickled `key`: `value` added to its top dict (raw opcodes of each)."""
    return data[:-1] + key + value + b"s."


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
