"""Sizes and options of every model, in one dataclass.

All models of the package (UG-VAE and the VAE / GMVAE / ML-VAE baselines) read the same
config so that comparisons change one thing at a time. Defaults follow the authors' MNIST
setup: MLP networks of 256 units, K = 10 clusters, dim z = dim beta = 10, Gaussian
likelihood with fixed variance 0.1 on pixels in [0, 1].

Every size has a documented maximum (`MAX_SIZES`, `MAX_CHANNELS`, `MAX_IMAGE_SIDE`), far above
any model of the paper, so that a mistyped size is refused here, in one line, instead of
allocating until the process is killed; whether a config within them fits the machine is
`trained.config.check_memory`'s question, which counts the parameters the networks really have.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields

from ..errors import ConfigError

LIKELIHOODS = ("gaussian", "bernoulli")
ARCHS = ("auto", "mlp", "conv")
# p(d | beta): "uniform" is eq. 4; "global" = softmax(A beta + b), an extension of the paper.
CLUSTER_WEIGHTS = ("uniform", "global")
# Fields that extend the paper's UG-VAE; a model lists in `extensions` those it reads
# (model/base.py), and one set for a model that would ignore it is refused (model.check_extensions).
EXTENSIONS = ("cluster_weights", "decoder_film")
# The paper's largest: K = 20, dims 20, 256 hidden units; 64x64 RGB images.
MAX_SIZES = {"z_dim": 4096, "beta_dim": 4096, "K": 4096, "hidden": 65536}
MAX_CHANNELS = 4
MAX_IMAGE_SIDE = 4096


@dataclass(frozen=True)
class ModelConfig:
    x_shape: tuple[int, int, int] = (1, 28, 28)
    z_dim: int = 10
    beta_dim: int = 10
    K: int = 10
    hidden: int = 256
    likelihood: str = "gaussian"
    # Variance of the Gaussian likelihood; the official code uses 0.1 (0.2 in its MNIST series).
    var_x: float = 0.1
    arch: str = "auto"
    cluster_weights: str = "uniform"
    # UG-VAE's decoder reads [z, beta]; True also modulates its hidden layer by beta (FiLM), an
    # extension of the paper (model/networks.py's Decoder).
    decoder_film: bool = False

    def __post_init__(self):
        # Checked before any comparison: a config.json with "K": "3" or "var_x": null says so.
        if not isinstance(self.x_shape, (list, tuple)) or not all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in self.x_shape
        ):
            raise ConfigError(f"`x_shape` must be three whole numbers (C, H, W), got {self.x_shape!r}")
        object.__setattr__(self, "x_shape", tuple(int(s) for s in self.x_shape))
        whole, real = numbers.Integral, numbers.Real
        kinds = {"z_dim": whole, "beta_dim": whole, "K": whole, "hidden": whole, "var_x": real, "likelihood": str}
        wrong = [
            f"`{name}` must be {dict([(str, 'a string'), (whole, 'a whole number')]).get(kind, 'a number')}, "
            f"got {getattr(self, name)!r}"
            for name, kind in kinds.items()
            if not isinstance(getattr(self, name), kind) or isinstance(getattr(self, name), bool)
        ]
        if wrong:
            raise ConfigError("; ".join(wrong))
        problems = []
        if len(self.x_shape) != 3 or min(self.x_shape) < 1:
            problems.append(f"`x_shape` must be (C, H, W) with positive sizes, got {self.x_shape}")
        elif self.x_shape[0] > MAX_CHANNELS or max(self.x_shape[1:]) > MAX_IMAGE_SIDE:
            problems.append(
                f"`x_shape` must have at most {MAX_CHANNELS} channels and sides of at most {MAX_IMAGE_SIDE} "
                f"pixels, got {self.x_shape}; set a smaller `image_size`"
            )
        for name, most in MAX_SIZES.items():
            if not 1 <= getattr(self, name) <= most:
                problems.append(f"`{name}` must be between 1 and {most}, got {getattr(self, name)}")
        if self.likelihood not in LIKELIHOODS:
            problems.append(f"`likelihood` must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if not (self.var_x > 0 and math.isfinite(_as_float(self.var_x))):
            problems.append(f"`var_x` must be a finite number > 0, got {self.var_x}")
        if self.arch not in ARCHS:
            problems.append(f"`arch` must be one of {ARCHS}, got {self.arch!r}")
        if self.cluster_weights not in CLUSTER_WEIGHTS:
            problems.append(f"`cluster_weights` must be one of {CLUSTER_WEIGHTS}, got {self.cluster_weights!r}")
        if not problems and self.resolved_arch == "conv" and self.x_shape[1:] != (64, 64):
            problems.append(
                f"the conv architecture takes 64x64 images, got {self.x_shape}; set `image_size` to 64 or `arch` to mlp"
            )
        if not isinstance(self.decoder_film, bool):
            problems.append(f"decoder_film must be true or false, got {self.decoder_film!r}")
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def resolved_arch(self) -> str:
        """`auto` picks the official code's conv nets for 64x64 images and MLPs otherwise."""
        if self.arch != "auto":
            return self.arch
        return "conv" if self.x_shape[1:] == (64, 64) else "mlp"

    @property
    def x_dim(self) -> int:
        c, h, w = self.x_shape
        return c * h * w

    def to_dict(self) -> dict:
        d = asdict(self)
        d["x_shape"] = list(self.x_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"the model config must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k)[:40] for k in set(d) - known)
        if unknown:
            names = ", ".join(f"`{k}`" for k in unknown)
            raise ConfigError(f"the model config has unknown fields {names}; remove them")
        return cls(**d)


def _as_float(value) -> float:
    try:
        return float(value)
    except OverflowError:  # an int of hundreds of digits
        return math.inf


# The name of this class before it configured the baselines too; users' scripts import it.
UGVAEConfig = ModelConfig
