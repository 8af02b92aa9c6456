"""Traced ELBOs compute the loss and gradients of the eager ones: the traced sync-free ELBO (train/elbo.py's
TracedELBOModule, what a proven pair trains with on a CPU) and JitTraceEnum_ELBO (`jit`)."""

import copy
import json
import logging
import math
import os
import pickle

import pyro
import pytest
import torch
from pyro.infer import TraceEnum_ELBO

from tests.helpers import logged
from ugvae.bench.syncs import host_reads_forbidden
from ugvae.guide import GUIDES, UGVAEGuide, build
from ugvae.model import MODELS, ModelConfig, UGVAEModel
from ugvae.train import elbo_module, fit, new_trainer
from ugvae.train.elbo import SyncFreeTraceEnum_ELBO, TracedELBOModule
from ugvae.trained import TrainConfig
from ugvae.trained.config import Levers

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:TraceEnum_ELBO found no sample sites"),  # VAE and ML-VAE
]


def loss_and_grads(loss_fn, x, seed):
    pyro.set_rng_seed(seed)
    loss_fn.zero_grad()
    loss = loss_fn(x)
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in loss_fn.named_parameters()}


def assert_same_loss_and_grads(ours, reference, x, seeds=(1, 2)):
    for seed in seeds:
        loss, grads = loss_and_grads(ours, x, seed)
        ref_loss, ref_grads = loss_and_grads(reference, x, seed)
        assert loss == pytest.approx(ref_loss, rel=1e-5)
        assert grads.keys() == ref_grads.keys()
        for name, ref in ref_grads.items():
            assert ref.abs().max() > 0, name  # every parameter learns, so the comparison means something
            assert torch.allclose(grads[name], ref, rtol=1e-5, atol=1e-5 * ref.abs().max()), name


def assert_bitwise_equal(ours, eager, x, seeds=(1, 2)):
    for seed in seeds:
        loss, grads = loss_and_grads(ours, x, seed)
        eager_loss, eager_grads = loss_and_grads(eager, x, seed)
        assert loss == eager_loss
        assert grads.keys() == eager_grads.keys()
        for name, grad in eager_grads.items():
            assert torch.equal(grads[name], grad), name


def small_cfg(**options):
    return ModelConfig(x_shape=(1, 6, 6), z_dim=3, beta_dim=4, K=5, hidden=16, **options)


def traced_elbo(model, guide, levers=None, trace_after=1) -> TracedELBOModule:
    """The loss module of elbo_module, traced at its second call of a kind rather than its hundred-and-first."""
    loss_fn = elbo_module(model, guide, levers=levers)
    assert isinstance(loss_fn, TracedELBOModule)
    loss_fn.trace_after = trace_after
    return loss_fn


def traced_kinds(loss_fn) -> list:
    """The kinds of input the module replays a trace for."""
    return [kind for kind, traced in loss_fn.traces.items() if traced is not None]


# -- the traced sync-free ELBO ---------------------------------------------------------------


@pytest.mark.parametrize("validate", [True, False])
@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
@pytest.mark.parametrize("pair", sorted(GUIDES), ids="-".join)
def test_the_replayed_elbo_is_trace_enum_elbo_and_the_eager_step_bit_for_bit(pair, likelihood, validate):
    cfg = small_cfg(likelihood=likelihood)
    model, guide = MODELS[pair[0]](cfg), GUIDES[pair](cfg)
    loss_fn = traced_elbo(model, guide)
    x = torch.rand(3, 7, 1, 6, 6)
    with pyro.validation_enabled(validate):
        loss_fn(x)  # eager; the next call of this kind traces
        assert_same_loss_and_grads(loss_fn, TraceEnum_ELBO(max_plate_nesting=2)(model, guide), x)
        assert len(traced_kinds(loss_fn)) == 1
        assert_bitwise_equal(loss_fn, SyncFreeTraceEnum_ELBO(max_plate_nesting=2)(model, guide), x)
    assert len(traced_kinds(loss_fn)) == 1  # the calls above replayed that one trace


@pytest.mark.parametrize(
    "levers, options",
    [
        (Levers(local_kl_weight=3.0), {}),
        (Levers(leave_one_out=True), {}),
        (Levers(set_mix_weight=2.0), {"cluster_weights": "global"}),
    ],
    ids=["local-kl-weight", "leave-one-out", "set-mix-weight"],
)
def test_the_replayed_elbo_with_a_lever_is_the_eager_one_bit_for_bit(levers, options):
    model, guide = build(small_cfg(**options), "ugvae", "structured")
    loss_fn = traced_elbo(model, guide, levers)
    x = torch.rand(2, 5, 1, 6, 6)
    loss_fn(x)
    assert_bitwise_equal(loss_fn, SyncFreeTraceEnum_ELBO(max_plate_nesting=2, levers=levers)(model, guide), x)
    assert len(traced_kinds(loss_fn)) == 1


def test_a_kind_is_traced_after_its_first_eager_calls(tiny_cfg):
    loss_fn = traced_elbo(UGVAEModel(tiny_cfg), UGVAEGuide(tiny_cfg), trace_after=3)
    assert loss_fn.trace_after == 3 and TracedELBOModule.TRACE_AFTER == 100
    x = torch.rand(2, 5, 1, 4, 4)
    for _ in range(3):
        loss_fn(x)
    assert loss_fn.traces == {}
    loss_fn(x)
    assert len(traced_kinds(loss_fn)) == 1


def train_steps(loss_fn, batches, lr=1e-2):
    """Adam steps over `batches` from seed 1: the losses, then the weights."""
    optimizer = torch.optim.Adam(loss_fn.parameters(), lr=lr)
    pyro.set_rng_seed(1)
    losses = []
    for x in batches:
        optimizer.zero_grad()
        loss = loss_fn(x)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, torch.cat([p.detach().flatten() for p in loss_fn.parameters()])


def test_steps_that_start_replaying_are_the_eager_steps_bit_for_bit(tiny_cfg):
    """Tracing uses none of the run's draws and the replay rounds as eager steps do: a run repeats
    the eager run's losses and weights exactly, before, at and after the step where it traces."""
    batches = torch.rand(6, 2, 5, 1, 4, 4)
    runs = []
    for traced in (False, True):
        pyro.set_rng_seed(0)
        model, guide = UGVAEModel(tiny_cfg), UGVAEGuide(tiny_cfg)
        elbo = SyncFreeTraceEnum_ELBO(max_plate_nesting=2)
        loss_fn = traced_elbo(model, guide, trace_after=2) if traced else elbo(model, guide)
        runs.append(train_steps(loss_fn, batches))
    assert len(traced_kinds(loss_fn)) == 1
    (eager_losses, eager_weights), (losses, weights) = runs
    assert losses == eager_losses and len(set(losses)) == len(losses)
    assert torch.equal(weights, eager_weights)


@pytest.mark.slow
def test_a_training_run_that_starts_replaying_is_the_eager_run(tmp_path, tiny_cfg, monkeypatch):
    """Trainer's run with the traced ELBO (from its fourth step) writes the metrics and weights of
    the same run with an eager ELBO, to the last digit."""
    cfg = TrainConfig(dataset="synthetic:200", epochs=2, group_size=8, checkpoint_every=5, log_every=1)
    model_cfg = ModelConfig(x_shape=(1, 28, 28), z_dim=2, beta_dim=2, K=3, hidden=16)
    runs = []
    for traced in (False, True):
        monkeypatch.setattr(TracedELBOModule, "TRACE_AFTER", 3)
        monkeypatch.setattr(TracedELBOModule, "TRACED_DEVICES", frozenset({"cpu"} if traced else ()))
        pyro.clear_param_store()
        trainer = new_trainer(cfg, model_cfg)
        run = trainer.start(runs_dir=str(tmp_path / str(traced)))
        trainer.fit()
        runs.append((logged(run.run_dir), trainer.session.model.state_dict(), trainer.loss_fn))
    (eager_rows, eager_weights, eager_fn), (rows, weights, loss_fn) = runs
    assert eager_fn.traces == {} and len(traced_kinds(loss_fn)) == 1
    assert rows == eager_rows and len(rows) > 10
    assert all(torch.equal(weights[name], value) for name, value in eager_weights.items())


def test_each_kind_of_input_gets_its_own_trace_and_keyword_calls_run_eagerly(tiny_cfg):
    model, guide = UGVAEModel(tiny_cfg), UGVAEGuide(tiny_cfg)
    loss_fn, eager = traced_elbo(model, guide), SyncFreeTraceEnum_ELBO(max_plate_nesting=2)(model, guide)
    for x in (torch.rand(2, 5, 1, 4, 4), torch.rand(3, 4, 1, 4, 4)):
        loss_fn(x)
        assert_bitwise_equal(loss_fn, eager, x, seeds=(1,))
    model.eval()
    loss_fn(x)
    loss_fn(x)
    shapes_and_modes = [(kind[0][0][0], kind[1]) for kind in traced_kinds(loss_fn)]
    assert shapes_and_modes == [((2, 5, 1, 4, 4), True), ((3, 4, 1, 4, 4), True), ((3, 4, 1, 4, 4), False)]
    for _ in range(3):
        loss_fn(x, leave_one_out=True)  # keywords are not part of a kind: those calls run eagerly
    assert len(loss_fn.traces) == 3


def test_where_tracing_fails_it_says_so_once_and_runs_eagerly(tiny_cfg, monkeypatch, caplog):
    def no_tracing(*args, **kwargs):
        raise RuntimeError("tracing is gone\nsecond line")

    monkeypatch.setattr(torch.jit, "trace", no_tracing)
    model, guide = UGVAEModel(tiny_cfg), UGVAEGuide(tiny_cfg)
    loss_fn = traced_elbo(model, guide)
    x = torch.rand(2, 5, 1, 4, 4)
    with caplog.at_level(logging.WARNING, logger="ugvae.train.elbo"):
        assert_bitwise_equal(loss_fn, SyncFreeTraceEnum_ELBO(max_plate_nesting=2)(model, guide), x, seeds=(1, 2, 3))
    assert list(loss_fn.traces.values()) == [None]
    assert [r.getMessage() for r in caplog.records] == [
        "the ELBO could not be traced (RuntimeError: tracing is gone); it runs eagerly: the same loss, slower steps"
    ]


def test_validation_names_the_parameter_that_became_invalid_in_a_replay(tiny_cfg):
    """A replayed loss that is not finite is computed again eagerly under validation, which names
    the parameter (train/session.py turns that into TrainingDiverged); without validation the
    non-finite loss itself comes back, as from an eager step."""
    model, guide = UGVAEModel(tiny_cfg), UGVAEGuide(tiny_cfg)
    loss_fn = traced_elbo(model, guide)
    x = torch.rand(2, 5, 1, 4, 4)
    loss_fn(x)
    loss_fn(x)
    with torch.no_grad():
        guide.local_encoder.linear.bias.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"Expected parameter loc .* of distribution Normal"):
        loss_fn(x)
    with pyro.validation_enabled(False):
        assert torch.isnan(loss_fn(x))
    assert len(traced_kinds(loss_fn)) == 1


def test_a_replayed_step_reads_nothing_on_the_host(tiny_cfg):
    loss_fn = traced_elbo(UGVAEModel(tiny_cfg), UGVAEGuide(tiny_cfg))
    x = torch.rand(2, 5, 1, 4, 4)
    with pyro.validation_enabled(False):
        loss_fn(x)
        loss_fn(x)
        with host_reads_forbidden():
            loss_fn(x).backward()
    assert len(traced_kinds(loss_fn)) == 1


def test_the_conv_networks_replay_with_their_batch_norm_statistics():
    """The 64x64 networks, BatchNorm included: tracing leaves the running statistics as they were,
    and replayed steps update them as eager steps do, bit for bit."""
    cfg = ModelConfig(x_shape=(1, 64, 64), z_dim=2, beta_dim=2, K=3)
    batches = torch.rand(3, 1, 3, 1, 64, 64)
    runs = []
    for traced in (False, True):
        pyro.set_rng_seed(0)
        model, guide = UGVAEModel(cfg), UGVAEGuide(cfg)
        elbo = SyncFreeTraceEnum_ELBO(max_plate_nesting=2)
        loss_fn = traced_elbo(model, guide) if traced else elbo(model, guide)
        losses, weights = train_steps(loss_fn, batches)
        runs.append((losses, weights, torch.cat([b.float().flatten() for b in guide.buffers()])))
    assert len(traced_kinds(loss_fn)) == 1
    (eager_losses, eager_weights, eager_buffers), (losses, weights, buffers) = runs
    assert losses == eager_losses and torch.equal(weights, eager_weights)
    assert torch.equal(buffers, eager_buffers) and buffers[-1] == 3  # num_batches_tracked: one a step


def test_a_copy_starts_anew(tiny_cfg):
    loss_fn = traced_elbo(UGVAEModel(tiny_cfg), UGVAEGuide(tiny_cfg))
    x = torch.rand(2, 5, 1, 4, 4)
    loss_fn(x)
    loss_fn(x)
    for copied in (copy.deepcopy(loss_fn), pickle.loads(pickle.dumps(loss_fn))):
        assert copied.traces == {} and copied.calls == {} and copied.trace_after == 1
        pyro.set_rng_seed(3)
        expected = loss_fn(x)
        pyro.set_rng_seed(3)
        assert copied(x).item() == pytest.approx(expected.item(), rel=1e-6)
        copied(x)
        assert len(traced_kinds(copied)) == 1


# -- JitTraceEnum_ELBO (`jit`) ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_jit_loss_and_gradients_equal_eager(likelihood):
    cfg = ModelConfig(x_shape=(1, 6, 6), z_dim=3, beta_dim=4, K=5, hidden=16, likelihood=likelihood)
    model, guide = UGVAEModel(cfg), UGVAEGuide(cfg)
    eager, jit = elbo_module(model, guide, jit=False), elbo_module(model, guide, jit=True)
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
        loss_fn = elbo_module(UGVAEModel(tiny_cfg), UGVAEGuide(tiny_cfg), jit=jit)
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
