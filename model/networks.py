"""Every network of p and q, in one place.

Two architectures, after the authors' code: MLPs of `hidden` units for small images
(MNIST-like) and the beta-VAE convolutional encoder/decoder for 64x64 images. Every network
maps the trailing event dimensions and broadcasts over any leading batch dimensions, because
Pyro adds some: the groups and samples plates, the enumeration dimension of `d`, and a
particle dimension under `vectorize_particles`.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .config import ModelConfig


def _flat_apply(net: nn.Module, x: torch.Tensor, event_dims: int) -> torch.Tensor:
    """Run `net` on x with all leading dims folded into one batch dim (conv and BatchNorm need it)."""
    batch = x.shape[: x.dim() - event_dims]
    y = net(x.reshape((-1,) + x.shape[x.dim() - event_dims :]))
    return y.reshape(batch + y.shape[1:])


def concat_latents(*latents: torch.Tensor) -> torch.Tensor:
    """Concatenate latents along the last dim after broadcasting their batch shapes.

    z is per sample, (..., G, B, z_dim), and beta per group, (..., G, 1, beta_dim).
    """
    batch = torch.broadcast_shapes(*(t.shape[:-1] for t in latents))
    return torch.cat([t.expand(batch + t.shape[-1:]) for t in latents], dim=-1)


class ImageFeatures(nn.Module):
    """Shared encoder trunk: image (..., C, H, W) -> features (..., out_dim)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c = cfg.x_shape[0]
        if cfg.resolved_arch == "mlp":
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(cfg.x_dim, cfg.hidden), nn.ReLU())
            self.out_dim = cfg.hidden
        else:
            layers, channels = [], [c, 32, 32, 64, 64]
            for c_in, c_out in zip(channels[:-1], channels[1:]):
                layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.ReLU()]
            # 64x64 -> 4x4 after four stride-2 convs; a 4x4 conv then gives one 256-vector.
            layers += [nn.Conv2d(64, 256, 4), nn.BatchNorm2d(256), nn.ReLU(), nn.Flatten()]
            self.net = nn.Sequential(*layers)
            self.out_dim = 256

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _flat_apply(self.net, x, 3)


class GaussianHead(nn.Module):
    """Linear map to a diagonal Gaussian: (..., in_dim) -> loc, scale, each (..., out_dim)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, 2 * out_dim)

    def forward(self, h: torch.Tensor):
        loc, log_var = self.linear(h).chunk(2, dim=-1)
        return loc, torch.exp(0.5 * log_var)


def product_of_gaussians(loc: torch.Tensor, scale: torch.Tensor, dim: int = -2, weights: torch.Tensor | None = None):
    """Eq. 9: the normalised product of diagonal Gaussians along `dim`.

    Precisions add; the mean is the precision-weighted mean of the factors' means. `weights`
    (broadcast to loc) multiply the factors' precisions: a weight of 0 leaves a factor out.
    """
    precision = scale.pow(-2)
    if weights is not None:
        precision = precision * weights
    total = precision.sum(dim)
    loc = (precision * loc).sum(dim) / total
    return loc, total.rsqrt()


def others(size: int, device=None) -> torch.Tensor:
    """(size, size) weights 1 - I: row i keeps the members j != i of a set."""
    return 1.0 - torch.eye(size, device=device)


def leave_one_out_product(loc: torch.Tensor, scale: torch.Tensor):
    """For each member i of a set of factors (..., B, D), eq. 9 over the other members j != i.

    Returns loc, scale (..., B, D). Member i is left out by a weight of 0 on its precision, not
    by dividing it out of the whole product, which would cancel badly in float32.
    """
    mask = others(loc.shape[-2], loc.device).unsqueeze(-1)  # (B_i, B_j, 1)
    return product_of_gaussians(loc.unsqueeze(-3), scale.unsqueeze(-3), dim=-2, weights=mask)


class GroupPosterior(nn.Module):
    """q(beta | X, Z) of eq. 8-9: one Gaussian per sample, multiplied over the group.

    Input (..., B, in_dim), output loc and scale (..., out_dim). ML-VAE's content posterior
    is the same network fed with image features only.
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.per_sample = GaussianHead(in_dim, out_dim)

    def forward(self, h: torch.Tensor, leave_one_out: bool = False):
        """loc, scale (..., out_dim); with `leave_one_out`, (..., B, out_dim): member i's over j != i."""
        if leave_one_out:
            return leave_one_out_product(*self.per_sample(h))
        return product_of_gaussians(*self.per_sample(h), dim=-2)


class ClusterPosterior(nn.Module):
    """q(d | z) of eq. 7: (..., in_dim) -> cluster probabilities pi (..., K)."""

    def __init__(self, in_dim: int, K: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.Tanh(), nn.Linear(hidden, K))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(h), dim=-1)


class ClusterPrior(nn.Module):
    """p(z | d=k, beta) of eq. 3 for all K components in one batched computation.

    The paper trains one network per cluster; here their weights are stacked along a leading
    K dim so that all components are evaluated with two einsums instead of a loop over K.
    beta (..., beta_dim) -> loc, scale, each (..., K, z_dim). Component variances are
    exp(tanh(.)), in [1/e, e], as in the authors' code: it keeps components from collapsing
    to points or spreading over the whole space.
    """

    def __init__(self, beta_dim: int, z_dim: int, K: int, hidden: int):
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(K, beta_dim, hidden))
        self.b1 = nn.Parameter(torch.empty(K, hidden))
        self.w2 = nn.Parameter(torch.empty(K, hidden, 2 * z_dim))
        self.b2 = nn.Parameter(torch.empty(K, 2 * z_dim))
        # Same law as nn.Linear's default initialisation, for each component separately.
        for w, b, fan_in in ((self.w1, self.b1, beta_dim), (self.w2, self.b2, hidden)):
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)

    def forward(self, beta: torch.Tensor):
        h = F.relu(torch.einsum("...g,kgh->...kh", beta, self.w1) + self.b1)
        loc, raw_log_var = (torch.einsum("...kh,kho->...ko", h, self.w2) + self.b2).chunk(2, -1)
        return loc, torch.exp(0.5 * torch.tanh(raw_log_var))


class Decoder(nn.Module):
    """Latent (..., in_dim) -> pixel logits (..., C, H, W).

    With `film_dim` > 0 a conditioning vector c (..., film_dim) also modulates the first hidden
    layer, FiLM-style (Perez et al., 2018): h -> h * (1 + gamma(c)) + shift(c), gamma and shift
    linear in c and zero at initialisation, so the decoder starts as the plain one.
    """

    def __init__(self, cfg: ModelConfig, in_dim: int, film_dim: int = 0):
        super().__init__()
        self.x_shape = cfg.x_shape
        if cfg.resolved_arch == "mlp":
            self.net = nn.Sequential(nn.Linear(in_dim, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.x_dim))
        else:
            self.net = nn.Sequential(
                nn.Linear(in_dim, 256),
                nn.ReLU(),
                nn.Unflatten(1, (256, 1, 1)),
                nn.ConvTranspose2d(256, 64, 4),
                nn.ReLU(),  # 1x1 -> 4x4
                nn.ConvTranspose2d(64, 64, 4, 2, 1),
                nn.ReLU(),
                nn.ConvTranspose2d(64, 32, 4, 2, 1),
                nn.ReLU(),
                nn.ConvTranspose2d(32, 32, 4, 2, 1),
                nn.ReLU(),
                nn.ConvTranspose2d(32, cfg.x_shape[0], 4, 2, 1),  # -> 64x64
            )

        self.film = None
        if film_dim:
            self.film = nn.Linear(film_dim, 2 * self.net[0].out_features)
            nn.init.zeros_(self.film.weight), nn.init.zeros_(self.film.bias)

    def forward(self, h: torch.Tensor, film: torch.Tensor | None = None) -> torch.Tensor:
        if self.film is None:
            return _flat_apply(self.net, h, 1).reshape(h.shape[:-1] + self.x_shape)
        # The first layer and its ReLU (net[:2]) broadcast over leading dims; FiLM's input c may
        # have fewer of them (beta is per group), so the modulation broadcasts too.
        gamma, shift = self.film(film).chunk(2, dim=-1)
        hidden = self.net[:2](h) * (1 + gamma) + shift
        return _flat_apply(self.net[2:], hidden, 1).reshape(hidden.shape[:-1] + self.x_shape)
