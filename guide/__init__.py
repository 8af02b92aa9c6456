"""q: the variational families, by name. A guide of your own is a class passed to `fit`, one
registered with `register`, or one an installed package declares (guide/registry.py); a shipped
ablation is one file here and one line in registry.py. `check_guide` checks any of them."""

from .base import GlobalPosterior, Guide, LocalPosterior, check_images
from .beta_from_x import BetaFromXGuide
from .check import GuideReport, check_guide
from .gmvae import GMVAEGuide
from .mean_field import MeanFieldGuide
from .mlvae import MLVAEGuide
from .registry import (
    GUIDES,
    SHIPPED,
    GuideSource,
    UnknownName,
    build,
    default_guide,
    guide_class,
    guide_names,
    guide_source,
    register,
)
from .ugvae import UGVAEGuide
from .vae import VAEGuide

__all__ = [
    "GUIDES",
    "SHIPPED",
    "BetaFromXGuide",
    "GMVAEGuide",
    "GlobalPosterior",
    "Guide",
    "GuideReport",
    "GuideSource",
    "LocalPosterior",
    "MLVAEGuide",
    "MeanFieldGuide",
    "UGVAEGuide",
    "UnknownName",
    "VAEGuide",
    "build",
    "check_guide",
    "check_images",
    "default_guide",
    "guide_class",
    "guide_names",
    "guide_source",
    "register",
]
