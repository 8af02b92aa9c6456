"""Sizes and options of every model, in one dataclass.

All models of the package (UG-VAE and the VAE / GMVAE / ML-VAE baselines) read the same
config so that comparisons change one thing at a time. Defaults follow the authors' MNIST
setup: MLP networks of 256 units, K = 10 clusters, dim z = dim beta = 10, Gaussian
likelihood with fixed variance 0.1 on pixels in [0, 1].

Every size is declared with a maximum (settings.py checks them), far above any model of the
paper (K = 20, dims 20, 256 hidden units; 64x64 RGB images), so that a mistyped size is refused
in one line instead of allocating until the process is killed; whether a config within them
fits the machine is `trained.config.check_memory`'s question, which counts the parameters the
networks really have.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import Settings, from_json, setting

LIKELIHOODS = ("gaussian", "bernoulli")
ARCHS = ("auto", "mlp", "conv")
# p(d | beta): "uniform" is eq. 4; "global" = softmax(A beta + b), an extension of the paper.
CLUSTER_WEIGHTS = ("uniform", "global")
# Fields that extend the paper's UG-VAE; a model lists in `extensions` those it reads
# (model/base.py), and one set for a model that would ignore it is refused (model.check_extensions).
EXTENSIONS = ("cluster_weights", "decoder_film")
MAX_LATENT = 4096  # z_dim, beta_dim and K
MAX_HIDDEN = 65536
MAX_CHANNELS = 4
MAX_IMAGE_SIDE = 4096


@dataclass(frozen=True)
class ModelConfig(Settings):
    """Sizes and options of every model and guide (UG-VAE and the baselines read the same).

    Frozen, and checked when made: a field of the wrong type or out of its bounds raises one
    :class:`~ugvae.errors.ConfigError` naming every such field. ``dataclasses.replace`` checks
    again. Defaults follow the authors' MNIST setup. Whether a config fits the machine's memory
    is checked where training starts.

    Examples
    --------
    >>> ModelConfig(x_shape=(1, 28, 28), z_dim=3).beta_dim
    10
    >>> ModelConfig(z_dim=0)
    Traceback (most recent call last):
    ...
    ugvae.errors.ConfigError: `z_dim` must be between 1 and 4096, got 0
    """

    # (C, H, W) of the images: the data's, never a flag.
    x_shape: tuple[int, int, int] = setting((1, 28, 28), "image shape (C, H, W)", at_least=1, at_most=MAX_IMAGE_SIDE)
    z_dim: int = setting(10, "local latent size", at_least=1, at_most=MAX_LATENT, section="model")
    beta_dim: int = setting(10, "global latent size", at_least=1, at_most=MAX_LATENT, section="model")
    K: int = setting(10, "number of clusters of the local mixture", at_least=1, at_most=MAX_LATENT, section="model")
    hidden: int = setting(256, "hidden units of the MLP networks", at_least=1, at_most=MAX_HIDDEN, section="model")
    likelihood: str = setting("gaussian", "pixel likelihood", choices=LIKELIHOODS, section="model")
    # The official code uses 0.1 (0.2 in its MNIST series).
    var_x: float = setting(0.1, "variance of the Gaussian likelihood", above=0, section="model")
    arch: str = setting(
        "auto", "network architecture: mlp, conv (64x64), or auto from the image size", choices=ARCHS, section="model"
    )
    cluster_weights: str = setting(
        "uniform",
        "p(d | beta): uniform (eq. 4) or global, softmax(A beta + b) (an extension of the paper)",
        choices=CLUSTER_WEIGHTS,
        section="model",
    )
    # UG-VAE's decoder reads [z, beta]; True also modulates its hidden layer by beta (FiLM,
    # model/networks.py's Decoder).
    decoder_film: bool = setting(
        False,
        "UG-VAE: beta also modulates the decoder's hidden layer (FiLM), an extension of the paper",
        section="model",
    )

    def __post_init__(self):
        if isinstance(self.x_shape, list):  # JSON has no tuples
            object.__setattr__(self, "x_shape", tuple(self.x_shape))
        super().__post_init__()

    def cross_field_problems(self) -> list[str]:
        problems = []
        if self.x_shape[0] > MAX_CHANNELS:
            problems.append(f"`x_shape` must have at most {MAX_CHANNELS} channels, got {self.x_shape}")
        elif self.resolved_arch == "conv" and self.x_shape[1:] != (64, 64):
            problems.append(
                f"the conv architecture takes 64x64 images, got {self.x_shape}; set `image_size` to 64 or `arch` to mlp"
            )
        return problems

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
        return {**super().to_dict(), "x_shape": list(self.x_shape)}

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """From config.json's `model` section; a field this version does not know is refused by name."""
        return from_json(cls, d, "the model config")
