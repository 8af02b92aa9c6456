"""JitTraceEnum_ELBO, the fast path of training, computes the loss and gradients of TraceEnum_ELBO."""

import json
import math
import os

import pyro
import pytest
import torch

from ugvae.guide import UGVAEGuide
from ugvae.model import ModelConfig, UGVAEModel
from ugvae.train import fit, make_elbo
from ugvae.trained import TrainConfig

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:FutureWarning")


def loss_and_grads(loss_fn, x, seed):
    pyro.set_rng_seed(seed)
    loss_fn.zero_grad()
    loss = loss_fn(x)
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in loss_fn.named_parameters()}


@pytest.mark.slow
@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_jit_loss_and_gradients_equal_eager(likelihood):
    cfg = ModelConfig(x_shape=(1, 6, 6), z_dim=3, beta_dim=4, K=5, hidden=16, likelihood=likelihood)
    model, guide = UGVAEModel(cfg), UGVAEGuide(cfg)
    eager, jit = make_elbo(jit=False)(model, guide), make_elbo(jit=True)(model, guide)
    x = torch.rand(3, 7, 1, 6, 6)
    # The first call traces: it runs the program several times and so uses up other draws.
    jit(x)
    for seed in (1, 2, 3):
        eager_loss, eager_grads = loss_and_grads(eager, x, seed)
        jit_loss, jit_grads = loss_and_grads(jit, x, seed)
        assert jit_loss == pytest.approx(eager_loss, rel=1e-5)
        assert jit_grads.keys() == eager_grads.keys()
        for name, grad in eager_grads.items():
            assert grad.abs().sum() > 0, name
            assert torch.allclose(jit_grads[name], grad, rtol=1e-4, atol=1e-6), name
    assert loss_and_grads(jit, x, 4)[0] != jit_loss  # the graph draws anew, no frozen sample


def test_jit_training_steps_follow_eager_steps(tiny_cfg):
    """Five Adam steps with either ELBO from the same weights and seed end at the same weights."""
    x = torch.rand(2, 5, 1, 4, 4)
    finals = []
    for jit in (False, True):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        loss_fn = make_elbo(jit)(UGVAEModel(tiny_cfg), UGVAEGuide(tiny_cfg))
        optimizer = torch.optim.Adam(loss_fn.parameters(), lr=1e-2)
        loss_fn(x)  # tracing runs the program several times: keep its draws out of the steps
        pyro.set_rng_seed(1)
        for _ in range(5):
            optimizer.zero_grad()
            loss_fn(x).backward()
            optimizer.step()
        finals.append(torch.cat([p.detach().flatten() for p in loss_fn.parameters()]))
    assert torch.allclose(finals[0], finals[1], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_two_jit_runs_in_one_process(tmp_path):
    """Trainer clears Pyro's global param store: a second run traces its own parameters, not the
    first run's (which made the JIT ELBO insert a Tensor that requires grad as a constant)."""
    cfg = ModelConfig(x_shape=(1, 28, 28), z_dim=2, beta_dim=2, K=3, hidden=16)
    train_cfg = TrainConfig(dataset="synthetic", epochs=1, group_size=16, groups_per_step=4, jit=True)
    runs = [fit(train_cfg, cfg, runs_dir=str(tmp_path)).run_dir for _ in range(2)]
    first, second = (json.load(open(os.path.join(run_dir, "summary.json"))) for run_dir in runs)
    assert runs[0] != runs[1] and math.isfinite(first["test_elbo"])
    # Same config and seed from a fresh store: the second run repeats the first.
    assert second["test_elbo"] == pytest.approx(first["test_elbo"], rel=1e-4)
