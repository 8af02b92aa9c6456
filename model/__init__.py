"""p: the generative models. `model/` never imports `guide/`, `data/` or `train/`."""
from model.config import UGVAEConfig
from model.ugvae import UGVAEModel

MODELS = {"ugvae": UGVAEModel}

__all__ = ["UGVAEConfig", "UGVAEModel", "MODELS"]
