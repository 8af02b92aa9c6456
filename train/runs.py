"""Run directories, atomic checkpoints and `load_run`.

A run directory holds `config.json` (model and training configs), `checkpoints/`,
`metrics.csv` and the figures drawn from it. Runs are never overwritten: a new run always
gets a new directory. Every file is written to a temporary name, flushed to disk and renamed
over the old one (a rename is atomic on POSIX), so a kill or power cut at any moment leaves
either the old or the new file whole; a checkpoint that still fails to load is skipped for
the one before it.
"""

from __future__ import annotations

import datetime
import glob
import json
import os
import random
import re
import warnings

import numpy as np
import torch

from guide import GUIDES
from model import MODELS, UGVAEConfig
from train.config import TrainConfig

CHECKPOINT_RE = re.compile(r"step-(\d+)\.pt$")
CHECKPOINT_KEYS = (
    "step",
    "epoch",
    "step_in_epoch",
    "train_seconds",
    "last_result",
    "window",
    "epoch_loss",
    "model",
    "guide",
    "optimizer",
    "rng",
    "config",
)
# Fields of the training config that fix the stream of groups: a checkpoint resumed under
# other values would continue a different run.
DATA_STREAM_FIELDS = ("dataset", "image_size", "mix", "group_size", "groups_per_step", "seed", "groups", "group_warmup")


class RunError(ValueError):
    """A run directory or checkpoint that cannot be used; the message names the fix."""


def default_guide(model_name: str) -> str:
    names = [g for (m, g) in GUIDES if m == model_name]
    if not names:
        raise RunError(f"model {model_name!r} is unknown; choose one of {sorted(MODELS)}")
    return names[0]


def build(model_cfg: UGVAEConfig, model_name: str = "ugvae", guide_name: str | None = None):
    """(model, guide) for registry names; the guide defaults to the model's first one."""
    if model_name not in MODELS:
        raise RunError(f"model {model_name!r} is unknown; choose one of {sorted(MODELS)}")
    guide_name = guide_name or default_guide(model_name)
    if (model_name, guide_name) not in GUIDES:
        choices = sorted(g for (m, g) in GUIDES if m == model_name)
        raise RunError(f"guide {guide_name!r} does not exist for model {model_name!r}; choose one of {choices}")
    return MODELS[model_name](model_cfg), GUIDES[(model_name, guide_name)](model_cfg)


def resolve_device(name: str) -> torch.device:
    """The torch device called `name`, or a RunError when this machine lacks it."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise RunError(f"device {name!r} is not a device name; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise RunError(f"--device {name} was asked for but CUDA is not available here; use --device cpu")
        if device.index is not None and device.index >= count:
            raise RunError(
                f"--device {name} was asked for but this machine has {count} CUDA device(s); "
                f"use cuda:0 to cuda:{count - 1}"
            )
    elif device.type != "cpu":
        raise RunError(f"device {name!r} is not supported; use cpu or cuda[:N]")
    return device


def new_run_dir(runs_dir: str, dataset: str, model: str) -> str:
    """A fresh `runs_dir/<dataset>-<model>-<timestamp>[-n]`; never an existing one."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9_.+-]", "_", dataset.replace("folder:", "").strip("/"))
    base = os.path.join(runs_dir, f"{safe}-{model}-{stamp}")
    path, n = base, 1
    while True:
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            n += 1
            path = f"{base}-{n}"


def claim_run_dir(path: str) -> str:
    """Create the run directory `path`, refusing one that exists so that no run is overwritten."""
    try:
        os.makedirs(path)
    except FileExistsError:
        raise RunError(
            f"run directory {path} already exists and runs are never overwritten; pick another "
            f"--run-dir, or continue that run with --resume {path}"
        ) from None
    return path


def save_config(run_dir: str, model_cfg: UGVAEConfig, train_cfg: TrainConfig, extra: dict | None = None):
    payload = {"model": model_cfg.to_dict(), "train": train_cfg.to_dict(), **(extra or {})}
    atomic_write_bytes(os.path.join(run_dir, "config.json"), json.dumps(payload, indent=2).encode())


def load_config(run_dir: str):
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        raise RunError(f"{run_dir} is not a run directory (no config.json); pass a directory made by `run.py train`")
    try:
        with open(path) as f:
            payload = json.load(f)
        return UGVAEConfig.from_dict(payload["model"]), TrainConfig.from_dict(payload["train"]), payload
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise RunError(f"{path} is corrupt ({e}); restore it or start a new run") from None


def atomic_write_bytes(path: str, data: bytes):
    atomic_write(path, lambda f: f.write(data))


def atomic_write(path: str, write):
    """Call write(binary file) on a temporary file, then rename it to `path`.

    fsync before the rename, so that after a power cut the new name never points at
    unwritten blocks; fsync of the folder after it, so that the rename itself is on disk.
    """
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict):
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        # A run moved to a machine with fewer GPUs restores the generators it still has.
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), index)


def save_checkpoint(run_dir: str, step: int, payload: dict, keep: int) -> str:
    """Write checkpoints/step-N.pt atomically, then drop all but the newest `keep`."""
    folder = os.path.join(run_dir, "checkpoints")
    os.makedirs(folder, exist_ok=True)
    # Temporary files of a writer that was killed would otherwise pile up, each a full checkpoint.
    for stale in glob.glob(os.path.join(folder, "*.tmp-*")):
        os.remove(stale)
    path = os.path.join(folder, f"step-{step:09d}.pt")
    atomic_write(path, lambda f: torch.save(payload, f))
    for old in list_checkpoints(run_dir)[:-keep]:
        os.remove(old)
    return path


def list_checkpoints(run_dir: str) -> list[str]:
    paths = glob.glob(os.path.join(run_dir, "checkpoints", "step-*.pt"))
    return sorted((p for p in paths if CHECKPOINT_RE.search(p)), key=lambda p: int(CHECKPOINT_RE.search(p)[1]))


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """The checkpoint at `path`, checked to be one; tensors on `map_location`."""
    try:
        # Our own files, holding numpy RNG state besides tensors: full unpickling is needed.
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # truncated or foreign files raise many types
        raise RunError(
            f"checkpoint {path} cannot be read ({type(e).__name__}); delete it to fall back to the previous one"
        ) from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(checkpoint, dict) or k not in checkpoint]
    if missing:
        raise RunError(
            f"{path} is not a checkpoint of this package (it lacks {', '.join(missing)}); "
            "delete it to fall back to the previous one"
        )
    return checkpoint


def latest_checkpoint(run_dir: str) -> dict | None:
    """The newest checkpoint that loads; a damaged newest one falls back to the one before."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return load_checkpoint(path)
        except RunError as e:
            warnings.warn(f"{e}; using an older checkpoint", stacklevel=2)
    return None


def check_compatible(
    checkpoint: dict, model_cfg: UGVAEConfig, model_name: str, guide_name: str, train_cfg: TrainConfig | None = None
):
    """Raise a RunError naming every field in which `checkpoint` differs from the config asked for.

    The model fields decide whether the weights fit at all; with `train_cfg`, the fields that
    fix the stream of training groups are compared too, as resuming needs them unchanged.
    """
    saved = checkpoint.get("config", {})
    mine = {"model": model_name, "guide": guide_name, **model_cfg.to_dict()}
    theirs = {"model": saved.get("model_name"), "guide": saved.get("guide_name"), **saved.get("model", {})}
    if train_cfg is not None:
        mine.update({k: getattr(train_cfg, k) for k in DATA_STREAM_FIELDS})
        # A field missing from an older checkpoint had its default value then.
        theirs.update({k: saved.get("train", {}).get(k, getattr(TrainConfig(), k)) for k in DATA_STREAM_FIELDS})
    diffs = [
        f"{k} is {theirs.get(k)!r} in the checkpoint but {v!r} here" for k, v in mine.items() if theirs.get(k) != v
    ]
    if diffs:
        raise RunError(
            "checkpoint was made with another config ("
            + "; ".join(diffs)
            + "); use the checkpoint with the run that made it, or start a new run"
        )


def load_run(run_dir: str, device: str = "cpu"):
    """(model, guide, config) of a saved run, weights from its newest good checkpoint.

    `config` is a dict with the `model` (UGVAEConfig) and `train` (TrainConfig) configs.
    The model and guide are in eval mode on `device`.
    """
    model_cfg, train_cfg, _ = load_config(run_dir)
    guide_name = train_cfg.guide or default_guide(train_cfg.model)
    device = resolve_device(device)
    model, guide = build(model_cfg, train_cfg.model, guide_name)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise RunError(f"{run_dir} holds no readable checkpoint; train it first or resume it with --resume")
    check_compatible(ckpt, model_cfg, train_cfg.model, guide_name)
    model.load_state_dict(ckpt["model"])
    guide.load_state_dict(ckpt["guide"])
    model.to(device).eval()
    guide.to(device).eval()
    return model, guide, {"model": model_cfg, "train": train_cfg, "step": ckpt["step"], "run_dir": run_dir}
