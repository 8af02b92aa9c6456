"""Checkpoint files: the payload a run's state is saved as, written atomically and read back checked.

`RUN/checkpoints/step-N.pt` holds `CHECKPOINT_KEYS`: the position in the data (step, epoch,
step within it), the bookkeeping of `train.core` (timings, losses not yet logged, the epoch's
loss sums, the last test result), model, guide and optimiser state_dicts, the RNG states and the
configs. A torn newest checkpoint is skipped for the one before it.
"""

from __future__ import annotations

import glob
import os
import random
import re
import warnings

import numpy as np
import torch

from model import ModelConfig
from train.atomic import atomic_write
from train.config import TrainConfig
from train.errors import RunError

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
DATA_STREAM_FIELDS = ("dataset", "image_size", "mix", "group_size", "groups_per_step", "seed")


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
    checkpoint: dict, model_cfg: ModelConfig, model_name: str, guide_name: str, train_cfg: TrainConfig | None = None
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
        theirs.update({k: saved.get("train", {}).get(k) for k in DATA_STREAM_FIELDS})
    diffs = [
        f"{k} is {theirs.get(k)!r} in the checkpoint but {v!r} here" for k, v in mine.items() if theirs.get(k) != v
    ]
    if diffs:
        raise RunError(
            "checkpoint was made with another config ("
            + "; ".join(diffs)
            + "); use the checkpoint with the run that made it, or start a new run"
        )
