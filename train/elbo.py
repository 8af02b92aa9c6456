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
`UnsupportedStructure`; `make_elbo` uses it only for the (model, guide) pairs that
tests/train/test_elbo.py proves equal to TraceEnum_ELBO (`PROVEN_PAIRS`, the shipped ones) and
for a guide whose class declares `proven_sync_free` after `ugvae.guide.check_guide(..., elbo=True)`
passed; every other pair trains with TraceEnum_ELBO, after one warning that says so.
"""

from __future__ import annotations

import numbers
import warnings
from functools import partial

import torch
from pyro.distributions.util import is_identically_zero
from pyro.infer import JitTraceEnum_ELBO, TraceEnum_ELBO
from pyro.infer.elbo import ELBOModule

from ..errors import ConfigError, UnsupportedStructure
from ..guide import SHIPPED, Guide
from ..model import MODELS
from ..trained.config import Levers

# Models without a discrete site (VAE, ML-VAE) share the loss: for them TraceEnum_ELBO is
# Trace_ELBO, and its warning that nothing is enumerated is expected.
warnings.filterwarnings("ignore", message="TraceEnum_ELBO found no sample sites configured for enumeration")


def _ordinal(site) -> frozenset:
    return frozenset(f.name for f in site["cond_indep_stack"] if f.vectorized)


def _size_at(tensor: torch.Tensor, dim: int) -> int:
    return tensor.shape[dim] if tensor.dim() >= -dim else 1


def _enumerated_factors(guide_trace) -> dict:
    """{enum dim: (site name, ordinal, q(d = k))} for the guide's parallel-enumerated sites."""
    factors = {}
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or site["infer"].get("enumerate") is None:
            continue
        if site["infer"]["enumerate"] != "parallel" or site["infer"].get("num_samples") is not None:
            raise UnsupportedStructure(f"guide site {name!r}: only exact parallel enumeration is supported")
        scale = site["scale"]
        if site["mask"] is not None or not isinstance(scale, numbers.Number) or scale != 1:
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

    The sync-free ELBO for a proven pair, JitTraceEnum_ELBO with `jit`, else TraceEnum_ELBO with a
    warning. The `levers` exist in the sync-free ELBO only.
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
        return SyncFreeTraceEnum_ELBO(max_plate_nesting=2, levers=levers)(model, guide)
    if jit:
        # The JIT ELBO checks its traced graph against the eager one; one warning is enough.
        return JitTraceEnum_ELBO(max_plate_nesting=2, ignore_jit_warnings=True, strict_enumeration_warning=False)(
            model, guide
        )
    if proven(model, guide):
        return SyncFreeTraceEnum_ELBO(max_plate_nesting=2)(model, guide)
    name, model_name = type(guide).__name__, next((n for n, cls in MODELS.items() if cls is type(model)), "ugvae")
    warnings.warn(
        f"{name} is not proven equal under the sync-free ELBO: training with TraceEnum_ELBO, which syncs with "
        f"the host every step. To prove it, run ugvae.guide.check_guide({name}, model_cfg, model={model_name!r}, "
        f"elbo=True); once it passes, set `proven_sync_free = True` on {name}",
        stacklevel=2,
    )
    return TraceEnum_ELBO(max_plate_nesting=2, strict_enumeration_warning=False)(model, guide)


def make_elbo(jit: bool = False, levers: Levers | None = None):
    """`make_elbo(jit, levers)(model, guide)`: `elbo_module` in the calling convention of an ELBO instance."""
    return partial(elbo_module, jit=jit, levers=levers)
