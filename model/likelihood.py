"""p(x | latents) of eq. 2, shared by every model.

`gaussian`: N(sigmoid(logits), var_x I) with the fixed variance of the authors' code.
`bernoulli`: Bernoulli(logits) with validation off, so that grey-level pixels in [0, 1]
are scored as the usual binary cross-entropy.
"""

import math

import pyro.distributions as dist
import torch

from .config import ModelConfig

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class FixedScaleNormal(dist.Normal):
    """N(loc, scale^2) with one scale, a number, for every element of loc.

    The density of torch's Normal; only `log_prob` differs in how it is computed. torch's Normal
    broadcasts a number scale to loc's shape, so its log_prob squares it and takes its log over a
    whole image-sized tensor at every call: four full-size operations (and as many intermediate
    tensors) more than the squared error needs. Here they are constants.
    """

    def __init__(self, loc: torch.Tensor, scale: float, validate_args=None):
        self.fixed_scale = float(scale)
        super().__init__(loc, self.fixed_scale, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(FixedScaleNormal, _instance)
        new.fixed_scale = self.fixed_scale
        return super().expand(batch_shape, _instance=new)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        scale = self.fixed_scale
        return (value - self.loc).pow(2) * (-0.5 / scale**2) - (math.log(scale) + _HALF_LOG_2PI)


def pixel_distribution(logits: torch.Tensor, cfg: ModelConfig) -> dist.Distribution:
    if cfg.likelihood == "gaussian":
        return FixedScaleNormal(torch.sigmoid(logits), cfg.var_x**0.5).to_event(3)
    return dist.Bernoulli(logits=logits, validate_args=False).to_event(3)


def pixel_mean(logits: torch.Tensor) -> torch.Tensor:
    """The image a decoder output stands for, under either likelihood."""
    return torch.sigmoid(logits)
