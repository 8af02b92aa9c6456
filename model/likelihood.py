"""p(x | latents) of eq. 2, shared by every model.

`gaussian`: N(sigmoid(logits), var_x I) with the fixed variance of the authors' code.
`bernoulli`: Bernoulli(logits) with validation off, so that grey-level pixels in [0, 1]
are scored as the usual binary cross-entropy.
"""

import pyro.distributions as dist
import torch

from .config import ModelConfig


def pixel_distribution(logits: torch.Tensor, cfg: ModelConfig) -> dist.Distribution:
    if cfg.likelihood == "gaussian":
        return dist.Normal(torch.sigmoid(logits), cfg.var_x**0.5).to_event(3)
    return dist.Bernoulli(logits=logits, validate_args=False).to_event(3)


def pixel_mean(logits: torch.Tensor) -> torch.Tensor:
    """The image a decoder output stands for, under either likelihood."""
    return torch.sigmoid(logits)
