"""q: the variational families, by name. An ablation is one file here and one line in registry.py."""

from .base import GlobalPosterior, Guide, LocalPosterior, check_images
from .beta_from_x import BetaFromXGuide
from .gmvae import GMVAEGuide
from .mean_field import MeanFieldGuide
from .mlvae import MLVAEGuide
from .registry import GUIDES, UnknownName, build, default_guide, guide_class, guide_names
from .ugvae import UGVAEGuide
from .vae import VAEGuide

__all__ = [
    "GUIDES",
    "BetaFromXGuide",
    "GMVAEGuide",
    "GlobalPosterior",
    "Guide",
    "LocalPosterior",
    "MLVAEGuide",
    "MeanFieldGuide",
    "UGVAEGuide",
    "UnknownName",
    "VAEGuide",
    "build",
    "check_images",
    "default_guide",
    "guide_class",
    "guide_names",
]
