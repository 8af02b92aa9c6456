"""Checkpoint files: the payload a run's state is saved as, written atomically and read back checked.

`RUN/checkpoints/step-N.pt` holds `CHECKPOINT_KEYS`: the position in the data (step, epoch,
step within it), the bookkeeping of `train.core` (timings, losses not yet logged, the epoch's
loss sums, the last test result), model, guide and optimiser state_dicts, the RNG states and the
configs, and the identity of the run: its `run_id` (config.json's) and its step.

Checkpoints are read with `torch.load(weights_only=True)`, which rebuilds tensors, numbers,
strings, lists and dicts and refuses any other object, so a crafted file cannot run code. The
RNG states are saved in those terms (`rng_state`). Files of format version 1 (no `version` key,
written before this format) pickled numpy's RNG state as an ndarray: they are read with numpy's
array constructor allowed too, which builds arrays and nothing else, and `set_rng_state`
converts their state.

A file that does not load, or belongs to another run or another step than its name says, is
skipped for the one before it, with one line naming it; rotation keeps the newest `keep`
checkpoints that load and sets the others aside as `step-N.pt.unreadable`, so that a damaged
newest file never pushes good ones out. Runs made before run ids (no `run_id` in config.json)
accept checkpoints without one.
"""

from __future__ import annotations

import glob
import logging
import os
import random
import re
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import CheckpointError, RunError
from ..files import atomic_write
from ..model import ModelConfig
from .config import TrainConfig

CHECKPOINT_VERSION = 3  # 3: RNG states as tensors and lists, run_id; 2: version key; 1: none

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
logger = logging.getLogger(__name__)
DATA_STREAM_FIELDS = ("dataset", "image_size", "mix", "group_size", "groups_per_step", "seed", "groups", "group_warmup")


# What numpy needs to rebuild the RNG state of a version-1 checkpoint: array and dtype
# constructors, which build arrays and nothing else (torch's documented allowlist for numpy).
_reconstruct = (getattr(np, "_core", None) or np.core).multiarray._reconstruct  # numpy 2 or 1
NUMPY_ARRAY_GLOBALS = [
    (_reconstruct, "numpy.core.multiarray._reconstruct"),
    (_reconstruct, "numpy._core.multiarray._reconstruct"),
    np.ndarray,
    np.dtype,
    type(np.dtype(np.uint32)),
]


def rng_state() -> dict:
    """The RNG states as tensors, numbers and lists (all that weights_only loading rebuilds)."""
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict):
    """Restore `rng_state()`, or the pickled tuples of a version-1 checkpoint."""
    torch.set_rng_state(state["torch"].cpu())
    numpy_state, python_state = state["numpy"], state["python"]
    if isinstance(numpy_state, dict):
        keys = np.asarray(numpy_state["keys"], dtype=np.int64).astype(np.uint32)
        numpy_state = (
            numpy_state["name"],
            keys,
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    np.random.set_state(numpy_state)
    if isinstance(python_state, dict):
        python_state = (python_state["version"], tuple(python_state["state"]), python_state["gauss_next"])
    random.setstate(python_state)
    if "cuda" in state and torch.cuda.is_available():
        # A run moved to a machine with fewer GPUs restores the generators it still has.
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), index)


def save_checkpoint(run_dir: str, step: int, payload: dict, keep: int) -> str:
    """Write checkpoints/step-N.pt atomically, then keep the newest `keep` that load."""
    folder = os.path.join(run_dir, "checkpoints")
    os.makedirs(folder, exist_ok=True)
    # Temporary files of a writer that was killed would otherwise pile up, each a full checkpoint.
    for stale in glob.glob(os.path.join(folder, "*.tmp-*")):
        os.remove(stale)
    path = os.path.join(folder, f"step-{step:09d}.pt")
    atomic_write(path, lambda f: torch.save(payload, f))
    rotate(run_dir, keep, payload.get("run_id"), known_good=path)
    return path


def rotate(run_dir: str, keep: int, run_id: str | None = None, known_good: str | None = None):
    """Keep the newest `keep` checkpoints that load, delete older good ones, and set aside
    (rename to .unreadable) every one that does not load, so none is counted as kept."""
    good = 0
    for path in reversed(list_checkpoints(run_dir)):
        if path != known_good:
            try:
                load_checkpoint(path, run_id=run_id, mmap=True)
            except CheckpointError as e:
                os.replace(path, path + ".unreadable")
                notice(f"set aside {path} as {os.path.basename(path)}.unreadable: it {e.reason}")
                continue
        good += 1
        if good > keep:
            os.remove(path)


def notice(message: str):
    """One line: what a library function did to the user's files, and why."""
    logger.warning(message)


def list_checkpoints(run_dir: str) -> list[str]:
    paths = glob.glob(os.path.join(run_dir, "checkpoints", "step-*.pt"))
    return sorted((p for p in paths if CHECKPOINT_RE.search(p)), key=lambda p: int(CHECKPOINT_RE.search(p)[1]))


def load_checkpoint(
    path: str, map_location="cpu", run_id: str | None = None, mmap: bool = False, accept_unnamed: bool = False
) -> dict:
    """The checkpoint at `path`, checked to be one of the run `run_id` (when given; with
    `accept_unnamed`, a file that names no run counts as one of it) and of the step its name
    says; tensors on `map_location`."""
    try:
        # A pickle of another protocol draws a warning before it is refused: the refusal says enough.
        with torch.serialization.safe_globals(NUMPY_ARRAY_GLOBALS), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # truncated, foreign or malicious files raise many types
        what = "holds objects other than tensors, numbers and strings" if "Weights only load" in str(e) else ""
        raise CheckpointError(path, f"cannot be read ({what or type(e).__name__})") from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(checkpoint, dict) or k not in checkpoint]
    if missing:
        raise CheckpointError(path, f"is not a checkpoint of this package (it lacks {', '.join(missing)})")
    version = checkpoint.get("version", 1)
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise CheckpointError(
            path,
            f"has format version {version}, newer than the {CHECKPOINT_VERSION} this version of ugvae reads",
            "update ugvae to load it",
        )
    named = CHECKPOINT_RE.search(os.path.basename(path))
    if named and checkpoint["step"] != int(named[1]):
        raise CheckpointError(
            path, f"holds step {checkpoint['step']}, not the step its name says", "it was renamed or copied in"
        )
    theirs = checkpoint.get("run_id")
    if run_id is not None and theirs != run_id and not (accept_unnamed and theirs is None):
        raise CheckpointError(
            path,
            f"belongs to {'run ' + theirs if theirs else 'a run without an id'}, not to run {run_id} of its directory",
            "a checkpoint copied in from another run is never used",
        )
    return checkpoint


def latest_checkpoint(
    run_dir: str, run_id: str | None = None, map_location="cpu", accept_unnamed: bool = False
) -> dict | None:
    """The newest checkpoint of run `run_id` that loads; damaged or foreign newer ones are
    skipped, with one line naming them. None where there is no checkpoint file; a RunError
    naming each file where there are some but none can be used."""
    skipped = []
    for path in reversed(list_checkpoints(run_dir)):
        try:
            checkpoint = load_checkpoint(path, map_location, run_id, accept_unnamed=accept_unnamed)
        except CheckpointError as e:
            skipped.append(f"{os.path.basename(path)} ({e.reason})")
            continue
        if skipped:
            notice(f"skipped checkpoints of {run_dir} that cannot be used: {'; '.join(skipped)}")
        return checkpoint
    if skipped:
        raise RunError(
            f"no checkpoint of {run_dir} can be used: {'; '.join(skipped)}; restore one from a copy or start a new run"
        )
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
    # A field missing from an older checkpoint had its default value then.
    theirs = {
        "model": saved.get("model_name"),
        "guide": saved.get("guide_name"),
        **{k: saved.get("model", {}).get(k, v) for k, v in ModelConfig().to_dict().items()},
    }
    if train_cfg is not None:
        mine.update({k: getattr(train_cfg, k) for k in DATA_STREAM_FIELDS})
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


# -- the payload: a session's state, both ways ----------------------------------------------
@dataclass
class SavedState:
    """What a checkpoint restores: the book's counters and window (train/book.py), the
    sampler's state, the modules' and optimiser's state_dicts and the RNG states."""

    book: dict
    sampler: dict
    model: dict
    guide: dict
    optimizer: dict
    rng: dict


BOOK_KEYS = ("step", "epoch", "step_in_epoch", "train_seconds", "last_result", "window", "epoch_loss")


def make_checkpoint(
    *, run_id, config: dict, book_state: dict, sampler_state: dict, train_samples: int, model, guide, optimizer
) -> dict:
    """The payload of `save_checkpoint`: `CHECKPOINT_KEYS` and the run's identity."""
    return {
        "version": CHECKPOINT_VERSION,
        "run_id": run_id,
        **{k: book_state[k] for k in BOOK_KEYS},
        "train_samples": train_samples,
        # clusters:ALPHA groups of the epoch under way draw from these
        "group_assignments": sampler_state.get("assignments"),
        "model": model.state_dict(),
        "guide": guide.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": rng_state(),
        "config": config,
    }


def read_state(checkpoint: dict, run, train_samples: int) -> SavedState:
    """The state in `checkpoint`, after checking that it continues `run` (a train.run.Run): the same
    model config and names, the same stream of training groups, the same number of training images."""
    cfg = run.train_cfg
    check_compatible(checkpoint, run.model_cfg, run.model_name, run.guide_name, cfg)
    saved_samples = checkpoint.get("train_samples", train_samples)
    if saved_samples != train_samples:
        raise RunError(
            f"{cfg.dataset} now has {train_samples} training images but had {saved_samples} at the checkpoint; "
            "restore the data or start a new run"
        )
    return SavedState(
        book={k: checkpoint[k] for k in BOOK_KEYS},
        # clusters:ALPHA samplers keep their assignments (data/sampling.py); the others nothing.
        sampler={} if checkpoint.get("group_assignments") is None else {"assignments": checkpoint["group_assignments"]},
        model=checkpoint["model"],
        guide=checkpoint["guide"],
        optimizer=checkpoint["optimizer"],
        rng=checkpoint["rng"],
    )
