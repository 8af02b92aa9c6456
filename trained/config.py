"""How a run is trained (everything that is not a size of the model, see model/config.py), where,
and how it is launched across processes.

Every value is checked where it enters (flags, or config.json of a run): types, ranges, and
finiteness, since a NaN or infinite rate would otherwise be blamed on divergence steps later.
Every count has a documented maximum (`MAX_COUNTS`; the seed is bounded by what numpy's
generator takes), so that a mistyped one is refused in one line instead of overflowing or
allocating until the process is killed. `check_memory` then compares the peak memory of a
training step, counted from the networks the config builds, with what the device has free.
Messages name fields in backticks (`group_size`); the command line shows them as flags.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch

from ..data.sampling import parse_mix, parse_spec
from ..errors import ConfigError, DataError

# Far above any run of the paper (200 epochs, B = 128, G = 16), far below any overflow.
MAX_COUNTS = {
    "epochs": 10**6,
    "group_size": 2**20,
    "groups_per_step": 2**16,
    "log_every": 2**31,
    "checkpoint_every": 2**31,
    "keep_checkpoints": 1000,
    "group_warmup": 10**6,
    "image_size": 4096,
}
MAX_SAMPLES_PER_STEP = 2**24  # group_size x groups_per_step
MAX_SEED = 2**32 - 1  # numpy's legacy generator (seeded by pyro.set_rng_seed) takes no more


@dataclass(frozen=True)
class Levers:
    """The levers of the training objective, each off by default, and then the loss is the ELBO of
    eq. 10 itself. train/elbo.py states what each computes and what it bounds."""

    local_kl_weight: float = 1.0  # lambda on the KL of z and d
    leave_one_out: bool = False  # decode x_i with beta inferred from the other members
    set_mix_weight: float = 0.0  # gamma on KL(set's mean q(d) || p(d | beta)) per group

    def __post_init__(self):
        problems = []
        if not (_is_finite(self.local_kl_weight) and self.local_kl_weight > 0):
            problems.append(f"`local_kl_weight` must be a finite number > 0, got {self.local_kl_weight!r}")
        if not (_is_finite(self.set_mix_weight) and self.set_mix_weight >= 0):
            problems.append(f"`set_mix_weight` must be a finite number >= 0, got {self.set_mix_weight!r}")
        if not isinstance(self.leave_one_out, bool):
            problems.append(f"`leave_one_out` must be true or false, got {self.leave_one_out!r}")
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def on(self) -> list[str]:
        """The names of the levers that change the loss."""
        return [f.name for f in fields(self) if getattr(self, f.name) != f.default]


def _is_finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class TrainConfig:
    dataset: str = "mnist"
    model: str = "ugvae"
    guide: str | None = None  # None: the model's default guide (see guide.GUIDES)
    epochs: int = 200
    group_size: int = 128  # B: samples that share one global latent
    groups_per_step: int = 1  # G: independent groups per SVI step, in one vectorised call
    lr: float = 1e-3
    seed: int = 0
    device: str = "cpu"
    jit: bool = False
    data_dir: str | None = None
    image_size: int | None = None
    mix: float | str = 0.5  # share of the first dataset in each group of an A+B mixture, or "beta:A"
    groups: str = "random"  # training groups: random, labels:ALPHA or clusters:ALPHA (data/sampling.py)
    group_warmup: int = 0  # epochs of random groups before clusters:ALPHA groups start
    log_every: int = 10  # steps between logged losses: the only host-device syncs of a step
    checkpoint_every: int = 1000  # steps; a checkpoint is also written at each epoch end
    keep_checkpoints: int = 3
    clip_norm: float | None = None
    # Pyro's and torch.distributions' argument checks read tensors on the host (syncs);
    # None: on unless training on CUDA, where they would stall every step.
    validate: bool | None = None
    graph: bool = False  # capture the whole step as one CUDA graph (train/graph.py)
    # The fields of `Levers`, kept flat so that config.json stays one flat object.
    local_kl_weight: float = 1.0  # lambda on the KL of z and d
    leave_one_out: bool = False  # decode x_i with beta inferred from the other members
    set_mix_weight: float = 0.0  # gamma on KL(set's mean q(d) || p(d | beta)) per group

    def __post_init__(self):
        problems = type_problems(self)
        if problems:
            raise ConfigError("; ".join(problems))
        for name in ("lr", "mix", "clip_norm"):
            value = getattr(self, name)
            if isinstance(value, (int, float)) and not math.isfinite(_as_float(value)):  # mix may be "beta:A"
                problems.append(f"`{name}` must be a finite number, got {value}")
        if problems:
            raise ConfigError("; ".join(problems))
        if self.group_size < 1:
            problems.append(f"`group_size` must be >= 1, got {self.group_size}")
        elif self.group_size < 2 and self.model != "vae":
            problems.append(f"`group_size` must be >= 2 for a model with a global latent, got {self.group_size}")
        for name in ("epochs", "groups_per_step", "log_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                problems.append(f"`{name}` must be >= 1, got {getattr(self, name)}")
        if self.image_size is not None and self.image_size < 1:
            problems.append(f"`image_size` must be >= 1, got {self.image_size}")
        for name, most in MAX_COUNTS.items():
            if getattr(self, name) is not None and getattr(self, name) > most:
                problems.append(f"`{name}` must be at most {most}, got {getattr(self, name)}")
        if self.group_size * self.groups_per_step > MAX_SAMPLES_PER_STEP:
            problems.append(
                f"`group_size` x `groups_per_step` must be at most {MAX_SAMPLES_PER_STEP} samples per step, "
                f"got {self.group_size} x {self.groups_per_step}"
            )
        if not 0 <= self.seed <= MAX_SEED:
            problems.append(f"`seed` must be between 0 and {MAX_SEED} (2**32 - 1), got {self.seed}")
        if not self.lr > 0:
            problems.append(f"`lr` must be > 0, got {self.lr}")
        for check in (lambda: parse_mix(self.mix), lambda: parse_spec(self.groups)):
            try:
                check()
            except DataError as e:
                problems.append(str(e))
        if self.group_warmup < 0:
            problems.append(f"`group_warmup` must be >= 0, got {self.group_warmup}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            problems.append(f"`clip_norm` must be > 0, got {self.clip_norm}")
        if self.graph and not (self.device.startswith("cuda") or self.device == "auto"):
            problems.append("`graph` needs a GPU, CUDA graphs exist only there: set `device` to cuda, or drop `graph`")
        if self.graph and self.validate:
            problems.append("`graph` cannot capture Pyro's validation checks (host syncs): drop `validate`")
        if self.graph and self.jit:
            problems.append("`graph` captures the sync-free ELBO, not the JIT one: drop `jit`")
        try:
            levers_on = self.levers.on
        except ConfigError as e:
            problems.append(str(e))
            levers_on = []
        if self.model != "ugvae" and set(levers_on) & {"leave_one_out", "set_mix_weight"}:
            problems.append(
                "`leave_one_out` and `set_mix_weight` act on UG-VAE's beta and p(d | beta), which model "
                f"{self.model} has not: set `model` to ugvae"
            )
        if self.jit and levers_on:
            named = " and ".join(f"`{name}`" for name in levers_on)
            problems.append(f"{named} live in the sync-free ELBO: drop `jit`")
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def levers(self) -> Levers:
        return Levers(self.local_kl_weight, self.leave_one_out, self.set_mix_weight)

    def validation_on(self, device_type: str) -> bool:
        """Whether training on `device_type` runs the argument checks: `validate`, or else off on CUDA."""
        return self.validate if self.validate is not None else device_type != "cuda"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """From config.json's `train` section; a field this version does not know is refused by
        name (it would otherwise be ignored, and the run not be the one the file describes)."""
        return cls(**known_fields(cls, d, "the training config"))


def known_fields(cls, d, what: str, ignored: tuple[str, ...] = ()) -> dict:
    """`d` as keyword arguments of the dataclass `cls`: a JSON object of its fields only."""
    if not isinstance(d, dict):
        raise ConfigError(f"{what} must be a JSON object, got {type(d).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(str(k)[:40] for k in d if k not in known and k not in ignored)
    if unknown:
        raise ConfigError(f"{what} has unknown fields {', '.join(f'`{k}`' for k in unknown)}; remove them")
    return {k: v for k, v in d.items() if k in known}


def _as_float(value) -> float:
    try:
        return float(value)
    except OverflowError:  # an int of hundreds of digits
        return math.inf


def type_problems(config) -> list[str]:
    """Fields of a dataclass whose value is not of its annotated type (`int`, `float`, `str`,
    `bool`, or any of them `| None`); an int passes for a float, a bool never for a number."""
    kinds = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}
    problems = []
    for f in fields(config):
        annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        optional = annotation.endswith("| None")
        kind = kinds.get(annotation.removesuffix("| None").strip())
        value = getattr(config, f.name)
        if kind is None or (optional and value is None):
            continue
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in kind):
            want = {"int": "a whole number", "float": "a number", "str": "a string", "bool": "true or false"}
            name = annotation.removesuffix("| None").strip()
            shown = repr(value) if len(repr(value)) <= 60 else f"{type(value).__name__} {repr(value)[:40]}..."
            problems.append(f"`{f.name}` must be {want[name]}{' or null' if optional else ''}, got {shown}")
    return problems


@dataclass(frozen=True)
class LaunchConfig:
    """How PyTorch Lightning spreads a run over processes (`--strategy` and its companions)."""

    strategy: str = "ddp"
    devices: str | int = "auto"
    num_nodes: int = 1
    accelerator: str = "auto"

    def __post_init__(self):
        problems = [
            f"`{name}` must be a string, got {getattr(self, name)!r}"
            for name in ("strategy", "accelerator")
            if not isinstance(getattr(self, name), str)
        ]
        if isinstance(self.devices, bool) or not isinstance(self.devices, (str, int)):
            problems.append(f"`devices` must be a number or a string such as auto, got {self.devices!r}")
        if isinstance(self.num_nodes, bool) or not isinstance(self.num_nodes, int) or not 1 <= self.num_nodes <= 2**16:
            problems.append(f"`num_nodes` must be a whole number between 1 and {2**16}, got {self.num_nodes!r}")
        if problems:
            raise ConfigError("; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LaunchConfig:
        """From config.json's `lightning` entry, which also records the world size it ran with."""
        return cls(**known_fields(cls, d, "the launch config (`lightning`)", ignored=("world_size",)))


def resolve_device(name: str) -> torch.device:
    """The torch device called `name`, or a ConfigError when this machine lacks it.

    "auto" is cuda when a GPU is available, else cpu: the command line's default, so the same
    command runs on a laptop and on a GPU node.
    """
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"`device` {str(name)[:40]!r} is not a device name; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"`device` {name} was asked for but CUDA is not available here; set `device` to cpu")
        if device.index is not None and device.index >= count:
            raise ConfigError(
                f"`device` {name} was asked for but this machine has {count} CUDA device(s); "
                f"use cuda:0 to cuda:{count - 1}"
            )
    elif device.type != "cpu":
        raise ConfigError(f"`device` {name!r} is not supported; use cpu or cuda[:N]")
    return device


def training_bytes(model_cfg, train_cfg: TrainConfig) -> tuple[int, int]:
    """(peak bytes of a training step, parameters) of `model_cfg` trained under `train_cfg`.

    The parameters are counted on the networks themselves, built on the meta device (which
    allocates nothing): K x z_dim cluster networks, encoders, decoder. Each float32 parameter
    is held four times during a step: the weight, its gradient and Adam's two moments. The
    activations kept for the backward pass are estimated per sample (images in and out, the
    hidden layers, K enumerated components of z) and per group (K cluster networks on beta).
    """
    from ..guide import build, default_guide  # the guide registry builds networks: only when asked

    with torch.device("meta"):
        model, guide = build(model_cfg, train_cfg.model, train_cfg.guide or default_guide(train_cfg.model))
    parameters = sum(p.numel() for module in (model, guide) for p in module.parameters())
    groups = train_cfg.groups_per_step
    samples = train_cfg.group_size * groups
    per_sample = 4 * model_cfg.x_dim + 4 * model_cfg.hidden + model_cfg.K * (4 * model_cfg.z_dim + 2)
    if model_cfg.resolved_arch == "conv":  # the feature maps of encoder and decoder, each conv + norm + relu
        per_sample += 6 * (32 * 32 * 32 + 32 * 16 * 16 + 64 * 8 * 8 + 64 * 4 * 4 + 256)
    per_group = model_cfg.K * (2 * model_cfg.hidden + 4 * model_cfg.z_dim)
    return 4 * (4 * parameters + 2 * (samples * per_sample + groups * per_group)), parameters


def check_memory(model_cfg, train_cfg: TrainConfig, device: torch.device | str = "cpu"):
    """A ConfigError, before anything is allocated, when a training step of `model_cfg` needs
    more memory than `device` has free (see `training_bytes`); nothing where that is unknown."""
    from ..data.imageset import available_memory

    needed, parameters = training_bytes(model_cfg, train_cfg)
    device = torch.device(device)
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = available_memory()
    if free is not None and needed > free:
        raise ConfigError(
            f"a training step of this model needs about {needed / 2**30:.1f} GiB ({parameters:,} parameters, "
            f"held with their gradients and Adam's two moments, and the activations of {train_cfg.group_size} x "
            f"{train_cfg.groups_per_step} samples) but {free / 2**30:.1f} GiB are free on {device}; lower `hidden`, "
            "`K`, `z_dim`, `group_size` or `groups_per_step`"
        )
