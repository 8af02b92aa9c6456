"""How a run is trained: everything that is not a size of the model (see model/config.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from data.errors import DataError
from data.training_groups import parse_mix, parse_spec


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
    groups: str = "random"  # training groups: random, labels:ALPHA or clusters:ALPHA (data/training_groups.py)
    group_warmup: int = 0  # epochs of random groups before clusters:ALPHA groups start
    log_every: int = 10  # steps between logged losses: the only host-device syncs of a step
    checkpoint_every: int = 1000  # steps; a checkpoint is also written at each epoch end
    keep_checkpoints: int = 3
    clip_norm: float | None = None

    def __post_init__(self):
        problems = []
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
        if problems:
            raise ValueError("; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
