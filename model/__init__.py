"""p: the generative models. `model/` never imports `guide/`, `data/` or `train/`."""

from .config import ModelConfig, UGVAEConfig
from .gmvae import GMVAEModel
from .mlvae import MLVAEModel
from .ugvae import UGVAEModel
from .vae import VAEModel

MODELS = {"ugvae": UGVAEModel, "vae": VAEModel, "gmvae": GMVAEModel, "mlvae": MLVAEModel}

__all__ = ["ModelConfig", "UGVAEConfig", "UGVAEModel", "VAEModel", "GMVAEModel", "MLVAEModel", "MODELS"]
