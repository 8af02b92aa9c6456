"""p: the generative models. `model/` never imports `guide/`, `data/` or `train/`."""

from model.config import ModelConfig, UGVAEConfig
from model.gmvae import GMVAEModel
from model.mlvae import MLVAEModel
from model.ugvae import UGVAEModel
from model.vae import VAEModel

MODELS = {"ugvae": UGVAEModel, "vae": VAEModel, "gmvae": GMVAEModel, "mlvae": MLVAEModel}

__all__ = ["ModelConfig", "UGVAEConfig", "UGVAEModel", "VAEModel", "GMVAEModel", "MLVAEModel", "MODELS"]
