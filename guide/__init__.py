"""q: the variational families, by name. An ablation is one file here and one line below."""

from guide.beta_from_x import BetaFromXGuide
from guide.gmvae import GMVAEGuide
from guide.mean_field import MeanFieldGuide
from guide.mlvae import MLVAEGuide
from guide.ugvae import UGVAEGuide
from guide.vae import VAEGuide

# (model name, guide name) -> guide class; the first guide listed for a model is its default.
GUIDES = {
    ("ugvae", "structured"): UGVAEGuide,
    ("ugvae", "beta-from-x"): BetaFromXGuide,
    ("ugvae", "mean-field"): MeanFieldGuide,
    ("vae", "gaussian"): VAEGuide,
    ("gmvae", "structured"): GMVAEGuide,
    ("mlvae", "accumulated-evidence"): MLVAEGuide,
}

__all__ = ["UGVAEGuide", "BetaFromXGuide", "MeanFieldGuide", "VAEGuide", "GMVAEGuide", "MLVAEGuide", "GUIDES"]
