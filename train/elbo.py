"""The training loss: the enumerated ELBO of eq. 10-11, assembled with no host-device sync.

For one reparameterised draw of the continuous latents (z, beta) from the guide, and the
discrete d_i of each sample summed exactly under q(d_i | z_i), the loss is minus

    ELBO = sum_s  sum_{k: s depends on d} q(d = k) log p_s(k)  -  the same sum over guide sites,

where s runs over the sites of the model (log p) and of the guide (log q). A term that
depends on the enumerated value of d is weighted by q(d = k) elementwise and summed over
k; a term that does not is taken as it is (its weights sum to one). For UG-VAE this is
eq. 10-11: sum_i [log p(x_i | z_i, beta) - log q(z_i) + sum_k pi_ik (log p(z_i | k, beta)
+ log p(k) - log pi_ik)] + log p(beta) - log q(beta), summed over groups.

This is the DiCE estimator (Foerster et al., 2018) specialised to enumeration in the guide:
the weight of an enumerated value is q(d = k) itself, not a stopped copy, so its gradient is
the exact gradient of the sum over k, and a reparameterised site has no score term (its DiCE
factor is one). A term of weight zero is dropped, because an underflowed probability may meet
a cost of -inf; `masked_fill` does that on the device, where Pyro's Dice asks the host
(`mask.all()`), and no `warn_if_nan` reads the loss. The traces are Pyro's: `_get_traces` of
TraceEnum_ELBO runs the guide under `poutine.enum` and replays the model against it.

Two levers change the objective, each off by default (and then the loss is the one above, by
the same code):

Weight on the local KL, lambda = `local_kl_weight`. With KL_i the local KL of sample i,

    KL_i = E_q(z_i|x_i) [ log q(z_i|x_i) + sum_k pi_ik (log pi_ik - log p(z_i|k, beta) - log p(k|beta)) ],

the objective is sum_i [E log p(x_i | z_i, beta) - lambda KL_i] - KL(q(beta|X) || p(beta)), a
beta-VAE weight on z and d only: information about a sample costs lambda times more in z and d
than in beta, which a group shares. Every term of the sites z and d (model and guide) is
multiplied by lambda after the sum over d's values; the sum over k is exact and linear, so this
is exactly lambda KL_i (one draw of z), and its gradient is the gradient of it. (A
`poutine.scale` on the enumerated site would instead raise q(d) to a power inside Dice.) For
lambda >= 1 it is below the ELBO in expectation, so still a bound on log p(X).

Leave-one-out decoding (`leave_one_out`, after the Variational Homoencoder, Hewitt et al. 2018).
Member i is decoded with beta_i ~ q_i = q(beta | X_-i), inferred from the other members (eq. 9
over j != i; model and guide called with `leave_one_out=True` put beta in the samples plate
with its density scaled by 1/B). With l_i(beta) the local ELBO of x_i given beta (eq. 11,
<= log p(x_i | beta)):

    L_loo(X) = sum_i { E_q_i [ l_i(beta) ] - (1/B) KL(q_i || p(beta)) }.

One draw beta_i per member gives sum_i [l_i(beta_i) - (1/B)(log q_i(beta_i) - log p(beta_i))],
an unbiased estimate. What it bounds:
  (a) each term is an ELBO of a set of B copies of x_i: for any q_i, E_q_i[B l_i] - KL(q_i||p)
      <= log int p(beta) p(x_i|beta)^B dbeta, so term i <= (1/B) log p(x_i, ..., x_i);
  (b) with q_bar = (1/B) sum_i q_i, A = sum_j E_q_bar[l_j] - (1/B) sum_i KL(q_i||p) is the mean
      over i of the ELBOs of the whole group with q_i, so A <= log p(X), and
          L_loo = A - sum_j Delta_j,   Delta_j = E_q_bar[l_j] - E_q_j[l_j].
      Delta_j is how much better x_j is explained by the posteriors that saw it than by the one
      that did not. Whenever sum_j Delta_j >= 0 (the usual case) L_loo <= A <= log p(X); in
      general it is not a bound on log p(X), and test ELBOs are always the ELBO above.
The objective pays Delta_j: a beta that explains x_j only after seeing it (what beta learns on
random groups) costs, and a beta that carries what the set shares does not.

Weight on the set's mix, gamma = `set_mix_weight` (with p(d | beta) = softmax(A beta + b)). The
ELBO's d terms hold sum_i sum_k pi_ik log p(k | beta) = -B [H(m) + KL(m || p(d | beta))] per
group, m = (1/B) sum_i pi_i the set's mean q(d): p(d | beta) is asked to be the set's mix, but
only with the weight of B nats per nat of KL, against the KL of q(beta | X) that encoding m
precisely costs. The lever adds gamma B KL(sg(m) || p(d | beta)) per group to the loss, i.e.
-gamma sum_i sum_k sg(pi_ik) log p(k | beta), with sg a stop-gradient: p(d | beta) and beta are
pulled to the set's mix, and q(d | z) is not pulled to p(d | beta) any harder than the ELBO
pulls it. H(sg(m)) is a constant of the gradient.

Supported: enumeration in the guide (`infer={"enumerate": "parallel"}`), each enumerated
site independent of the other enumerated values, without poutine.scale or masks on it;
every other latent reparameterised and present in both programs. Anything else raises
`UnsupportedStructure`; `elbo_module` uses it only for the (model, guide) pairs that
tests/train/test_elbo.py proves equal to TraceEnum_ELBO (`PROVEN_PAIRS`, the shipped ones) and
for a guide whose class declares `proven_sync_free` after `ugvae.guide.check_guide(..., elbo=True)`
passed; every other pair trains with TraceEnum_ELBO, after one warning that says so.

On a CPU the loss module of a proven pair is a `TracedELBOModule`: the same forward, recorded
by `torch.jit.trace` once a kind of input has come often enough, and replayed. Most of an eager
step's overhead over the hand-written one (bench/handwritten.py) is Python -- Pyro's messengers,
plates, distribution objects, the traces and their assembly -- which a replay leaves out: on one
CPU thread at the default sizes the eager step is ~1.4x the hand-written one at G = 1, the
replayed one ~1.05x (bench/train_step.py). The recording freezes what is fixed for a kind of
input: the program's structure, its sites, plates and shapes, the levers, the modules'
train/eval mode. The random draws stay operations of the replay, drawn from the generator an
eager step draws from, and the recording runs on a forked generator; the replay runs the
recorded operations unoptimised, so a replayed step computes the eager step's loss and
gradients bit for bit (tests/train/test_jit.py), and a run, resumed or not, is the same whether
or when it replays. `torch.jit.trace` is deprecated in torch 2.14 (torch.compile breaks Pyro's
programs into dozens of graphs and is slower than eager on a CPU; torch.export's graph replays at
~1.3x the hand-written step); where it is gone or fails, the module says so once and runs eagerly.
"""

from __future__ import annotations

import contextlib
import logging
import numbers
import warnings

import pyro
import torch
from pyro.distributions.util import is_identically_zero
from pyro.infer import JitTraceEnum_ELBO, TraceEnum_ELBO
from pyro.infer.elbo import ELBOModule
from pyro.infer.util import is_validation_enabled

from ..errors import ConfigError, UnsupportedStructure
from ..guide import SHIPPED, Guide
from ..model import MODELS
from ..trained.config import Levers

logger = logging.getLogger(__name__)

# Models without a discrete site (VAE, ML-VAE) share the loss: for them TraceEnum_ELBO is
# Trace_ELBO, and its warning that nothing is enumerated is expected.
warnings.filterwarnings("ignore", message="TraceEnum_ELBO found no sample sites configured for enumeration")


def _ordinal(site) -> frozenset:
    return frozenset(f.name for f in site["cond_indep_stack"] if f.vectorized)


def _size_at(tensor: torch.Tensor, dim: int) -> int:
    return tensor.shape[dim] if tensor.dim() >= -dim else 1


def _unscaled(scale) -> bool:
    if torch.jit.is_tracing() and torch.is_tensor(scale):
        # While tracing, plate sizes, hence scales, are 0-d tensors; the plates are part of what a
        # trace freezes, so reading one there is reading a constant.
        return float(scale) == 1
    return isinstance(scale, numbers.Number) and scale == 1


def _enumerated_factors(guide_trace) -> dict:
    """{enum dim: (site name, ordinal, q(d = k))} for the guide's parallel-enumerated sites."""
    factors = {}
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or site["infer"].get("enumerate") is None:
            continue
        if site["infer"]["enumerate"] != "parallel" or site["infer"].get("num_samples") is not None:
            raise UnsupportedStructure(f"guide site {name!r}: only exact parallel enumeration is supported")
        if site["mask"] is not None or not _unscaled(site["scale"]):
            raise UnsupportedStructure(f"guide site {name!r}: an enumerated site may not be scaled or masked")
        factors[site["infer"]["_enumerate_dim"]] = (name, _ordinal(site), site["score_parts"].score_function.exp())
    for dim, (name, _, q) in factors.items():
        if any(_size_at(q, other) > 1 for other in factors if other != dim):
            raise UnsupportedStructure(f"guide site {name!r} depends on another enumerated site")
    return factors


def _costs(model_trace, guide_trace):
    """(site name, ordinal, signed log-density) of every term of the ELBO."""
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample":
            continue
        if site["is_observed"]:
            raise UnsupportedStructure(f"guide site {name!r} is observed")
        reparameterised = is_identically_zero(site["score_parts"].score_function)
        if site["infer"].get("enumerate") is None and not reparameterised:
            raise UnsupportedStructure(
                f"guide site {name!r} is neither reparameterised nor enumerated: its score term is not assembled"
            )
        yield name, _ordinal(site), -site["log_prob"]
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample":
            continue
        if not site["is_observed"] and name not in guide_trace.nodes:
            raise UnsupportedStructure(f"model site {name!r} is latent but missing from the guide")
        yield name, _ordinal(site), site["log_prob"]


# The sites of the local KL, whose terms `local_kl_weight` multiplies, and the cluster site whose
# model term `set_mix_weight` weighs again (names of model/ugvae.py).
LOCAL_SITES = ("z", "d")
MIX_SITE = "d"


def enumerated_elbo(
    model_trace, guide_trace, site_weights: dict[str, float] | None = None, set_mix_weight: float = 0.0
) -> torch.Tensor:
    """The ELBO of one pair of traces (see the module docstring), a differentiable scalar;
    `site_weights` multiplies the terms of the sites it names (model and guide) by its value, and
    `set_mix_weight` adds its multiple of sum sg(q(d)) log p(d | beta)."""
    factors = _enumerated_factors(guide_trace)
    elbo = 0.0
    for name, ordinal, cost in _costs(model_trace, guide_trace):
        if site_weights and name in site_weights:
            cost = site_weights[name] * cost
        weight = None
        for dim, (enum_name, enum_ordinal, q) in factors.items():
            if _size_at(cost, dim) == 1:
                continue
            if not enum_ordinal <= ordinal:
                raise UnsupportedStructure(f"site {name!r} outside a plate of {enum_name!r} depends on its value")
            weight = q if weight is None else weight * q
        if weight is None:
            elbo = elbo + cost.sum()
            continue
        if torch.broadcast_shapes(weight.shape, cost.shape) != cost.shape:
            raise UnsupportedStructure(f"site {name!r} lacks a plate dim of the enumerated sites it depends on")
        elbo = elbo + (weight * cost.masked_fill(weight == 0, 0.0)).sum()
    if set_mix_weight:
        q = next(q for name, _, q in factors.values() if name == MIX_SITE).detach()
        log_p = model_trace.nodes[MIX_SITE]["log_prob"]
        elbo = elbo + set_mix_weight * (q * log_p.masked_fill(q == 0, 0.0)).sum()
    return elbo


class SyncFreeTraceEnum_ELBO(TraceEnum_ELBO):
    """TraceEnum_ELBO's traces, with the loss assembled by `enumerated_elbo`: no host sync per step.

    `levers` (module docstring) change the loss; at their defaults it is the ELBO, term for term.
    """

    def __init__(self, *args, levers: Levers | None = None, **kwargs):
        # A model without d (VAE, ML-VAE) has nothing to enumerate, as meant: no warning that it does not.
        super().__init__(*args, **{"strict_enumeration_warning": False, **kwargs})
        self.levers = levers or Levers()
        weight = self.levers.local_kl_weight
        self.site_weights = None if weight == 1 else dict.fromkeys(LOCAL_SITES, float(weight))

    def _elbo(self, model, guide, args, kwargs) -> torch.Tensor:
        if self.levers.leave_one_out:
            kwargs = {**kwargs, "leave_one_out": True}
        elbo = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            elbo = elbo + enumerated_elbo(model_trace, guide_trace, self.site_weights, self.levers.set_mix_weight)
        return elbo / self.num_particles

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        loss = -self._elbo(model, guide, args, kwargs)
        if not torch.is_tensor(loss) or not loss.requires_grad:
            raise ValueError(f"the ELBO cannot be differentiated: {loss}")
        return loss

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return -float(self._elbo(model, guide, args, kwargs))  # a float: this one syncs by contract

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return float(loss.detach())


class TracedELBOModule(ELBOModule):
    """`ELBOModule(model, guide, elbo)` whose forward on CPU tensors is traced per kind of input and
    replayed (module docstring); anything else runs eagerly.

    A kind is the inputs' shapes, dtypes and devices, the modules' train/eval mode and whether
    gradients are on. Its first `trace_after` calls run eagerly (the first under Pyro's validation,
    when on, checks the structure), then it is traced: tracing costs about as much as the Python
    of a hundred eager steps of the default networks, which a short run (or a test) never earns
    back. The replay runs TorchScript's graph as recorded, without its optimisations (which would
    round the gradients differently): its losses and gradients are the eager ones bit for bit, so
    when a run starts replaying changes none of its numbers. With validation on, a replayed loss
    that is not finite is computed again eagerly from the same random state, so that validation
    names the parameter that became invalid, as an eager step does; reading a CPU loss is no sync.
    """

    TRACED_DEVICES = frozenset({"cpu"})
    TRACE_AFTER = 100  # eager calls of a kind before it is traced
    MAX_KINDS = 8  # kinds traced at most; the others run eagerly

    def __init__(self, model, guide, elbo: SyncFreeTraceEnum_ELBO):
        super().__init__(model, guide, elbo)
        self.trace_after = self.TRACE_AFTER
        self.calls: dict[tuple, int] = {}  # eager calls of each kind so far
        self.traces: dict[tuple, torch.jit.ScriptModule | None] = {}  # None: that kind stays eager

    def forward(self, *args, **kwargs) -> torch.Tensor:
        kind = self._kind(args, kwargs)
        if kind is None:
            return super().forward(*args, **kwargs)
        if kind not in self.traces:
            calls = self.calls[kind] = self.calls.get(kind, 0) + 1
            if calls <= self.trace_after:
                return super().forward(*args)
            self.traces[kind] = self._trace(kind, args)
        traced = self.traces[kind]
        if traced is None:
            return super().forward(*args)
        rng = torch.get_rng_state() if is_validation_enabled() else None
        with torch.jit.optimized_execution(False):
            loss = traced(*args)
        if rng is not None and not torch.isfinite(loss):
            torch.set_rng_state(rng)
            return super().forward(*args)  # raises validation's error, or returns the same loss
        return loss

    def _kind(self, args, kwargs) -> tuple | None:
        if kwargs or not args:
            return None
        if not all(torch.is_tensor(a) and a.device.type in self.TRACED_DEVICES for a in args):
            return None
        inputs = tuple((a.shape, a.dtype, a.device) for a in args)
        return inputs, self.model.training, self.guide.training, torch.is_grad_enabled()

    def _trace(self, kind: tuple, args) -> torch.jit.ScriptModule | None:
        if len(self.traces) >= self.MAX_KINDS:
            logger.info(f"the ELBO has traced {self.MAX_KINDS} kinds of input; inputs {kind[0]} run eagerly")
            return None
        with _untouched(self):
            traced, why = _trace(ELBOModule(self.model, self.guide, self.elbo), args)
        if traced is None:
            logger.warning(f"the ELBO could not be traced ({why}); it runs eagerly: the same loss, slower steps")
        return traced

    def __getstate__(self):
        # Traces are a cache of this process; a copy (or a spawned worker) traces its own.
        return {**self.__dict__, "traces": {}, "calls": {}}


@contextlib.contextmanager
def _untouched(module: torch.nn.Module):
    """A block that leaves no trace in a run: its draws come from a forked generator, and the
    module's buffers (BatchNorm's running statistics) are restored at its end."""
    buffers = list(module.buffers())
    saved = [b.clone() for b in buffers]
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            with torch.no_grad():
                for buffer, value in zip(buffers, saved):
                    buffer.copy_(value)


def _trace(module: ELBOModule, args) -> tuple[torch.jit.ScriptModule | None, str]:
    """(the module traced on `args`, "") or (None, why not)."""
    try:
        with pyro.validation_enabled(False), torch.jit.optimized_execution(False), warnings.catch_warnings():
            # The trace freezes shapes and Python branches: what a kind of input fixes.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.trace", category=FutureWarning)  # see above
            traced = torch.jit.trace(module, args, check_trace=False)
    except Exception as error:  # a program torch.jit.trace cannot record, or a torch without it
        return None, f"{type(error).__name__}: {(str(error).strip() or '-').splitlines()[0]}"
    if not _shares_state(traced, module):
        return None, "its trace holds copies of the weights"
    return traced, ""


def _shares_state(traced: torch.nn.Module, module: torch.nn.Module) -> bool:
    """Whether the trace reads the module's own weights and buffers (which training updates in place)."""
    return all(
        set(map(id, getattr(traced, kind)())) == set(map(id, getattr(module, kind)()))
        for kind in ("parameters", "buffers")
    )


# The shipped pairs, fixed when ugvae is released: tests/train/test_elbo.py proves each equal to
# TraceEnum_ELBO. A guide registered later is not among them, whatever its name.
PROVEN_PAIRS = frozenset((MODELS[model_name], guide_cls) for (model_name, _), guide_cls in SHIPPED.items())


def proven(model, guide) -> bool:
    """Whether the pair trains with the sync-free ELBO: a shipped pair, or a guide whose class declares
    `proven_sync_free` (guide/base.py)."""
    if (type(model), type(guide)) in PROVEN_PAIRS:
        return True
    return isinstance(guide, Guide) and type(guide).declares_proven_sync_free()


def elbo_module(model, guide, *, jit: bool = False, levers: Levers | None = None) -> ELBOModule:
    """The loss module `loss_fn(x) -> -ELBO` that training optimises for this (model, guide) pair.

    The sync-free ELBO for a proven pair (a TracedELBOModule: traced on a CPU), JitTraceEnum_ELBO
    with `jit`, else TraceEnum_ELBO with a warning. The `levers` exist in the sync-free ELBO only.
    """
    levers = levers or Levers()
    if levers.on:
        named = " and ".join(f"`{n}`" for n in levers.on)
        if jit or not proven(model, guide):
            why = "`jit` is set" if jit else f"{type(model).__name__} with {type(guide).__name__} is not proven for it"
            raise ConfigError(f"{named} need the sync-free ELBO, but {why}; drop the lever or `jit`")
        if levers.leave_one_out and not model.has_leave_one_out:
            raise ConfigError(
                f"`leave_one_out` needs a model whose beta can be inferred per member, not {type(model).__name__}; "
                "use model ugvae"
            )
        if levers.set_mix_weight and not model.has_cluster_weights:
            raise ConfigError(
                "`set_mix_weight` pulls p(d | beta) to the set's mix, which needs `cluster_weights` global "
                f"(a model whose p(d | beta) depends on beta), not {type(model).__name__} with fixed weights"
            )
        return sync_free_module(model, guide, SyncFreeTraceEnum_ELBO(max_plate_nesting=2, levers=levers))
    if jit:
        # The JIT ELBO checks its traced graph against the eager one; one warning is enough.
        return JitTraceEnum_ELBO(max_plate_nesting=2, ignore_jit_warnings=True, strict_enumeration_warning=False)(
            model, guide
        )
    if proven(model, guide):
        return sync_free_module(model, guide, SyncFreeTraceEnum_ELBO(max_plate_nesting=2))
    name, model_name = type(guide).__name__, next((n for n, cls in MODELS.items() if cls is type(model)), "ugvae")
    warnings.warn(
        f"{name} is not proven equal under the sync-free ELBO: training with TraceEnum_ELBO, which syncs with "
        f"the host every step. To prove it, run ugvae.guide.check_guide({name}, model_cfg, model={model_name!r}, "
        f"elbo=True); once it passes, set `proven_sync_free = True` on {name}",
        stacklevel=2,
    )
    return TraceEnum_ELBO(max_plate_nesting=2, strict_enumeration_warning=False)(model, guide)


def sync_free_module(model, guide, elbo: SyncFreeTraceEnum_ELBO) -> ELBOModule:
    """The sync-free ELBO's module: traced for a shipped pair; eager for a guide of one's own, whose
    Python may branch on its data, which a trace would freeze (module docstring)."""
    if (type(model), type(guide)) in PROVEN_PAIRS:
        return TracedELBOModule(model, guide, elbo)
    return elbo(model, guide)
