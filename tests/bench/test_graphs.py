"""A captured hand-written step is the eager step."""

import pyro
import pytest
import torch

from ugvae.bench.handwritten import HandwrittenLoss
from ugvae.guide import UGVAEGuide
from ugvae.model import ModelConfig, UGVAEModel
from ugvae.train.graph import CapturedStep


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_captured_steps_follow_eager_steps():
    """The same losses, step by step: replay draws the random numbers the eager steps draw."""
    pyro.enable_validation(False)
    cfg = ModelConfig(x_shape=(1, 8, 8), z_dim=2, beta_dim=3, K=3, hidden=16)
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8, device="cuda")
    batches = torch.randint(0, 64, (6, 2, 8), device="cuda")
    runs = []
    for captured in (False, True):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        loss_fn = HandwrittenLoss(UGVAEModel(cfg), UGVAEGuide(cfg)).cuda()
        optimizer = torch.optim.Adam(loss_fn.parameters(), lr=1e-2, capturable=True)

        def step(idx, loss_fn=loss_fn, optimizer=optimizer):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(images[idx].float() / 255)
            loss.backward()
            optimizer.step()
            return loss.detach()

        if captured:  # two eager steps, the second checked for syncs, then capture and replays
            step = CapturedStep(step, "cuda", warmup=2)
        runs.append(torch.stack([step(idx).clone() for idx in batches]))
    assert torch.allclose(runs[0], runs[1], rtol=1e-4)
