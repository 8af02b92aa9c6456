"""SyncFreeTraceEnum_ELBO is TraceEnum_ELBO, value and gradients, for every shipped pair, without host syncs;
those pairs are PROVEN_PAIRS, and any other pair trains with TraceEnum_ELBO unless its guide opts in."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO

from ugvae.bench.syncs import HostSyncError, host_reads_forbidden
from ugvae.errors import ConfigError
from ugvae.guide import GUIDES, SHIPPED, UGVAEGuide, check_guide, register
from ugvae.model import MODELS, ModelConfig, UGVAEModel
from ugvae.train.elbo import PROVEN_PAIRS, SyncFreeTraceEnum_ELBO, UnsupportedStructure, elbo_module
from ugvae.trained.config import Levers

PAIRS = sorted(SHIPPED)
# VAE and ML-VAE have nothing to enumerate: TraceEnum_ELBO says so, as expected.
pytestmark = pytest.mark.filterwarnings("ignore:TraceEnum_ELBO found no sample sites")


def build_pair(pair, likelihood="gaussian"):
    cfg = ModelConfig(x_shape=(1, 6, 6), z_dim=3, beta_dim=4, K=5, hidden=16, likelihood=likelihood)
    return MODELS[pair[0]](cfg), SHIPPED[pair](cfg)


def loss_and_grads(elbo, model, guide, x, seed=7):
    loss_fn = elbo(model, guide)
    pyro.set_rng_seed(seed)  # the same draws of z and beta for both ELBOs
    loss_fn.zero_grad()
    loss = loss_fn(x)
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in loss_fn.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
@pytest.mark.parametrize("pair", PAIRS, ids="-".join)
def test_loss_and_every_gradient_equal_trace_enum_elbo(pair, likelihood):
    model, guide = build_pair(pair, likelihood)
    x = torch.rand(3, 7, 1, 6, 6)
    ref_loss, ref_grads = loss_and_grads(TraceEnum_ELBO(max_plate_nesting=2), model, guide, x)
    loss, grads = loss_and_grads(SyncFreeTraceEnum_ELBO(max_plate_nesting=2), model, guide, x)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    names = {n for n, _ in [*model.named_parameters("model"), *guide.named_parameters("guide")]}
    assert grads.keys() == ref_grads.keys() == names
    for name, ref in ref_grads.items():
        assert ref.abs().max() > 0, name  # every parameter learns, so the comparison means something
        assert torch.allclose(grads[name], ref, rtol=1e-5, atol=1e-5 * ref.abs().max()), name


@pytest.mark.parametrize("pair", PAIRS, ids="-".join)
def test_trace_enum_elbo_reads_the_host_and_the_sync_free_elbo_does_not(pair):
    model, guide = build_pair(pair)
    x = torch.rand(2, 5, 1, 6, 6)
    with pyro.validation_enabled(False):  # validation reads values by design; training on a GPU turns it off
        reference = TraceEnum_ELBO(max_plate_nesting=2)(model, guide)
        with pytest.raises(HostSyncError), host_reads_forbidden():
            reference(x).backward()
        loss_fn = SyncFreeTraceEnum_ELBO(max_plate_nesting=2)(model, guide)
        with host_reads_forbidden():
            loss_fn(x).backward()
    assert all(p.grad is not None for p in loss_fn.parameters())


def test_the_detector_forbids_host_reads_only_inside_its_block():
    t = torch.ones(2)
    reads = (lambda: bool(t[0]), lambda: t.sum().item(), lambda: t.tolist(), lambda: float(t[0]), lambda: t.nonzero())
    for read in reads:
        with pytest.raises(HostSyncError), host_reads_forbidden():
            read()
    assert t.sum().item() == 2.0 and bool(t[0]) and t.tolist() == [1.0, 1.0]


def test_a_value_of_zero_probability_is_dropped_as_trace_enum_elbo_drops_it():
    """q(d = 2) = 0 meets log p(d = 2) = -inf and log q = -inf: 0 * inf would make the loss NaN."""
    theta = torch.zeros(2, requires_grad=True)
    x = torch.tensor([0.3, -1.0, 2.0])

    def model():
        with pyro.plate("samples", 3, dim=-1):
            d = pyro.sample("d", dist.Categorical(logits=torch.tensor([0.0, 0.0, -float("inf")])))
            pyro.sample("x", dist.Normal(torch.tensor([-1.0, 1.0, 0.0])[d], 1.0), obs=x)

    def guide():
        logits = torch.cat([theta, torch.tensor([-float("inf")])])
        with pyro.plate("samples", 3, dim=-1):
            pyro.sample("d", dist.Categorical(logits=logits), infer={"enumerate": "parallel"})

    losses = []
    for elbo in (TraceEnum_ELBO(max_plate_nesting=2), SyncFreeTraceEnum_ELBO(max_plate_nesting=2)):
        theta.grad = None
        loss = elbo.differentiable_loss(model, guide)
        loss.backward()
        losses.append((loss.item(), theta.grad.clone()))
    assert torch.isfinite(torch.tensor(losses[1][0])) and losses[1][0] == pytest.approx(losses[0][0], rel=1e-6)
    assert torch.allclose(losses[1][1], losses[0][1]) and losses[1][1].abs().sum() > 0


def with_d_enumerated(guide, how):
    """The guide with d sampled (how=None) or enumerated sequentially, not in parallel."""
    return poutine.infer_config(guide, lambda site: {"enumerate": how} if site["name"] == "d" else {})


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m, g: (m, with_d_enumerated(g, None)), "neither reparameterised nor enumerated"),
        (lambda m, g: (m, poutine.block(g, hide=["beta"])), "'beta' is latent but missing from the guide"),
        (lambda m, g: (m, with_d_enumerated(g, "sequential")), "only exact parallel enumeration"),
        (lambda m, g: (m, poutine.scale(g, scale=0.5)), "may not be scaled or masked"),
    ],
    ids=["sampled-d", "model-only-latent", "sequential", "scaled"],
)
@pytest.mark.filterwarnings("ignore:Found vars in model but not guide")
def test_a_structure_it_does_not_assemble_is_refused_by_name(tiny_cfg, change, message):
    model, guide = change(UGVAEModel(tiny_cfg), UGVAEGuide(tiny_cfg))
    with pytest.raises(UnsupportedStructure, match=message):
        SyncFreeTraceEnum_ELBO(max_plate_nesting=2).differentiable_loss(model, guide, torch.rand(2, 3, 1, 4, 4))


def test_the_proven_pairs_are_the_shipped_pairs_this_file_proves(guides_restored):
    """Issue 27: PROVEN_PAIRS was built from the live registry, so a guide registered before
    `ugvae.train` was imported trained with the sync-free ELBO unproven."""
    assert PROVEN_PAIRS == {(MODELS[model], cls) for (model, _), cls in SHIPPED.items()}
    assert len(PROVEN_PAIRS) == len(PAIRS)

    class Registered(UGVAEGuide):
        pass

    register(Registered, name="registered")
    GUIDES[("ugvae", "by-hand")] = Registered  # the route
    assert (UGVAEModel, Registered) not in PROVEN_PAIRS and ("ugvae", "by-hand") not in SHIPPED


class UnprovenGuide(UGVAEGuide):
    pass


def test_another_pair_trains_with_trace_enum_elbo_after_one_warning_saying_how_to_prove_it(tiny_cfg):
    assert isinstance(elbo_module(UGVAEModel(tiny_cfg), UGVAEGuide(tiny_cfg)).elbo, SyncFreeTraceEnum_ELBO)
    with pytest.warns(UserWarning) as caught:
        fallback = elbo_module(UGVAEModel(tiny_cfg), UnprovenGuide(tiny_cfg))
    assert len(caught) == 1 and type(fallback.elbo) is TraceEnum_ELBO
    message = str(caught[0].message)
    assert "UnprovenGuide is not proven equal under the sync-free ELBO: training with TraceEnum_ELBO" in message
    assert "run ugvae.guide.check_guide(UnprovenGuide, model_cfg, model='ugvae', elbo=True)" in message
    assert "once it passes, set `proven_sync_free = True` on UnprovenGuide" in message
    with pytest.raises(ConfigError, match="`local_kl_weight` need the sync-free ELBO, but UGVAEModel with Unproven"):
        elbo_module(UGVAEModel(tiny_cfg), UnprovenGuide(tiny_cfg), levers=Levers(local_kl_weight=2.0))


def test_a_guide_that_declares_itself_proven_after_the_check_trains_with_the_sync_free_elbo(tiny_cfg, recwarn):
    assert check_guide(UnprovenGuide, tiny_cfg, elbo=True).sync_free_equal

    class CheckedGuide(UnprovenGuide):
        proven_sync_free = True  # what the warning asks for, once the check above passed

    loss_fn = elbo_module(UGVAEModel(tiny_cfg), CheckedGuide(tiny_cfg))
    assert isinstance(loss_fn.elbo, SyncFreeTraceEnum_ELBO) and not recwarn.list
    levered = elbo_module(UGVAEModel(tiny_cfg), CheckedGuide(tiny_cfg), levers=Levers(local_kl_weight=2.0))
    assert levered.elbo.levers.local_kl_weight == 2.0

    class Variant(CheckedGuide):  # another program: its parent's check does not cover it
        pass

    with pytest.warns(UserWarning, match="Variant is not proven"):
        assert type(elbo_module(UGVAEModel(tiny_cfg), Variant(tiny_cfg)).elbo) is TraceEnum_ELBO
