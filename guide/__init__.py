"""q: the variational families, by name. An ablation is one file here and one line below."""
from guide.ugvae import UGVAEGuide

# (model name, guide name) -> guide class; the first guide listed for a model is its default.
GUIDES = {
    ("ugvae", "structured"): UGVAEGuide,
}

__all__ = ["UGVAEGuide", "GUIDES"]
