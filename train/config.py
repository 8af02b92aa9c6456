"""How a run is trained (everything that is not a size of the model, see model/config.py), where,
and how it is launched across processes.

Every value is checked where it enters (flags, or config.json of a run): types, ranges, and
finiteness, since a NaN or infinite rate would otherwise be blamed on divergence steps later.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch

from ..data.sampling import parse_mix, parse_spec
from ..errors import ConfigError, DataError, RunError


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

    def __post_init__(self):
        problems = type_problems(self)
        if problems:
            raise ConfigError("; ".join(problems))
        for name in ("lr", "mix", "clip_norm"):
            value = getattr(self, name)
            if isinstance(value, float) and not math.isfinite(value):  # mix may also be "beta:A"
                problems.append(f"--{name.replace('_', '-')} must be a finite number, got {value}")
        if problems:
            raise ConfigError("; ".join(problems))
        if self.group_size < 1:
            problems.append(f"--group-size must be >= 1, got {self.group_size}")
        elif self.group_size < 2 and self.model != "vae":
            problems.append(f"--group-size must be >= 2 for a model with a global latent, got {self.group_size}")
        for name in ("epochs", "groups_per_step", "log_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.seed < 0:
            problems.append(f"--seed must be >= 0, got {self.seed}")
        if not self.lr > 0:
            problems.append(f"--lr must be > 0, got {self.lr}")
        for check in (lambda: parse_mix(self.mix), lambda: parse_spec(self.groups)):
            try:
                check()
            except DataError as e:
                problems.append(str(e))
        if self.group_warmup < 0:
            problems.append(f"--group-warmup must be >= 0, got {self.group_warmup}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            problems.append(f"--clip-norm must be > 0, got {self.clip_norm}")
        if self.graph and not (self.device.startswith("cuda") or self.device == "auto"):
            problems.append("--graph needs a GPU, CUDA graphs exist only there: use --device cuda, or drop --graph")
        if self.graph and self.validate:
            problems.append("--graph cannot capture Pyro's validation checks (host syncs): drop --validate")
        if self.graph and self.jit:
            problems.append("--graph captures the sync-free ELBO, not the JIT one: drop --jit")
        if problems:
            raise ConfigError("; ".join(problems))

    def validation_on(self, device_type: str) -> bool:
        """Whether training on `device_type` runs the argument checks: --validate, or else off on CUDA."""
        return self.validate if self.validate is not None else device_type != "cuda"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"the training config must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


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
            problems.append(f"{f.name} must be {want[name]}{' or null' if optional else ''}, got {value!r}")
    return problems


@dataclass(frozen=True)
class LaunchConfig:
    """How PyTorch Lightning spreads a run over processes (`--strategy` and its companions)."""

    strategy: str = "ddp"
    devices: str | int = "auto"
    num_nodes: int = 1
    accelerator: str = "auto"

    def __post_init__(self):
        if not isinstance(self.num_nodes, int) or self.num_nodes < 1:
            raise RunError(f"--num-nodes must be >= 1, got {self.num_nodes}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LaunchConfig:
        """From config.json's `lightning` entry, which also records the world size it ran with."""
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def resolve_device(name: str) -> torch.device:
    """The torch device called `name`, or a RunError when this machine lacks it.

    "auto" is cuda when a GPU is available, else cpu: the command line's default, so the same
    command runs on a laptop and on a GPU node.
    """
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise RunError(f"device {name!r} is not a device name; use cpu, cuda, cuda:N or auto") from None
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
