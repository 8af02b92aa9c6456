"""What a loaded checkpoint must hold, field by field, before anything reads it.

`torch.load(weights_only=True)` builds only tensors, numbers, strings and containers, but any of
them anywhere: a string where a state_dict belongs, a float step, a tensor of another shape than
the model's, NaN weights, a list that contains itself. `validate` checks every field of
`trained.checkpoints.CHECKPOINT_KEYS` (and the optional ones) against its type, range, shape and
dtype, and raises `Invalid` naming the first field that fails, so that the file is skipped for
the previous one instead of crashing whatever reads it next.

The checks follow the schema of each field, never a generic walk, so a self-referencing or
deeply nested value is refused at its first level instead of exhausting the stack or memory;
every container and tensor has a bounded size. Numbers a step depends on (the step counters,
weights, optimiser moments, the losses not yet logged, the RNG states) must be finite; the
metrics of the last evaluation (`last_result`) are reports and may hold inf or NaN.

Tensor shapes can only be checked against live modules: a caller passes `expected_state(model,
guide, optimizer)`, and a state_dict whose keys, shapes or dtypes differ is refused.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch

MAX_COUNT = 2**62  # steps, epochs, samples: far beyond any run, far below int64
MAX_KEYS = 100_000  # entries of a state_dict, an optimiser's state
MAX_ITEMS = 65_536  # entries of lists of metrics, param ids
MAX_TEXT = 4096
MAX_TENSOR_ELEMENTS = 2**34
TORCH_RNG_BYTES = torch.get_rng_state().numel()
MT19937_WORDS = 624


class Invalid(Exception):
    """A field that does not hold what the schema says; the message names it."""


@dataclass(frozen=True)
class Expected:
    """The tensors of live modules that a checkpoint's state_dicts must match: name -> (shape,
    dtype) for model and guide, and the shape of each optimiser parameter in order."""

    model: dict[str, tuple[tuple[int, ...], torch.dtype]]
    guide: dict[str, tuple[tuple[int, ...], torch.dtype]]
    optimizer: tuple[tuple[int, ...], ...] | None = None
    # (model_cfg, model_name, guide_name[, train_cfg]) the checkpoint's config must match
    config: tuple | None = None


def expected_state(model, guide, optimizer=None, config: tuple | None = None) -> Expected:
    """What `model`, `guide` and (optionally) `optimizer` load, and the config a checkpoint must
    have been made with: pass it as `expect=`."""
    shapes = None
    if optimizer is not None:
        shapes = tuple(tuple(p.shape) for group in optimizer.param_groups for p in group["params"])
    return Expected(_shapes(model.state_dict()), _shapes(guide.state_dict()), shapes, config)


def expected_from_payload(payload: dict) -> Expected:
    """The model and guide shapes of a checkpoint about to be written: older ones must match them."""
    return Expected(_shapes(payload["model"]), _shapes(payload["guide"]))


def _shapes(state_dict: dict) -> dict:
    return {k: (tuple(v.shape), v.dtype) for k, v in state_dict.items()}


# -- scalars ---------------------------------------------------------------------------------


def whole(value, field: str, low: int = 0, high: int = MAX_COUNT) -> int:
    if type(value) is not int:
        raise Invalid(f"`{field}` is {_kind(value)}, not a whole number")
    if not low <= value <= high:
        raise Invalid(f"`{field}` is {value}, outside [{low}, {high}]")
    return value


def number(value, field: str, finite: bool = True, low: float = -math.inf) -> float:
    if type(value) not in (int, float):
        raise Invalid(f"`{field}` is {_kind(value)}, not a number")
    if finite and not math.isfinite(value):
        raise Invalid(f"`{field}` is {value}, not a finite number")
    if value < low:
        raise Invalid(f"`{field}` is {value}, below {low}")
    return value


def text(value, field: str, max_len: int = MAX_TEXT) -> str:
    if type(value) is not str:
        raise Invalid(f"`{field}` is {_kind(value)}, not a string")
    if len(value) > max_len:
        raise Invalid(f"`{field}` is a string of {len(value)} characters, more than {max_len}")
    return value


def name(value, field: str, max_len: int = 128) -> str:
    """A key of a dict: a string of at most `max_len` characters."""
    if type(value) is not str or len(value) > max_len:
        shown = f"{_kind(value)}" if type(value) is not str else f"a string of {len(value)} characters"
        raise Invalid(f"`{field}` has a key that is {shown}, not a name")
    return value


def scalar(value, field: str):
    """A JSON scalar: None, true/false, a number or a bounded string."""
    if value is None or type(value) in (bool, int, float):
        return value
    return text(value, field)


def mapping(value, field: str, max_keys: int = MAX_KEYS) -> dict:
    if type(value) not in (dict, OrderedDict):  # state_dicts are OrderedDicts
        raise Invalid(f"`{field}` is {_kind(value)}, not a dict")
    if len(value) > max_keys:
        raise Invalid(f"`{field}` has {len(value)} entries, more than {max_keys}")
    return value


def sequence(value, field: str, max_items: int = MAX_ITEMS, kinds=(list, tuple)) -> list | tuple:
    if type(value) not in kinds:
        raise Invalid(f"`{field}` is {_kind(value)}, not a list")
    if len(value) > max_items:
        raise Invalid(f"`{field}` has {len(value)} items, more than {max_items}")
    return value


def _kind(value) -> str:
    kind = type(value).__name__
    return f"{'an' if kind[:1].lower() in 'aeiou' else 'a'} {kind}"


# -- tensors ---------------------------------------------------------------------------------

FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INTEGERS = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def tensor(value, field: str, dtypes=FLOATS + INTEGERS + (torch.bool,), shape=None, finite: bool = True):
    """A dense tensor of one of `dtypes` (and of `shape`, when given) whose elements all lie in
    its own storage (no stride-0 view that would expand on the first operation)."""
    if not isinstance(value, torch.Tensor):
        raise Invalid(f"`{field}` is {_kind(value)}, not a tensor")
    if value.layout != torch.strided or value.is_meta or value.is_quantized:
        raise Invalid(f"`{field}` is a {value.layout} tensor, not a dense one")
    if value.dtype not in dtypes:
        raise Invalid(f"`{field}` has dtype {value.dtype}, not one of {', '.join(map(str, dtypes))}")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise Invalid(f"`{field}` has shape {tuple(value.shape)}, but {tuple(shape)} is expected")
    count = value.numel()
    if count > MAX_TENSOR_ELEMENTS or count * value.element_size() > value.untyped_storage().nbytes():
        raise Invalid(f"`{field}` has {count} elements, more than its stored data holds")
    if finite and value.is_floating_point() and count and not bool(torch.isfinite(value).all()):
        raise Invalid(f"`{field}` holds NaN or infinite values")
    return value


def state_dict(value, field: str, expected: dict | None = None) -> dict:
    """name -> tensor; with `expected`, exactly its names, shapes and dtypes."""
    mapping(value, field)
    for key, item in value.items():
        name(key, field, 512)
        if expected is None:
            tensor(item, f"{field}.{key}")
    if expected is not None:
        missing, extra = sorted(set(expected) - set(value)), sorted(set(value) - set(expected))
        if missing or extra:
            names = "; ".join(
                f"{label} {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                for label, names in (("lacks", missing), ("has unexpected", extra))
                if names
            )
            raise Invalid(f"`{field}` does not match the modules: it {names}")
        for key, (shape, dtype) in expected.items():
            tensor(value[key], f"{field}.{key}", (dtype,), shape)
    return value


def optimizer_state(value, field: str, expected: tuple | None = None) -> dict:
    """A torch.optim state_dict: per-parameter state (tensors and numbers) and param groups of
    scalars; every non-scalar tensor of parameter i has the shape `expected[i]`, when given."""
    mapping(value, field)
    if set(value) != {"state", "param_groups"}:
        raise Invalid(f"`{field}` holds {sorted(map(str, value))}, not state and param_groups")
    ids = []
    for i, group in enumerate(sequence(value["param_groups"], f"{field}.param_groups", 1024)):
        where = f"{field}.param_groups[{i}]"
        for key, item in mapping(group, where, 64).items():
            name(key, where, 64)
            if key == "params":
                ids += [whole(p, f"{where}.params", 0, MAX_KEYS) for p in sequence(item, f"{where}.params")]
            elif isinstance(item, (list, tuple)):
                for x in sequence(item, f"{where}.{key}", 16):
                    number(x, f"{where}.{key}")
            elif isinstance(item, torch.Tensor):
                tensor(item, f"{where}.{key}", FLOATS, ())
            else:
                scalar(item, f"{where}.{key}")
    if sorted(ids) != list(range(len(ids))):
        raise Invalid(f"`{field}.param_groups` numbers its parameters {sorted(ids)[:8]}..., not 0 to {len(ids) - 1}")
    if expected is not None and len(ids) != len(expected):
        raise Invalid(f"`{field}` has {len(ids)} parameters, but the optimiser has {len(expected)}")
    for pid, entry in mapping(value["state"], f"{field}.state").items():
        if type(pid) is not int or pid not in range(len(ids)):
            raise Invalid(f"`{field}.state` has an entry for parameter {pid!r}, which no param group holds")
        for key, item in mapping(entry, f"{field}.state[{pid}]", 64).items():
            name(key, f"{field}.state[{pid}]", 64)
            where = f"{field}.state[{pid}].{key}"
            if isinstance(item, torch.Tensor) and item.dim() > 0:
                tensor(item, where, FLOATS, expected[pid] if expected is not None else None)
            elif isinstance(item, torch.Tensor):
                tensor(item, where, FLOATS + INTEGERS)
            else:
                number(item, where)
    return value


# -- the fields of a checkpoint ----------------------------------------------------------------


def rng(value, field: str = "rng") -> dict:
    """The RNG states of `trained.checkpoints.rng_state`: torch's, numpy's MT19937 and Python's."""
    mapping(value, field, 4)
    if not {"torch", "numpy", "python"} <= set(value) <= {"torch", "numpy", "python", "cuda"}:
        raise Invalid(f"`{field}` holds {sorted(map(str, value))}, not the torch, numpy and python states")
    tensor(value["torch"], f"{field}.torch", (torch.uint8,), (TORCH_RNG_BYTES,))
    state = mapping(value["numpy"], f"{field}.numpy", 5)
    if set(state) != {"name", "keys", "pos", "has_gauss", "cached_gaussian"}:
        raise Invalid(f"`{field}.numpy` holds {sorted(map(str, state))}, not numpy's MT19937 state")
    if state["name"] != "MT19937":
        raise Invalid(f"`{field}.numpy.name` is {str(state['name'])[:40]!r}, not 'MT19937'")
    keys = tensor(state["keys"], f"{field}.numpy.keys", (torch.int64,), (MT19937_WORDS,))
    if bool(((keys < 0) | (keys >= 2**32)).any()):
        raise Invalid(f"`{field}.numpy.keys` holds values outside 32 bits")
    whole(state["pos"], f"{field}.numpy.pos", 0, MT19937_WORDS)
    whole(state["has_gauss"], f"{field}.numpy.has_gauss", 0, 1)
    number(state["cached_gaussian"], f"{field}.numpy.cached_gaussian")
    state = mapping(value["python"], f"{field}.python", 3)
    if set(state) != {"version", "state", "gauss_next"}:
        raise Invalid(f"`{field}.python` holds {sorted(map(str, state))}, not Python's random state")
    whole(state["version"], f"{field}.python.version", 3, 3)
    words = sequence(state["state"], f"{field}.python.state", MT19937_WORDS + 1)
    if len(words) != MT19937_WORDS + 1:
        raise Invalid(f"`{field}.python.state` has {len(words)} words, not {MT19937_WORDS + 1}")
    for word in words[:-1]:
        whole(word, f"{field}.python.state", 0, 2**32 - 1)
    whole(words[-1], f"{field}.python.state", 0, MT19937_WORDS)
    if state["gauss_next"] is not None:
        number(state["gauss_next"], f"{field}.python.gauss_next")
    for i, cuda in enumerate(sequence(value.get("cuda", []), f"{field}.cuda", 1024)):
        tensor(cuda, f"{field}.cuda[{i}]", (torch.uint8,))
        if cuda.dim() != 1 or cuda.numel() > 1024:
            raise Invalid(f"`{field}.cuda[{i}]` has shape {tuple(cuda.shape)}, not a CUDA generator's state")
    return value


def last_result(value, field: str = "last_result") -> dict:
    """Metrics of the last test evaluation: names to numbers, None or lists of numbers."""
    for key, item in mapping(value, field, 256).items():
        name(key, field)
        if isinstance(item, (list, tuple)):
            for x in sequence(item, f"{field}.{key}"):
                number(x, f"{field}.{key}", finite=False)
        elif item is not None:
            number(item, f"{field}.{key}", finite=False)
    return value


CONFIG_KEYS = ("model", "train", "model_name", "guide_name", "run_id", "lightning", "owns_unnamed_checkpoints")


def config(value, field: str = "config") -> dict:
    """The config.json a checkpoint was made under: model, train and (for Lightning runs)
    lightning sections of JSON scalars, the names, the run id."""
    mapping(value, field, 16)
    if not {"model", "train"} <= set(value) <= set(CONFIG_KEYS):
        raise Invalid(f"`{field}` holds {sorted(map(str, value))[:10]}, not the sections of a config.json")
    for section in ("model", "train", "lightning"):
        for key, item in mapping(value.get(section, {}), f"{field}.{section}", 64).items():
            name(key, f"{field}.{section}", 64)
            if isinstance(item, (list, tuple)):
                for x in sequence(item, f"{field}.{section}.{key}", 8):
                    scalar(x, f"{field}.{section}.{key}")
            else:
                scalar(item, f"{field}.{section}.{key}")
    for key in ("model_name", "guide_name", "run_id"):
        if value.get(key) is not None:
            text(value[key], f"{field}.{key}", 128)
    if type(value.get("owns_unnamed_checkpoints", False)) is not bool:
        raise Invalid(f"`{field}.owns_unnamed_checkpoints` is not true or false")
    return value


# The fields every checkpoint holds, and those that later formats added.
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
OPTIONAL_KEYS = ("version", "run_id", "train_samples", "group_assignments")


def validate(checkpoint: dict, expect: Expected | None = None):
    """Raise Invalid naming the first field of `checkpoint` that breaks the schema; `expect`
    adds the shapes of the live modules (see the module docstring)."""
    unknown = sorted(str(k)[:40] for k in checkpoint if k not in CHECKPOINT_KEYS + OPTIONAL_KEYS)
    if unknown:
        raise Invalid(f"holds fields no checkpoint has: {', '.join(unknown[:5])}")
    step = whole(checkpoint["step"], "step")
    whole(checkpoint["epoch"], "epoch", 0, step)
    whole(checkpoint["step_in_epoch"], "step_in_epoch", 0, step)
    number(checkpoint["train_seconds"], "train_seconds", low=0)
    last_result(checkpoint["last_result"])
    window = tensor(checkpoint["window"], "window", FLOATS)
    if window.dim() != 1 or window.numel() > MAX_ITEMS * 16:
        raise Invalid(f"`window` has shape {tuple(window.shape)}, not a list of losses")
    epoch_loss = sequence(checkpoint["epoch_loss"], "epoch_loss", 2)
    if len(epoch_loss) != 2:
        raise Invalid(f"`epoch_loss` has {len(epoch_loss)} items, not a sum and a count")
    number(epoch_loss[0], "epoch_loss[0]"), whole(epoch_loss[1], "epoch_loss[1]", 0, step)
    state_dict(checkpoint["model"], "model", expect.model if expect else None)
    state_dict(checkpoint["guide"], "guide", expect.guide if expect else None)
    optimizer_state(checkpoint["optimizer"], "optimizer", expect.optimizer if expect else None)
    rng(checkpoint["rng"])
    config(checkpoint["config"])
    if checkpoint.get("run_id") is not None:
        text(checkpoint["run_id"], "run_id", 128)
    samples = checkpoint.get("train_samples")
    if samples is not None:
        whole(samples, "train_samples", 1)
    assignments = checkpoint.get("group_assignments")
    if assignments is not None:
        tensor(assignments, "group_assignments", (torch.int64,))
        if assignments.dim() != 1 or (samples is not None and len(assignments) != samples):
            raise Invalid(f"`group_assignments` has shape {tuple(assignments.shape)}, not one cluster per sample")
        if len(assignments) and int(assignments.min()) < 0:
            raise Invalid("`group_assignments` holds negative cluster numbers")
