"""Models and guides by name: the one place that pairs a generative model with its guides."""

from __future__ import annotations

from ..errors import UnknownName
from ..model import MODELS, ModelConfig
from .attention import AttentionGuide
from .base import Guide
from .beta_from_x import BetaFromXGuide
from .gmvae import GMVAEGuide
from .mean_field import MeanFieldGuide
from .mlvae import MLVAEGuide
from .set_mix import SetMixGuide
from .ugvae import UGVAEGuide
from .vae import VAEGuide

# (model name, guide name) -> guide class; the first guide listed for a model is its default.
GUIDES: dict[tuple[str, str], type[Guide]] = {
    ("ugvae", "structured"): UGVAEGuide,
    ("ugvae", "beta-from-x"): BetaFromXGuide,
    ("ugvae", "mean-field"): MeanFieldGuide,
    ("ugvae", "attention"): AttentionGuide,
    ("ugvae", "set-mix"): SetMixGuide,
    ("vae", "gaussian"): VAEGuide,
    ("gmvae", "structured"): GMVAEGuide,
    ("mlvae", "accumulated-evidence"): MLVAEGuide,
}


def check_model(model_name: str) -> None:
    if model_name not in MODELS:
        raise UnknownName(f"model {model_name!r} is unknown; choose one of {sorted(MODELS)}")


def guide_names(model_name: str) -> list[str]:
    check_model(model_name)
    return [g for (m, g) in GUIDES if m == model_name]


def default_guide(model_name: str) -> str:
    return guide_names(model_name)[0]


def guide_class(model_name: str, guide_name: str | None = None) -> type[Guide]:
    names = guide_names(model_name)
    guide_name = guide_name or names[0]
    if guide_name not in names:
        raise UnknownName(f"guide {guide_name!r} does not exist for model {model_name!r}; choose one of {names}")
    return GUIDES[(model_name, guide_name)]


def build(model_cfg: ModelConfig, model_name: str = "ugvae", guide_name: str | None = None):
    """(model, guide) for registry names; the guide defaults to the model's first one."""
    guide = guide_class(model_name, guide_name)
    return MODELS[model_name](model_cfg), guide(model_cfg)
