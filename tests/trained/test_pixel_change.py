"""The pixel change of the beta diagnostics, decoded one dim at a time, is the mean over every dim
and pixel of what moving beta (or z) by one posterior standard deviation along that dim does."""

import pytest
import torch

from ugvae.guide import build
from ugvae.model import ModelConfig
from ugvae.trained.diagnostics import pixel_change


def all_dims_at_once(decode, z, beta, step, move_beta: bool) -> float:
    """The definition, every dim's move decoded in one batch."""
    latent = beta if move_beta else z
    moves = torch.diag_embed(step.expand(latent.shape)).movedim(-2, 0)  # (dims, *latent.shape)
    moved = decode(z, beta + moves) if move_beta else decode(z + moves, beta)
    return (moved - decode(z, beta)).abs().double().mean().item()


@pytest.mark.parametrize("move_beta", [True, False])
def test_one_dim_at_a_time_is_the_mean_over_dims_and_pixels(move_beta):
    cfg = ModelConfig(x_shape=(1, 6, 6), z_dim=3, beta_dim=4, K=3, hidden=16)
    model, _ = build(cfg)
    torch.manual_seed(0)
    z, beta = torch.randn(5, 7, cfg.z_dim), torch.randn(5, 1, cfg.beta_dim)
    step = torch.rand(5, 7, cfg.z_dim) + 0.1 if not move_beta else torch.rand(5, 1, cfg.beta_dim) + 0.1
    with torch.no_grad():
        expected = all_dims_at_once(model.decode, z, beta, step, move_beta)
        assert pixel_change(model.decode, z, beta, step, move_beta) == pytest.approx(expected, rel=1e-6)
