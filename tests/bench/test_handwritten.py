"""The hand-written loss is TraceEnum_ELBO's loss: equal for one seed, gradients included."""

import pyro
import pytest
import torch
from pyro.infer import TraceEnum_ELBO

from ugvae.bench.handwritten import HandwrittenLoss
from ugvae.guide import UGVAEGuide
from ugvae.model import ModelConfig, UGVAEModel


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_handwritten_loss_equals_trace_enum_elbo(likelihood):
    cfg = ModelConfig(x_shape=(1, 6, 6), z_dim=3, beta_dim=4, K=5, hidden=16, likelihood=likelihood)
    model, guide = UGVAEModel(cfg), UGVAEGuide(cfg)
    x = torch.rand(3, 7, 1, 6, 6)
    pyro_loss = TraceEnum_ELBO(max_plate_nesting=2)(model, guide)
    hand_loss = HandwrittenLoss(model, guide)

    losses, grads = [], []
    for loss_fn in (pyro_loss, hand_loss):
        pyro.set_rng_seed(7)  # the same draws of z and beta for both
        loss_fn.zero_grad()
        loss = loss_fn(x)
        loss.backward()
        losses.append(loss.item())
        grads.append({n: p.grad.clone() for n, p in loss_fn.named_parameters()})

    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    n_params = len(list(model.parameters())) + len(list(guide.parameters()))
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == n_params
    for name, grad in grads[0].items():
        assert torch.allclose(grad, grads[1][name], rtol=1e-4, atol=1e-5), name


def test_handwritten_loss_changes_with_the_draw(tiny_cfg):
    """One draw per call: two seeds give two different estimates (it is not the closed-form mean)."""
    loss_fn = HandwrittenLoss(UGVAEModel(tiny_cfg), UGVAEGuide(tiny_cfg))
    x = torch.rand(2, 5, 1, 4, 4)
    with torch.no_grad():
        pyro.set_rng_seed(1)
        first = loss_fn(x)
        pyro.set_rng_seed(2)
        second = loss_fn(x)
        pyro.set_rng_seed(1)
        again = loss_fn(x)
    assert first != second and first == again
