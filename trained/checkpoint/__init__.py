"""The checkpoint format of a run, behind one door: every read and write of checkpoints/ goes here.

    payload.py     `Checkpoint`, what a checkpoint holds, and its layout in a file (format 4)
    tensorfile.py  the safetensors codec: tensors as raw buffers, the rest as JSON, read bounded
    validate.py    `expect` (what a run's checkpoint must match) and `validate`, once a load
    store.py       checkpoints/: list, load with fall-back, write atomically, rotate, set aside
    upgrade.py     the one reader of the older pickled files (formats 1-3), by explicit command

`Run` (trained/run.py) loads through `latest`/`load` with `expect(run, model, guide)`, and a
training `Session` (train/session.py) writes through a `CheckpointFolder`; nothing else builds
an `Expected` or opens a checkpoint.

Threat model. Whoever can write into a run directory can plant a file in checkpoints/: a run
copied from someone else or downloaded, a folder shared with other users, a disk that tears or
zeroes a file, a person who renames or edits one. Every command of the run then reads it, so:

- no file can run code or build objects: tensors are raw buffers of a few numeric dtypes and
  everything else is JSON; pickles (formats 1-3) are read only by `ugvae upgrade`, which scans
  their opcodes within bounds before torch's weights-only loader sees them (upgrade.py);
- no file can exhaust memory, the stack or time: the header's size and nesting are capped, every
  declared shape must be that of the run's own modules (so memory is what the run's config
  implies) and fit the file's size before a buffer is read; JSON numbers are bounded in digits;
  only regular files are opened (no link, FIFO or device: files.py `open_regular`);
- no file can crash a command or change what it computes unnoticed: every field is validated
  (types, ranges, finiteness, weights of a sane magnitude, counters that agree), a failure is a
  `CheckpointError` of one line, and the file is skipped for the one before it;
- no file of another run or step is used: the run id and the step in the file must be the
  run's and the name's; a checkpoint of another config says which fields differ;
- no file is lost: a damaged file is set aside, never deleted or overwritten, and a damaged
  newest file never pushes a good one out of rotation (which trusts headers, so bit rot inside
  a buffer is caught when the file is loaded, not when it is kept);
- no half-written file is ever taken for a checkpoint: files are written atomically (files.py).
"""

from .payload import VERSION, Checkpoint, rng_state, set_rng_state
from .store import (
    CheckpointFolder,
    OlderCheckpoints,
    checkpoint_path,
    checkpoint_step,
    latest,
    list_checkpoints,
    load,
    never_checkpointed,
    older_checkpoints,
    set_aside,
)
from .validate import MAX_WEIGHT, Expected, expect

__all__ = [
    "MAX_WEIGHT",
    "VERSION",
    "Checkpoint",
    "CheckpointFolder",
    "Expected",
    "OlderCheckpoints",
    "checkpoint_path",
    "checkpoint_step",
    "expect",
    "latest",
    "list_checkpoints",
    "load",
    "never_checkpointed",
    "older_checkpoints",
    "rng_state",
    "set_aside",
    "set_rng_state",
]
