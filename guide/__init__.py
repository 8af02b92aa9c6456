"""q: the variational families, by name. An ablation is one file here and one line in registry.py."""

from guide.base import GlobalPosterior, Guide, LocalPosterior, check_images
from guide.beta_from_x import BetaFromXGuide
from guide.gmvae import GMVAEGuide
from guide.mean_field import MeanFieldGuide
from guide.mlvae import MLVAEGuide
from guide.registry import GUIDES, UnknownName, build, default_guide, guide_class, guide_names
from guide.ugvae import UGVAEGuide
from guide.vae import VAEGuide

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
