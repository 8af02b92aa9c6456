"""Checkpoint files: the payload a run's state is saved as, written atomically and read back checked.

`RUN/checkpoints/step-N.pt` holds `CHECKPOINT_KEYS`: the position in the data (step, epoch,
step within it), the bookkeeping of `train.book` (timings, losses not yet logged, the epoch's
loss sums, the last test result), model, guide and optimiser state_dicts, the RNG states and the
configs, and the identity of the run: its `run_id` (config.json's) and its step.

Reading never builds anything but plain values and never blocks:
- only a regular file is opened (not a link, FIFO, device or folder: `files.open_regular`), and
  only a zip archive of stored entries, as torch.save writes it (no decompression bomb);
- `torch.load(weights_only=True)` rebuilds tensors, numbers, strings, lists and dicts and refuses
  any other object, so a crafted file cannot run code. Files of format 1 and 2 pickled numpy's
  RNG state as an ndarray: they are read by `trained.checkpoint_legacy`, which builds numeric
  arrays only, and converted to the current layout;
- the result is validated against the schema of `trained.checkpoint_schema` (type, range, shape,
  dtype and finiteness of every field, bounded sizes), and, with `expect`, against the tensor
  shapes of the live modules; then the step must be the one the file name says, and the run id
  the run's.

A file that fails any of these is skipped for the one before it, with one line naming it;
rotation keeps the newest `keep` checkpoints that pass and sets the others aside as
`step-N.pt.unreadable` (`-2`, `-3`, ... when that name is taken), so that a damaged newest
file never pushes good ones out, and no file is ever overwritten: not an earlier set-aside
one, nor a foreign file at the name a new checkpoint takes. Runs made before run ids (no
`run_id` in config.json) accept checkpoints without one. `upgrade_checkpoints` rewrites the
files of formats 1 and 2 in the current format once.
"""

from __future__ import annotations

import logging
import os
import random
import re
import stat
import warnings
import zipfile
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import CheckpointError, RunError
from ..files import NotARegularFile, atomic_write, open_regular
from ..model import ModelConfig
from .checkpoint_legacy import Refused, load_legacy
from .checkpoint_schema import (
    CHECKPOINT_KEYS,
    Expected,
    Invalid,
    expected_from_payload,
    validate,
)
from .checkpoint_schema import expected_state as expected_state  # callers build `expect` with it
from .config import TrainConfig

CHECKPOINT_VERSION = 3  # 3: RNG states as tensors and lists, run_id; 2: version key; 1: none

# ASCII digits (\d would take any Unicode digit, which int() reads), at most 18: no step is larger.
CHECKPOINT_RE = re.compile(r"step-([0-9]{1,18})\.pt$")
SET_ASIDE = ".unreadable"
MAX_ARCHIVE_ENTRIES = 100_000
logger = logging.getLogger(__name__)
# Fields of the training config that fix the stream of groups: a checkpoint resumed under
# other values would continue a different run.
DATA_STREAM_FIELDS = ("dataset", "image_size", "mix", "group_size", "groups_per_step", "seed", "groups", "group_warmup")


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
    """Restore `rng_state()` (files of formats 1 and 2 are converted to it when they load)."""
    torch.set_rng_state(state["torch"].cpu())
    numpy_state = state["numpy"]
    keys = np.asarray(numpy_state["keys"], dtype=np.int64).astype(np.uint32)
    np.random.set_state(
        (numpy_state["name"], keys, numpy_state["pos"], numpy_state["has_gauss"], numpy_state["cached_gaussian"])
    )
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["state"]), python_state["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        # A run moved to a machine with fewer GPUs restores the generators it still has.
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), index)


def save_checkpoint(run_dir: str, step: int, payload: dict, keep: int, accept_unnamed: bool = False) -> str:
    """Write checkpoints/step-N.pt atomically, then keep the newest `keep` that load (with
    `accept_unnamed`, the run's own checkpoints from before it had an id count as its own).

    The payload is validated first, so no checkpoint is written that would be refused when
    read. A file already at the name is replaced only if it is a good checkpoint of this run
    (of the same step, then); anything else there is set aside first.
    """
    try:
        validate(payload)
    except Invalid as e:  # a bug of the code that built the payload, not of the user's files
        raise RuntimeError(f"the checkpoint payload of step {step} breaks the checkpoint schema: {e}") from None
    folder = os.path.join(run_dir, "checkpoints")
    os.makedirs(folder, exist_ok=True)
    remove_stale_temporaries(folder)
    path = os.path.join(folder, f"step-{step:09d}.pt")
    expect = expected_from_payload(payload)
    if os.path.lexists(path):
        try:
            load_checkpoint(path, run_id=payload.get("run_id"), accept_unnamed=accept_unnamed, expect=expect)
        except CheckpointError as e:
            notice(f"set aside {path} as {os.path.basename(set_aside(path))}: it {e.reason}")
    atomic_write(path, lambda f: torch.save(payload, f))
    rotate(run_dir, keep, payload.get("run_id"), known_good=path, expect=expect, accept_unnamed=accept_unnamed)
    return path


def remove_stale_temporaries(folder: str):
    """Temporary files of a writer that was killed would otherwise pile up, each a full checkpoint."""
    for name in os.listdir(folder):
        if ".tmp-" not in name:
            continue
        stale = os.path.join(folder, name)
        try:
            if not stat.S_ISDIR(os.lstat(stale).st_mode):  # a folder is nothing a writer left
                os.remove(stale)
        except FileNotFoundError:
            pass


def rotate(
    run_dir: str,
    keep: int,
    run_id: str | None = None,
    known_good: str | None = None,
    expect: Expected | None = None,
    accept_unnamed: bool = False,
):
    """Keep the newest `keep` checkpoints that load, delete older good ones, and set aside
    every one that does not load (see `set_aside`), so none is counted as kept."""
    good = 0
    for path in reversed(list_checkpoints(run_dir)):
        if path != known_good:
            try:
                load_checkpoint(path, run_id=run_id, accept_unnamed=accept_unnamed, expect=expect)
            except CheckpointError as e:
                notice(f"set aside {path} as {os.path.basename(set_aside(path))}: it {e.reason}")
                continue
        good += 1
        if good > keep:
            os.remove(path)


def set_aside(path: str) -> str:
    """Rename `path` to `path.unreadable`, or `.unreadable-2`, -3, ... if that name is taken;
    never over an existing file. Returns the new name."""
    for n in range(1, 10_000):
        target = path + SET_ASIDE + (f"-{n}" if n > 1 else "")
        if os.path.lexists(target):
            continue
        try:
            # link + unlink fails if the target appeared meanwhile, where rename would replace it.
            os.link(path, target, follow_symlinks=False)
        except FileExistsError:
            continue
        except OSError:  # a folder, or a filesystem without hard links
            os.rename(path, target)
            return target
        os.remove(path)
        return target
    raise RunError(f"cannot set aside {path}: {path}{SET_ASIDE} and 9,998 numbered names are taken; clear them")


def notice(message: str):
    """One line: what a library function did to the user's files, and why."""
    logger.warning(message)


def checkpoint_step(path: str) -> int:
    """The step a checkpoint's file name says (step-N.pt, with or without leading zeros)."""
    return int(CHECKPOINT_RE.fullmatch(os.path.basename(path))[1])


def list_checkpoints(run_dir: str) -> list[str]:
    """checkpoints/step-N.pt of `run_dir` by step, oldest first (whatever each file holds)."""
    folder = os.path.join(run_dir, "checkpoints")
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        raise RunError(f"{folder} is a file, not the folder of the run's checkpoints; move it aside") from None
    steps = {os.path.join(folder, n): int(m[1]) for n in names if (m := CHECKPOINT_RE.fullmatch(n))}
    return sorted(steps, key=steps.get)


def read_checkpoint(path: str, map_location="cpu"):
    """The object in the checkpoint file `path`, as weights-only loading builds it (formats 1
    and 2 converted); CheckpointError for anything that is not such a file."""
    try:
        f = open_regular(path, "checkpoint")
    except NotARegularFile as e:
        raise CheckpointError(path, e.reason.split(";")[0], "remove it") from None
    except OSError as e:
        raise CheckpointError(path, f"cannot be opened ({e.strerror})") from None
    with f:
        check_archive(f, path)
        # A pickle of another protocol draws a warning before it is refused: the refusal says enough.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return torch.load(f, map_location=map_location, weights_only=True)
            except Exception as e:  # truncated, foreign or malicious files raise many types
                if "GLOBAL numpy" not in str(e):
                    raise CheckpointError(path, f"cannot be read ({_why(e)})") from None
            f.seek(0)
            try:
                return load_legacy(f, map_location)
            except Invalid as e:
                raise CheckpointError(path, f"cannot be read as a checkpoint of format 1 or 2 ({e})") from None
            except Refused as e:
                raise CheckpointError(
                    path,
                    f"cannot be read (holds objects other than tensors, numbers and strings: {e})",
                ) from None
            except Exception as e:
                raise CheckpointError(path, f"cannot be read ({_why(e)})") from None


def _why(error: Exception) -> str:
    if "Weights only load" in str(error):
        return "holds objects other than tensors, numbers and strings"
    return type(error).__name__


def check_archive(f, path: str):
    """Refuse a file that is no zip archive of stored (uncompressed) entries, as torch.save
    writes: a compressed entry could expand to any size when torch reads it."""
    if f.read(4) != b"PK\x03\x04":
        raise CheckpointError(path, "cannot be read (it is no zip archive, as torch.save writes)")
    f.seek(0)
    try:
        with zipfile.ZipFile(f) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise CheckpointError(path, f"cannot be read (a damaged zip archive: {e})") from None
    if len(entries) > MAX_ARCHIVE_ENTRIES:
        raise CheckpointError(path, f"cannot be read (its archive has {len(entries)} entries)")
    compressed = [e.filename for e in entries if e.compress_type != zipfile.ZIP_STORED]
    if compressed:
        raise CheckpointError(
            path, f"cannot be read (it holds compressed entries, which torch.save never writes: {compressed[0][:60]})"
        )
    f.seek(0)


def load_checkpoint(
    path: str,
    map_location="cpu",
    run_id: str | None = None,
    accept_unnamed: bool = False,
    expect: Expected | None = None,
) -> dict:
    """The checkpoint at `path`, validated (see the module docstring): of the run `run_id` (when
    given; with `accept_unnamed`, a file that names no run counts as one of it), of the step its
    name says and, with `expect` (see `expected_state`), of the shapes of the live modules;
    tensors on `map_location`."""
    checkpoint = read_checkpoint(path, map_location)
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(checkpoint, dict) or k not in checkpoint]
    if missing:
        raise CheckpointError(path, f"is not a checkpoint of this package (it lacks {', '.join(missing)})")
    version = checkpoint.get("version", 1)
    if type(version) is not int or version < 1:
        raise CheckpointError(path, f"holds a bad field: `version` is {str(version)[:20]}, not a format number")
    if version > CHECKPOINT_VERSION:
        raise CheckpointError(
            path,
            f"has format version {version}, newer than the {CHECKPOINT_VERSION} this version of ugvae reads",
            "update ugvae to load it",
        )
    try:
        validate(checkpoint)
    except Invalid as e:
        raise CheckpointError(path, f"holds a bad field: {e}") from None
    if expect is not None:
        # A checkpoint of another config says which fields differ, before its shapes are compared.
        diffs = config_differences(checkpoint, *expect.config) if expect.config is not None else []
        if diffs:
            raise CheckpointError(path, f"was made with another config ({'; '.join(diffs)})", "start a new run")
        try:
            validate(checkpoint, expect)
        except Invalid as e:
            raise CheckpointError(path, f"holds a bad field: {e}") from None
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
    run_dir: str,
    run_id: str | None = None,
    map_location="cpu",
    accept_unnamed: bool = False,
    expect: Expected | None = None,
) -> dict | None:
    """The newest checkpoint of run `run_id` that loads and passes `load_checkpoint`'s checks
    (with `expect`, the shapes of the live modules); damaged, foreign or ill-fitting newer ones
    are skipped, with one line naming them. None where there is no checkpoint file; a RunError
    naming each file where there are some but none can be used."""
    skipped = []
    for path in reversed(list_checkpoints(run_dir)):
        try:
            checkpoint = load_checkpoint(path, map_location, run_id, accept_unnamed, expect)
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


def upgrade_checkpoints(run_dir: str, run_id: str | None = None) -> list[str]:
    """Rewrite the checkpoints of formats 1 and 2 in `run_dir` in the current format, once;
    returns the paths rewritten. With `run_id`, those without a run id are given that one.

    What it trusts: what `load_checkpoint` accepts, i.e. an old file's numeric arrays, tensors
    and numbers, validated; it rebuilds nothing else. Files that do not load are left as they
    are (and named by the next command that skips them).
    """
    upgraded = []
    for path in list_checkpoints(run_dir):
        try:
            checkpoint = load_checkpoint(path)
        except CheckpointError:
            continue
        if checkpoint.get("version", 1) >= CHECKPOINT_VERSION and not (run_id and checkpoint.get("run_id") is None):
            continue
        checkpoint = {**checkpoint, "version": CHECKPOINT_VERSION, "run_id": checkpoint.get("run_id") or run_id}
        validate(checkpoint)
        atomic_write(path, lambda f, c=checkpoint: torch.save(c, f))
        upgraded.append(path)
    return upgraded


def check_compatible(
    checkpoint: dict, model_cfg: ModelConfig, model_name: str, guide_name: str, train_cfg: TrainConfig | None = None
):
    """Raise a RunError naming every field in which `checkpoint` differs from the config asked for.

    The model fields decide whether the weights fit at all; with `train_cfg`, the fields that
    fix the stream of training groups are compared too, as resuming needs them unchanged.
    """
    diffs = config_differences(checkpoint, model_cfg, model_name, guide_name, train_cfg)
    if diffs:
        raise RunError(
            "checkpoint was made with another config ("
            + "; ".join(diffs)
            + "); use the checkpoint with the run that made it, or start a new run"
        )


def config_differences(
    checkpoint: dict, model_cfg: ModelConfig, model_name: str, guide_name: str, train_cfg: TrainConfig | None = None
) -> list[str]:
    """`field is A in the checkpoint but B here`, for every field of `check_compatible` that differs."""
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
    return [f"{k} is {theirs.get(k)!r} in the checkpoint but {v!r} here" for k, v in mine.items() if theirs.get(k) != v]


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
    """The state in `checkpoint`, after checking that it continues `run` (a trained.run.Run): the same
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
