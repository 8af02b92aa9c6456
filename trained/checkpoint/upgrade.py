"""`ugvae upgrade RUN`: the one reader of the pickled checkpoints of formats 1-3 (`step-N.pt`).

Formats 1-3 were written by torch.save: a zip archive whose data.pkl is a pickle. No other
command reads them (trained/checkpoint/store.py names this one instead), and this one reads a
file only after these checks, each refusing the file in one line:

1. a regular file that is a zip archive of at most `MAX_ENTRIES` stored (uncompressed) entries,
   whose tensor data is at most what the run's modules and optimiser hold (`budget`), so that
   memory is bounded by the run's own config;
2. its data.pkl (at most `MAX_PICKLE_BYTES`) is scanned opcode by opcode (`scan`) before any
   unpickler sees it: at most `MAX_OPCODES`, ints of at most `MAX_INT_BITS` bits, strings of at
   most `MAX_STRING` characters, at most `MAX_SLICE` items between a MARK and what takes them,
   only the globals in `GLOBALS`, and nesting at most `MAX_DEPTH` deep, measured on a simulated
   stack of depths. The last is what stops an empty tuple wrapped 10**6 times (TUPLE1), which
   torch's weights-only unpickler would build and whose hash then overflows the C stack;
3. torch.load(weights_only=True) rebuilds it. Formats 1-2 pickled numpy's RNG keys as an array:
   numpy's names are bound to stand-ins (`LegacyArray`, `LegacyDtype`) that build numeric arrays
   from raw bytes and nothing else, never an object array read as pointers;
4. it is converted field by field (`convert`, typed reads, no walk of unknown values) and
   validated like any file of format 4 (store.py `encoded`), then written as step-N.safetensors.

The old file is then moved, never deleted, to RUN/pickled-checkpoints/ (a name taken there gets
`-2`, `-3`, ...); a file that fails is set aside in checkpoints/ as step-N.pt.unreadable. A run
made before run ids adopts the id its newest checkpoint carries, or a new one, and config.json
records it last, only after a checkpoint was written, so that an upgrade that fails changes
nothing.
"""

from __future__ import annotations

import math
import os
import pickletools
import uuid
import warnings
import zipfile
from dataclasses import dataclass, replace

import numpy as np
import torch

from ...errors import CheckpointError, RunError
from ...files import atomic_write
from ...guide import build
from ..run import Run
from .payload import Checkpoint
from .store import OLDER_RE, checkpoint_path, encoded, notice, older_checkpoints, open_checkpoint, problem_of, set_aside
from .tensorfile import Malformed, write
from .validate import Invalid, expect, shown

MAX_ENTRIES = 100_000
MAX_PICKLE_BYTES = 16 * 2**20
MAX_OPCODES = 2_000_000
MAX_DEPTH = 64
MAX_INT_BITS = 128
MAX_STRING = 2**20
MAX_SLICE = 2**20
PUT_AWAY = "pickled-checkpoints"


class Refused(ValueError):
    """A pickle, or a value in one, beyond what a checkpoint of formats 1-3 holds."""


# -- 1-2: the archive and its pickle ------------------------------------------------------------
_STORAGES = ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")
GLOBALS = {
    "collections OrderedDict",
    "torch._utils _rebuild_tensor_v2",
    "torch._utils _rebuild_parameter",
    "_codecs encode",  # bytes, as protocol 2 pickles them
    *(f"torch {kind}Storage" for kind in _STORAGES),
    # formats 1-2: numpy's RNG keys, bound to the stand-ins below
    "numpy.core.multiarray _reconstruct",
    "numpy._core.multiarray _reconstruct",
    "numpy ndarray",
    "numpy dtype",
}
_IN_PLACE = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}
_EMPTY = {"EMPTY_LIST", "EMPTY_DICT", "EMPTY_TUPLE", "EMPTY_SET"}


def scan(data: bytes) -> None:
    """Refused unless the pickle `data` stays within the bounds of the module docstring.

    Each stack item is (depth, text): a container is one deeper than what it holds, and `text`
    keeps a string pushed for STACK_GLOBAL. A container changed after it was memoised keeps the
    memo's depth; only immutable tuples and frozensets can be hashed, and their depth is exact.
    """
    if len(data) > MAX_PICKLE_BYTES:
        raise Refused(f"its pickle is {len(data)} bytes, more than {MAX_PICKLE_BYTES}")
    stack: list[tuple[int, str | None]] = []
    marks: list[int] = []
    memo: dict[int, tuple[int, str | None]] = {}
    try:
        for count, (op, arg, _) in enumerate(pickletools.genops(data)):
            if count >= MAX_OPCODES:
                raise Refused(f"its pickle has more than {MAX_OPCODES} opcodes")
            name = op.name
            _check_argument(name, arg)
            if name == "MARK":
                marks.append(len(stack))
                continue
            if name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
                continue
            if name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo[arg])
                continue
            below, sliced = _pop(op, stack, marks)
            if name in ("GLOBAL", "INST", "STACK_GLOBAL"):
                where = arg if name != "STACK_GLOBAL" else f"{sliced_or(below, 0)} {sliced_or(below, 1)}"
                if where not in GLOBALS:
                    raise Refused(f"its pickle names {shown(where)}, which no checkpoint holds")
            popped = below + sliced
            if name in _IN_PLACE:
                depth = max([below[0][0]] + [1 + d for d, _ in popped[1:]])
            elif name in _EMPTY:
                depth = 1
            else:
                depth = 1 + max(d for d, _ in popped) if popped else 0
            if depth > MAX_DEPTH:
                raise Refused(f"its pickle nests more than {MAX_DEPTH} levels deep")
            text = arg if isinstance(arg, str) and name.endswith(("UNICODE", "STRING", "UNICODE8")) else None
            stack.extend([(depth, text)] * len(op.stack_after))
    except Refused:
        raise
    except (ValueError, IndexError, KeyError, RecursionError) as e:  # a damaged pickle, or an int() too long
        raise Refused(f"its pickle is damaged ({type(e).__name__})") from None


def sliced_or(items: list, index: int) -> str:
    return items[index][1] if len(items) > index and items[index][1] is not None else "?"


def _check_argument(name: str, arg) -> None:
    if name.startswith("EXT"):
        raise Refused("its pickle uses the copyreg extension registry")
    if type(arg) is int and arg.bit_length() > MAX_INT_BITS:
        raise Refused(f"its pickle holds an int of {arg.bit_length()} bits")
    if isinstance(arg, (str, bytes, bytearray)) and len(arg) > MAX_STRING:
        raise Refused(f"its pickle holds a string of {len(arg)} characters")


def _pop(op, stack: list, marks: list) -> tuple[list, list]:
    """(the items `op` takes below its mark, or all it takes; the items above its mark)."""
    before = op.stack_before
    sliced = []
    if pickletools.markobject in before:
        start = marks.pop()
        sliced, stack[start:] = stack[start:], []
        if len(sliced) > MAX_SLICE:
            raise Refused(f"its pickle builds a container of {len(sliced)} items")
        before = before[: before.index(pickletools.markobject)]
    count = len(before)
    if count > len(stack):
        raise IndexError("stack underflow")
    below = stack[len(stack) - count :]
    del stack[len(stack) - count :]
    return below, sliced


def budget(fits) -> int:
    """Bytes of tensor data an old checkpoint of the run may hold: its weights, two Adam moments
    each, and 64 MiB for the rest (RNG states, losses, cluster assignments)."""
    weights = sum(math.prod(shape) * dtype.itemsize for shape, dtype in [*fits.model.values(), *fits.guide.values()])
    return 3 * weights + 2**26


def read_older(path: str, limit: int):
    """The object in the pickled checkpoint `path`, after the checks 1-3 of the module docstring."""
    with open_checkpoint(path) as f:
        if f.read(4) != b"PK\x03\x04":
            raise CheckpointError(path, "cannot be read (it is no zip archive, as torch.save writes)")
        f.seek(0)
        try:
            with zipfile.ZipFile(f) as archive:
                entries = archive.infolist()
                if len(entries) > MAX_ENTRIES:
                    raise Refused(f"its archive has {len(entries)} entries")
                if any(e.compress_type != zipfile.ZIP_STORED for e in entries):
                    raise Refused("it holds compressed entries, which torch.save never writes")
                pickles = [e for e in entries if e.filename.endswith("/data.pkl")]
                if len(pickles) != 1 or pickles[0].file_size > MAX_PICKLE_BYTES:
                    raise Refused("its archive holds no data.pkl of a checkpoint's size")
                data = sum(e.file_size for e in entries if "/data/" in e.filename)
                if data > limit:
                    raise Refused(f"it holds {data} bytes of tensors, more than the run's modules ({limit})")
                scan(archive.read(pickles[0]))
        except Refused as e:
            raise CheckpointError(path, f"cannot be read ({e})") from None
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
            raise CheckpointError(path, f"cannot be read (a damaged zip archive: {type(e).__name__})") from None
        f.seek(0)
        with warnings.catch_warnings(), torch.serialization.safe_globals(LEGACY_GLOBALS):
            warnings.simplefilter("ignore")  # a refusal says enough
            try:
                return torch.load(f, map_location="cpu", weights_only=True)
            except Refused as e:
                raise CheckpointError(path, f"cannot be read ({e})") from None
            except Exception as e:  # torch's loader raises many types for a foreign or damaged file
                why = "holds objects other than tensors, numbers and strings" if "Weights only" in str(e) else ""
                raise CheckpointError(path, f"cannot be read ({why or type(e).__name__})") from None


# -- 3: numpy's arrays of formats 1-2 -----------------------------------------------------------
NUMERIC_DTYPES = {f"{k}{n}" for k, sizes in (("u", "1248"), ("i", "1248"), ("f", "248")) for n in sizes} | {"b1"}
MAX_ARRAY = 2**20


class LegacyDtype:
    """Stands for `np.dtype(name, align, copy)` of a pickled numeric dtype: a name and a byte order."""

    def __init__(self, name, align=False, copy=True):
        if type(name) is not str or name not in NUMERIC_DTYPES:
            raise Refused("a numpy array of other than a numeric dtype")
        self.name, self.order = name, "="

    def __setstate__(self, state):
        # (version, byte order, subarray, names, fields, itemsize, alignment, flags) of a plain dtype
        if (
            type(state) is not tuple
            or len(state) != 8
            or state[0] != 3
            or state[1] not in ("<", ">", "|", "=")
            or state[2:5] != (None, None, None)
            or state[5:] != (-1, -1, 0)
        ):
            raise Refused("a numpy dtype with fields, a subarray or flags")
        self.order = state[1]

    def numpy(self) -> np.dtype:
        return np.dtype(self.name).newbyteorder(self.order if self.order != "|" else "=")


class LegacyArray:
    """Stands for an `np.ndarray` that `_reconstruct` makes and its state fills."""

    def __init__(self):
        self.array = None

    def __setstate__(self, state):
        if type(state) is not tuple or len(state) != 5 or state[0] != 1:
            raise Refused("not the state of a numpy array")
        _, shape, dtype, fortran, data = state
        if type(dtype) is not LegacyDtype or type(fortran) is not bool or type(data) is not bytes:
            raise Refused("a numpy array of other than a numeric dtype and raw bytes")
        if type(shape) is not tuple or len(shape) > 4 or any(type(n) is not int or n < 0 for n in shape):
            raise Refused("a numpy array shape that is not a few whole numbers")
        count, dtype = math.prod(shape), dtype.numpy()
        if count > MAX_ARRAY or len(data) != count * dtype.itemsize:
            raise Refused(f"a numpy array of {count} elements with {len(data)} bytes of data")
        self.array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


def reconstruct(cls, shape, typecode):
    if cls is not LegacyArray or shape != (0,) or typecode != b"b":
        raise Refused("not the reconstruction of a plain numpy array")
    return LegacyArray()


LEGACY_GLOBALS = [
    (reconstruct, "numpy.core.multiarray._reconstruct"),
    (reconstruct, "numpy._core.multiarray._reconstruct"),
    (LegacyArray, "numpy.ndarray"),
    (LegacyDtype, "numpy.dtype"),
]


# -- 4: the fields, converted ---------------------------------------------------------------
def _field(saved: dict, key: str, kinds: tuple, optional: bool = False):
    value = saved.get(key)
    if value is None and optional:
        return None
    if type(value) not in kinds:  # exact types: True is no step
        raise Invalid(f"`{key}` is {shown(value)}, not what format 1-3 wrote there")
    return value


def _tensor(value, field: str) -> torch.Tensor:
    """A dense tensor whose elements all lie in its own storage (no stride-0 view of one float)."""
    if not isinstance(value, torch.Tensor) or value.layout != torch.strided or value.is_quantized:
        raise Invalid(f"`{field}` is {shown(value)}, not a dense tensor")
    if value.numel() * value.element_size() > value.untyped_storage().nbytes():
        raise Invalid(f"`{field}` has {value.numel()} elements, more than its stored data holds")
    return value


def _plain(value, field: str, depth: int = 3):
    """A JSON value of at most `depth` levels, tuples as lists; Invalid for anything else."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    if depth and type(value) in (list, tuple) and len(value) <= 65_536:
        return [_plain(x, field, depth - 1) for x in value]
    if depth and isinstance(value, dict) and len(value) <= 256 and all(type(k) is str for k in value):
        return {k: _plain(v, field, depth - 1) for k, v in value.items()}
    raise Invalid(f"`{field}` holds {shown(value)}, not a JSON value")


def _state_dict(value, field: str) -> dict:
    if not isinstance(value, dict) or not all(type(k) is str for k in value):
        raise Invalid(f"`{field}` is {shown(value)}, not a state_dict")
    return {k: _tensor(v, f"{field}.{k}") for k, v in value.items()}


def _rng(saved) -> dict:
    """The RNG states of formats 1-2 (numpy's and Python's as tuples) or 3 (dicts), as rng_state()'s."""
    if not isinstance(saved, dict) or not isinstance(saved.get("cuda", []), list):
        raise Invalid("`rng` is not the RNG states of format 1-3")
    numpy, python = saved.get("numpy"), saved.get("python")
    if type(numpy) is tuple and len(numpy) == 5 and type(numpy[1]) is LegacyArray:  # formats 1-2
        keys = numpy[1].array
        if keys is None or keys.dtype.kind != "u" or keys.shape != (624,):
            raise Invalid("`rng.numpy` keys are not 624 unsigned words")
        name, _, pos, has_gauss, cached_gaussian = numpy
        numpy = {"name": name, "keys": keys.astype(np.uint32), "pos": pos, "has_gauss": has_gauss}
        numpy["cached_gaussian"] = cached_gaussian
    elif isinstance(numpy, dict) and isinstance(numpy.get("keys"), torch.Tensor):  # format 3
        keys = _tensor(numpy["keys"], "rng.numpy.keys")
        if keys.shape != (624,) or keys.dtype != torch.int64 or bool(((keys < 0) | (keys >= 2**32)).any()):
            raise Invalid("`rng.numpy.keys` are not 624 words of 32 bits")
        numpy = {**numpy, "keys": keys.numpy().astype(np.uint32)}
    else:
        raise Invalid("`rng.numpy` is not numpy's MT19937 state")
    if numpy.get("name") != "MT19937":
        raise Invalid("`rng.numpy` is not numpy's MT19937 state")
    if type(python) is tuple and len(python) == 3:  # formats 1-2
        python = {"version": python[0], "state": python[1], "gauss_next": python[2]}
    if not isinstance(python, dict) or type(python.get("state")) not in (list, tuple):
        raise Invalid("`rng.python` is not Python's random state")
    return {
        "torch": _tensor(saved.get("torch"), "rng.torch"),
        "numpy": {
            "keys": torch.from_numpy(numpy["keys"]),
            **{k: _plain(numpy.get(k), f"rng.numpy.{k}", 0) for k in ("pos", "has_gauss", "cached_gaussian")},
        },
        "python": {k: _plain(python.get(k), f"rng.python.{k}", 1) for k in ("version", "state", "gauss_next")},
        "cuda": [_tensor(t, f"rng.cuda[{i}]") for i, t in enumerate(saved.get("cuda", []))],
    }


def _optimizer(saved) -> dict:
    if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict):
        raise Invalid("`optimizer` is not an optimiser's state_dict")
    state = {}
    for param, entry in saved["state"].items():
        if type(param) is not int or not isinstance(entry, dict):
            raise Invalid("`optimizer.state` is not per-parameter state")
        where = f"optimizer.state.{param}"
        state[param] = {
            str(k): _tensor(v, where) if isinstance(v, torch.Tensor) else _plain(v, where, 0) for k, v in entry.items()
        }
    groups = saved.get("param_groups")
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise Invalid("`optimizer.param_groups` is not a list of param groups")
    return {"state": state, "param_groups": [_plain(g, "optimizer.param_groups", 2) for g in groups]}


def convert(saved) -> Checkpoint:
    """The Checkpoint of a loaded file of format 1-3 (its run id None where it named no run)."""
    if not isinstance(saved, dict):
        raise Invalid(f"holds {shown(saved)}, not a checkpoint")
    version = saved.get("version", 1)
    if version not in (1, 2, 3) or type(version) is not int:
        raise Invalid(f"says format version {shown(version)}, not 1, 2 or 3")
    if version == 3 and isinstance((saved.get("rng") or {}).get("numpy"), tuple):
        raise Invalid("holds numpy arrays, which only formats 1 and 2 pickled")
    step, epoch = _field(saved, "step", (int,)), _field(saved, "epoch", (int,))
    in_epoch = _field(saved, "step_in_epoch", (int,))
    epoch_loss = _field(saved, "epoch_loss", (tuple, list))
    assignments = saved.get("group_assignments")
    samples = _field(saved, "train_samples", (int,), optional=True)
    if assignments is not None:
        assignments = _tensor(assignments, "group_assignments")
        samples = samples if samples is not None else len(assignments)
    # Formats 1-3 did not keep the steps per epoch; after a whole epoch the counters tell it.
    per_epoch = (step - in_epoch) // epoch if epoch > 0 and (step - in_epoch) % epoch == 0 else None
    return Checkpoint(
        run_id=_field(saved, "run_id", (str,), optional=True),
        step=step,
        epoch=epoch,
        step_in_epoch=in_epoch,
        steps_per_epoch=per_epoch,
        train_seconds=_field(saved, "train_seconds", (int, float)),
        epoch_loss=tuple(_plain(x, "epoch_loss", 0) for x in epoch_loss),
        last_result=_plain(_field(saved, "last_result", (dict,)), "last_result", 2),
        train_samples=samples,
        config=_plain(_field(saved, "config", (dict,)), "config", 3),
        model=_state_dict(saved.get("model"), "model"),
        guide=_state_dict(saved.get("guide"), "guide"),
        window=_tensor(saved.get("window"), "window"),
        assignments=assignments,
        optimizer=_optimizer(saved.get("optimizer")),
        rng=_rng(saved.get("rng")),
    )


# -- the command -------------------------------------------------------------------------------
@dataclass
class Upgraded:
    """What `upgrade_run` did: the files written, those refused (name, why), the run id adopted."""

    run_dir: str
    written: list[str]
    refused: list[tuple[str, str]]
    adopted_id: str | None


def upgrade_run(run: Run | str | os.PathLike) -> Upgraded:
    """Convert the pickled checkpoints of `run` (a Run or its directory) to format 4, once, under
    its lock; see the module docstring. A RunError if it has some and none converts."""
    run = run if isinstance(run, Run) else Run.open(run)
    with run.lock():
        return _upgrade(run)


def _upgrade(run: Run) -> Upgraded:
    model, guide = build(run.model_cfg, run.model_name, run.guide_name)
    fits = expect(run, model, guide, training=True)
    limit = budget(fits)
    older = list(reversed(older_checkpoints(run.run_dir)))  # newest first
    refused, loaded = [], []
    for path in older:
        try:
            loaded.append((path, convert(read_older(path, limit))))
        except (CheckpointError, Invalid) as e:
            refused.append((path, e.reason if isinstance(e, CheckpointError) else _why(e)))
    # A run made before run ids takes the id its newest checkpoint carries, or a new one.
    ids = [checkpoint.run_id for _, checkpoint in loaded if checkpoint.run_id]
    run_id = run.run_id or (ids[0] if ids else uuid.uuid4().hex)
    unnamed_are_mine = run.run_id is None or run.owns_unnamed_checkpoints
    written = []
    for path, checkpoint in loaded:
        try:
            written.append(_write(path, checkpoint, run_id, unnamed_are_mine, fits._replace(run_id=run_id)))
        except (Invalid, Malformed) as e:
            refused.append((path, _why(e)))
    for path, reason in refused:
        notice(f"set aside {path} as {os.path.basename(set_aside(path))}: it {reason}")
    adopted = None
    if written and run.run_id is None:  # last: a failed upgrade leaves config.json as it was
        run.run_id = adopted = run_id
        run.save_config()
    if refused and not written:
        names = "; ".join(f"{os.path.basename(p)} ({why})" for p, why in refused[:3])
        raise RunError(f"no checkpoint of {run.run_dir} could be upgraded: {names}; restore one from a copy")
    return Upgraded(run.run_dir, written, [(os.path.basename(p), why) for p, why in refused], adopted)


def _why(error: Exception) -> str:
    return f"holds a bad field: {error}" if str(error).startswith("`") else str(error)


def _write(path: str, checkpoint: Checkpoint, run_id: str, unnamed_are_mine: bool, fits) -> str:
    """Write `checkpoint` of the old file `path` as format 4 and put the old file away; its path."""
    named = int(OLDER_RE.fullmatch(os.path.basename(path))[1])
    if checkpoint.run_id not in (run_id, None) or (checkpoint.run_id is None and not unnamed_are_mine):
        theirs = f"run {checkpoint.run_id}" if checkpoint.run_id else "no run"
        raise Invalid(f"belongs to {theirs}, not to run {run_id} of its directory")
    tensors, metadata = encoded(replace(checkpoint, run_id=run_id), fits, named)
    target = checkpoint_path(os.path.dirname(os.path.dirname(path)), checkpoint.step)
    if os.path.lexists(target) and (problem := problem_of(target, fits)):
        notice(f"set aside {target} as {os.path.basename(set_aside(target))}: it {problem}")
    if not os.path.lexists(target):  # else an earlier, interrupted upgrade wrote it already
        atomic_write(target, lambda f: write(f, tensors, metadata))
    _put_away(path)
    return target


def _put_away(path: str) -> str:
    """Move the old file `path` to RUN/pickled-checkpoints/, never over a file there."""
    folder = os.path.join(os.path.dirname(os.path.dirname(path)), PUT_AWAY)
    os.makedirs(folder, exist_ok=True)
    name = os.path.basename(path)
    for n in range(1, 10_000):
        target = os.path.join(folder, name + (f"-{n}" if n > 1 else ""))
        try:
            # link + unlink fails if the target exists, where rename would replace it.
            os.link(path, target, follow_symlinks=False)
        except FileExistsError:
            continue
        except OSError:  # a filesystem without hard links
            if os.path.lexists(target):
                continue
            os.rename(path, target)
            return target
        os.remove(path)
        return target
    raise RunError(f"cannot put {path} away: {folder} holds 9,999 files of its name; clear them")
