"""What a checkpoint file must hold before any of its buffers is read: `validate`, once a load.

`expect(run, model, guide)` is the one place that says what a run's checkpoint must match: the
tensors of the live modules (names, shapes, dtypes) and the optimiser's parameters in order,
the run's config (model fields and names; with `training`, the fields that fix the stream of
training groups too), its run id, and, for a resume, the number of training images.

`validate(header, expect, named_step)` checks the metadata of a file (tensorfile.py's `Header`)
field by field, and its table of tensors against `expect`, without reading a buffer:

- every JSON field for type, range and finiteness; an int's bit length is checked before it
  becomes a float, no nested value is walked beyond its schema's depth, and messages show
  values through `shown`, which never prints more than a few dozen characters;
- the optimiser's hyper-parameters (lr, betas, eps, weight_decay, flags): a resume keeps those of
  the live optimiser, built from the run's config (see train/session.py), but a file with absurd
  ones is damaged and falls back like any other;
- the counters against each other: step = epoch x steps_per_epoch + step_in_epoch, and the
  losses counted into the epoch plus those not yet logged are step_in_epoch;
- the config against the run's, once (`config_differences`), then the run id and the step its
  file name says.

`check_values` then checks each tensor as it is read: finite weights, optimiser moments and
losses, weights of a sane magnitude (`MAX_WEIGHT`), cluster numbers that are cluster numbers.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ...model import ModelConfig
from ..config import TrainConfig
from .payload import FIELDS, FORMAT, VERSION
from .tensorfile import Entry, Header, parse_json, shown_name

MAX_COUNT = 2**62  # steps, epochs, samples: far beyond any run, far below int64
MAX_WINDOW = 2**20  # losses not yet logged (at most `log_every`)
MAX_WEIGHT = 1e4  # |weight|: Adam moves a weight by about lr a step, so 1e4 takes 1e7 steps at 1e-3
TORCH_RNG_BYTES = torch.get_rng_state().numel()
MT19937_WORDS = 624
FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Fields of the training config that fix the stream of groups: a checkpoint resumed under
# other values would continue a different run.
DATA_STREAM_FIELDS = ("dataset", "image_size", "mix", "group_size", "groups_per_step", "seed", "groups", "group_warmup")


class Invalid(ValueError):
    """A field that breaks the schema; the message names it, and `fix` says what to do, if not
    to fall back to the previous checkpoint."""

    def __init__(self, message: str, fix: str | None = None):
        super().__init__(message)
        self.fix = fix


class Expected(NamedTuple):
    """What a checkpoint must match to be loaded for a run (built by `expect` only)."""

    model: dict[str, tuple[tuple[int, ...], torch.dtype]]
    guide: dict[str, tuple[tuple[int, ...], torch.dtype]]
    optimizer: tuple[tuple[int, ...], ...]  # the shape of each parameter, in the optimiser's order
    config: tuple  # (model_cfg, model_name, guide_name, train_cfg or None)
    run_id: str | None  # None: a run made before run ids takes the id its checkpoints carry
    training: bool  # read what a resume needs, not only the weights
    train_samples: int | None = None  # known once a resume has loaded the data


def expect(run, model, guide, *, training: bool = False, train_samples: int | None = None) -> Expected:
    """What a checkpoint of `run` (trained/run.py) must match to load into `model` and `guide`.

    The optimiser's parameters are those of `elbo_module(model, guide)` (train/elbo.py), which
    registers the model, then the guide: a ModuleList of the two orders them the same way.
    """
    parameters = torch.nn.ModuleList([model, guide]).parameters()
    return Expected(
        model=_shapes(model.state_dict()),
        guide=_shapes(guide.state_dict()),
        optimizer=tuple(tuple(p.shape) for p in parameters),
        config=(run.model_cfg, run.model_name, run.guide_name, run.train_cfg if training else None),
        run_id=run.run_id,
        training=training,
        train_samples=train_samples,
    )


def _shapes(state_dict: dict) -> dict:
    return {k: (tuple(v.shape), v.dtype) for k, v in state_dict.items()}


# -- values in messages ---------------------------------------------------------------------
def shown(value) -> str:
    """`value` for a message, in at most a few dozen characters whatever it is."""
    if value is None or type(value) in (bool, float):
        return repr(value)
    if type(value) is int:
        return str(value) if value.bit_length() <= 64 else f"a {value.bit_length()}-bit number"
    if type(value) is str:
        return repr(value[:40]) + ("..." if len(value) > 40 else "")
    if type(value) is list and len(value) <= 8 and all(x is None or type(x) in (bool, int, float) for x in value):
        return "[" + ", ".join(shown(x) for x in value) + "]"
    if type(value) in (list, dict):
        return f"a {type(value).__name__} of {len(value)} items"
    return _kind(value)


def _kind(value) -> str:
    kind = type(value).__name__
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind}"


# -- scalars ---------------------------------------------------------------------------------
def whole(value, field: str, low: int = 0, high: int = MAX_COUNT) -> int:
    if type(value) is not int:
        raise Invalid(f"`{field}` is {_kind(value)}, not a whole number")
    if not low <= value <= high:
        raise Invalid(f"`{field}` is {shown(value)}, outside [{low}, {high}]")
    return value


def number(value, field: str, finite: bool = True, low: float = -math.inf, high: float = math.inf) -> float:
    """An int or float; an int is converted only once its size is known to fit a float."""
    if type(value) is int:
        if value.bit_length() > 64:
            raise Invalid(f"`{field}` is {shown(value)}, too large")
        value = float(value)
    elif type(value) is not float:
        raise Invalid(f"`{field}` is {_kind(value)}, not a number")
    if finite and not math.isfinite(value):
        raise Invalid(f"`{field}` is {value}, not a finite number")
    if math.isfinite(value) and not low <= value <= high:
        raise Invalid(f"`{field}` is {value!r}, outside [{low}, {high}]")
    return value


def text(value, field: str, max_len: int = 128) -> str:
    if type(value) is not str:
        raise Invalid(f"`{field}` is {_kind(value)}, not a string")
    if not 0 < len(value) <= max_len:
        raise Invalid(f"`{field}` is a string of {len(value)} characters, not 1 to {max_len}")
    return value


def mapping(value, field: str, max_keys: int, keys: set | None = None) -> dict:
    """A JSON object of at most `max_keys` entries (exactly `keys`, when given)."""
    if type(value) is not dict:
        raise Invalid(f"`{field}` is {_kind(value)}, not an object")
    if len(value) > max_keys:
        raise Invalid(f"`{field}` has {len(value)} entries, more than {max_keys}")
    if keys is not None and set(value) != keys:
        raise Invalid(f"`{field}` holds {', '.join(sorted(map(shown_name, value))[:8])}, not {', '.join(sorted(keys))}")
    return value


def sequence(value, field: str, length: int | None = None, max_items: int = 65_536) -> list:
    if type(value) is not list:
        raise Invalid(f"`{field}` is {_kind(value)}, not a list")
    if len(value) > max_items or (length is not None and len(value) != length):
        raise Invalid(f"`{field}` has {len(value)} items, not {length if length is not None else max_items}")
    return value


# -- the metadata ------------------------------------------------------------------------------
# Hyper-parameters of torch.optim.Adam(W): each is checked where present; other keys must be
# short JSON scalars (a later torch may add flags).
HYPER = {
    "lr": lambda v, f: number(v, f, low=1e-12, high=1e6),
    "betas": lambda v, f: [number(b, f, low=0.0, high=0.999999) for b in sequence(v, f, 2)],
    "eps": lambda v, f: number(v, f, low=1e-20, high=1.0),
    "weight_decay": lambda v, f: number(v, f, low=0.0, high=1e3),
    "initial_lr": lambda v, f: number(v, f, low=1e-12, high=1e6),
    **{flag: lambda v, f: _flag(v, f) for flag in ("amsgrad", "maximize", "capturable", "differentiable")},
    **{flag: lambda v, f: None if v is None else _flag(v, f) for flag in ("foreach", "fused")},
    "decoupled_weight_decay": lambda v, f: _flag(v, f),
}


def _flag(value, field: str) -> bool:
    if type(value) is not bool:
        raise Invalid(f"`{field}` is {shown(value)}, not true or false")
    return value


def _scalar(value, field: str):
    if value is None or type(value) is bool:
        return value
    if type(value) is str:
        return text(value, field, 64)
    return number(value, field)


def optimizer_fields(value, expected: tuple) -> int:
    """The optimiser's param groups and non-tensor state; returns its number of parameters."""
    mapping(value, "optimizer", 2, {"param_groups", "state"})
    ids = []
    for i, group in enumerate(sequence(value["param_groups"], "optimizer.param_groups", max_items=64)):
        where = f"optimizer.param_groups[{i}]"
        for key, item in mapping(group, where, 32).items():
            field = f"{where}.{shown_name(key)}"
            if key == "params":
                ids += [whole(p, field, 0, 2**20) for p in sequence(item, field, max_items=2**20)]
            else:
                HYPER.get(key, _scalar)(item, field)
    if sorted(ids) != list(range(len(ids))) or len(ids) != len(expected):
        raise Invalid(f"`optimizer.param_groups` hold {len(ids)} parameters, not the {len(expected)} of the modules")
    for param, entry in mapping(value["state"], "optimizer.state", len(ids)).items():
        if not (param.isdigit() and len(param) <= 7 and int(param) < len(ids)):
            raise Invalid(f"`optimizer.state` has an entry for {shown(param)}, which no param group holds")
        for key, item in mapping(entry, f"optimizer.state.{param}", 16).items():
            number(item, f"optimizer.state.{param}.{shown_name(key)}")
    return len(ids)


def rng_fields(value) -> int:
    """numpy's and Python's RNG scalars; returns the number of CUDA generators."""
    mapping(value, "rng", 3, {"numpy", "python", "cuda"})
    numpy = mapping(value["numpy"], "rng.numpy", 3, {"pos", "has_gauss", "cached_gaussian"})
    whole(numpy["pos"], "rng.numpy.pos", 0, MT19937_WORDS)
    whole(numpy["has_gauss"], "rng.numpy.has_gauss", 0, 1)
    number(numpy["cached_gaussian"], "rng.numpy.cached_gaussian")
    python = mapping(value["python"], "rng.python", 3, {"version", "state", "gauss_next"})
    whole(python["version"], "rng.python.version", 3, 3)
    words = sequence(python["state"], "rng.python.state", MT19937_WORDS + 1)
    for word in words[:-1]:
        whole(word, "rng.python.state", 0, 2**32 - 1)
    whole(words[-1], "rng.python.state", 0, MT19937_WORDS)
    if python["gauss_next"] is not None:
        number(python["gauss_next"], "rng.python.gauss_next")
    return whole(value["cuda"], "rng.cuda", 0, 1024)


def last_result(value) -> dict:
    """Metrics of the last test evaluation: names to numbers (inf and NaN allowed), None or lists."""
    for key, item in mapping(value, "last_result", 256).items():
        field = f"last_result.{shown_name(key)}"
        if type(item) is list:
            for x in sequence(item, field):
                number(x, field, finite=False)
        elif item is not None:
            number(item, field, finite=False)
    return value


CONFIG_KEYS = {
    "model",
    "train",
    "model_name",
    "guide_name",
    "guide_source",
    "run_id",
    "lightning",
    "owns_unnamed_checkpoints",
}


def config(value) -> dict:
    """The config.json a checkpoint was made under (its values are compared, never walked)."""
    mapping(value, "config", len(CONFIG_KEYS))
    if not {"model", "train"} <= set(value) <= CONFIG_KEYS:
        raise Invalid(f"`config` holds {', '.join(sorted(map(shown_name, value)))}, not the sections of a config.json")
    for section in ("model", "train", "lightning", "guide_source"):
        mapping(value.get(section, {}), f"config.{section}", 64)
    for key in ("model_name", "guide_name"):
        text(value.get(key), f"config.{key}")
    return value


def config_differences(saved: dict, expect: Expected) -> list[str]:
    """`field is A in the checkpoint but B here` for each field of `expect.config` that differs."""
    model_cfg, model_name, guide_name, train_cfg = expect.config
    mine = {"model": model_name, "guide": guide_name, **model_cfg.to_dict()}
    # A field missing from an older checkpoint had its default value then.
    theirs = {
        "model": saved.get("model_name"),
        "guide": saved.get("guide_name"),
        **{k: saved["model"].get(k, v) for k, v in ModelConfig().to_dict().items()},
    }
    if train_cfg is not None:
        mine.update({k: getattr(train_cfg, k) for k in DATA_STREAM_FIELDS})
        theirs.update({k: saved["train"].get(k, getattr(TrainConfig(), k)) for k in DATA_STREAM_FIELDS})
    differ = [k for k, v in mine.items() if theirs[k] != v]
    return [f"{k} is {shown(theirs[k])} in the checkpoint but {shown(mine[k])} here" for k in differ]


# -- the whole file --------------------------------------------------------------------------
def validate(header: Header, expect: Expected, named_step: int | None = None) -> dict:
    """The metadata fields of a checkpoint file, parsed and checked (module docstring); Invalid
    or Malformed names the first that fails. `named_step`: the step its file name says."""
    meta = header.metadata
    if meta.get("format") != FORMAT:
        raise Invalid(f"is no checkpoint of this package (its `format` is {shown(meta.get('format'))})")
    version = meta.get("version", "")
    if version != str(VERSION):
        newer = version.isdigit() and len(version) < 6 and int(version) > VERSION
        raise Invalid(
            f"has format version {shown(version)}, newer than the {VERSION} this version of ugvae reads"
            if newer
            else f"has format version {shown(version)}, not {VERSION}",
            "update ugvae to load it" if newer else None,
        )
    if set(meta) != set(FIELDS):
        raise Invalid(f"holds the fields {', '.join(sorted(map(shown_name, meta))[:20])}, not those of a checkpoint")
    f = {k: parse_json(meta[k], max_depth=4, what=f"`{k}`") for k in FIELDS[2:]}
    f["run_id"] = text(f["run_id"], "run_id")
    step = whole(f["step"], "step")
    epoch = whole(f["epoch"], "epoch", 0, step)
    in_epoch = whole(f["step_in_epoch"], "step_in_epoch", 0, step)
    per_epoch = f["steps_per_epoch"]
    if per_epoch is not None:
        whole(per_epoch, "steps_per_epoch", 1)
        if in_epoch > per_epoch or epoch * per_epoch + in_epoch != step:
            raise Invalid(
                f"`step` {step} is not `epoch` {epoch} x `steps_per_epoch` {per_epoch} + `step_in_epoch` {in_epoch}"
            )
    elif epoch == 0 and in_epoch != step:
        raise Invalid(f"`step` {step} is not `step_in_epoch` {in_epoch} in the first epoch")
    number(f["train_seconds"], "train_seconds", low=0.0)
    epoch_loss = sequence(f["epoch_loss"], "epoch_loss", 2)
    number(epoch_loss[0], "epoch_loss[0]")
    counted = whole(epoch_loss[1], "epoch_loss[1]", 0, in_epoch)
    last_result(f["last_result"])
    samples = f["train_samples"]
    if samples is not None:
        whole(samples, "train_samples", 1, 2**40)
    if expect.train_samples is not None and samples is not None and samples != expect.train_samples:
        raise Invalid(
            f"was made with {samples} training images, but the data now has {expect.train_samples}",
            "restore the data or start a new run",
        )
    parameters = optimizer_fields(f["optimizer"], expect.optimizer)
    cuda = rng_fields(f["rng"])
    diffs = config_differences(config(f["config"]), expect)
    if diffs:
        raise Invalid(f"was made with another config ({'; '.join(diffs)})", "start a new run")
    window = tensors(header.entries, expect, parameters, cuda, samples)
    if counted + window != in_epoch:
        raise Invalid(f"`epoch_loss[1]` {counted} + {window} losses not yet logged is not `step_in_epoch` {in_epoch}")
    if named_step is not None and step != named_step:
        raise Invalid(f"holds step {step}, not the step its name says", "it was renamed or copied in")
    if expect.run_id is not None and f["run_id"] != expect.run_id:
        raise Invalid(
            f"belongs to run {shown(f['run_id'])}, not to run {expect.run_id} of its directory",
            "a checkpoint copied in from another run is never used",
        )
    return f


def tensors(entries: dict[str, Entry], expect: Expected, parameters: int, cuda: int, samples: int | None) -> int:
    """Check the table of tensors against `expect`; returns the number of losses in `window`."""
    required = {f"model.{k}": v for k, v in expect.model.items()}
    required.update({f"guide.{k}": v for k, v in expect.guide.items()})
    required["rng.torch"] = ((TORCH_RNG_BYTES,), torch.uint8)
    required["rng.numpy.keys"] = ((MT19937_WORDS,), torch.uint32)
    missing = sorted(set(required) - set(entries)) or ([] if "window" in entries else ["window"])
    if missing:
        more = " ..." if len(missing) > 3 else ""
        raise Invalid(f"lacks the tensors {', '.join(map(shown_name, missing[:3]))}{more}")
    window = 0
    for name, entry in entries.items():
        where, dtype, shape = shown_name(name), entry.dtype, entry.shape
        if name in required:
            want_shape, want_dtype = required[name]
            if (shape, dtype) != (want_shape, want_dtype):
                raise Invalid(f"`{where}` is {dtype} {shape}, but {want_dtype} {want_shape} is expected")
        elif name == "window":
            if dtype not in FLOATS or len(shape) != 1 or shape[0] > MAX_WINDOW:
                raise Invalid(f"`window` is {dtype} {shape}, not a list of losses")
            window = shape[0]
        elif name == "assignments":
            if dtype != torch.int64 or len(shape) != 1 or samples is None or shape[0] != samples:
                raise Invalid(f"`assignments` is {dtype} {shape}, not one cluster for each of {samples} samples")
        elif name.startswith("optimizer."):
            param, _, key = name[len("optimizer.") :].partition(".")
            if not (param.isdigit() and len(param) <= 7 and int(param) < parameters and 0 < len(key) <= 64):
                raise Invalid(f"holds `{where}`, a tensor of no optimiser parameter")
            if shape and (dtype not in FLOATS or shape != expect.optimizer[int(param)]):
                raise Invalid(f"`{where}` is {dtype} {shape}, but the parameter is {expect.optimizer[int(param)]}")
            if not shape and dtype not in FLOATS + (torch.int64,):
                raise Invalid(f"`{where}` is {dtype}, not a number")
        elif name.startswith("rng.cuda.") and name[9:].isdigit() and len(name) < 14 and int(name[9:]) < cuda:
            if dtype != torch.uint8 or len(shape) != 1 or shape[0] > 1024:
                raise Invalid(f"`{where}` is {dtype} {shape}, not a CUDA generator's state")
        else:
            raise Invalid(f"holds `{where}`, a tensor no checkpoint has")
    return window


def check_values(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """Invalid unless the tensor `name`, as read, holds values it can hold (module docstring)."""
    if tensor.is_floating_point() and tensor.numel():
        if not bool(torch.isfinite(tensor).all()):
            raise Invalid(f"`{shown_name(name)}` holds NaN or infinite values")
        if name.startswith(("model.", "guide.")) and float(tensor.abs().max()) > MAX_WEIGHT:
            raise Invalid(f"`{shown_name(name)}` holds weights beyond +-{MAX_WEIGHT:g}, which no training reaches")
    if name == "assignments" and tensor.numel() and not 0 <= int(tensor.min()) <= int(tensor.max()) < 2**31:
        raise Invalid("`assignments` holds numbers that are no cluster numbers")
    return tensor
