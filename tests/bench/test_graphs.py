"""A captured hand-written step is the eager step; capture refuses Pyro's validation checks."""

import pyro
import pytest
import torch

from bench.graphs import CapturedStep
from bench.handwritten import HandwrittenLoss
from guide import UGVAEGuide
from model import ModelConfig, UGVAEModel


def test_capture_refuses_pyro_validation():
    with pytest.raises(ValueError, match="enable_validation"):
        CapturedStep(lambda idx: idx.sum(), torch.zeros(2, dtype=torch.long))


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
            loss = loss_fn(images[idx].float().div_(255))
            loss.backward()
            optimizer.step()
            return loss.detach()

        losses = [step(batches[0]).clone() for _ in range(3)]
        if captured:  # one more step on batches[0], checked for syncs, then the capture
            step = CapturedStep(step, batches[0], warmup=0)
        else:
            step(batches[0])
        losses += [step(idx).clone() for idx in batches[1:]]
        runs.append(torch.stack(losses))
    assert torch.allclose(runs[0], runs[1], rtol=1e-4)
