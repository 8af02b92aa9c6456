"""`check_guide`: whether a guide keeps the contract of guide/base.py, each fault named in one line.

    report = check_guide(MineGuide, ModelConfig(x_shape=(1, 28, 28), z_dim=2, hidden=16))
    report = check_guide(MineGuide, cfg, elbo=True)  # also: the sync-free ELBO equals TraceEnum_ELBO

It builds the model (by registry name) and the guide from `model_cfg` (a small config is enough,
and quick), draws G = 2 groups of B = 3 random images, and checks on them:

    class        a subclass of Guide that builds from the config, for the model named `model`
    sites        the guide traced under enumeration, as TraceEnum_ELBO traces it: every latent
                 site of the model is in the guide under its own name, and no other site
    plates       each guide site in the model's plates for it, at the same dims
    shapes       each guide site's batch and event shapes are the model's (model/ugvae.py's table)
    enumeration  every discrete latent of the model (d) enumerated in parallel in the guide
    facts        `has_global_latent` and `has_mixture` those of the model, whose sites they name
    program      the model replayed against the guide: TraceEnum_ELBO is finite, every guide
                 parameter gets a gradient, and Pyro has no warning about the pair
    posteriors   `local_posterior` and `global_posterior` return guide/base.py's NamedTuples of
                 tensors of the documented shapes, scales positive and pi summing to one
    elbo=True    the sync-free ELBO of train/elbo.py equals TraceEnum_ELBO on the batch, loss and
                 every gradient; only then may the class declare `proven_sync_free = True`

A fault that makes later checks meaningless (a guide that does not run, sites that do not match)
stops there, so that one mistake is one line. The result is a `GuideReport`, or a
GuideContractError whose `problems` hold every line. Checking draws from a generator of its
own and leaves the caller's random stream as it was.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import pyro
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO
from pyro.poutine.util import site_is_subsample

from ..errors import GuideContractError, UnsupportedStructure
from ..model import MODELS, ModelConfig
from .base import GlobalPosterior, Guide, LocalPosterior
from .registry import check_model

G, B = 2, 3  # groups and samples of the checked batch: unequal, so that swapped dims show
PLATES = {"groups": -2, "samples": -1}  # model/ugvae.py
TOLERANCE = 1e-5  # relative, of the loss and of each gradient (tests/train/test_elbo.py)


class Site(NamedTuple):
    batch_shape: tuple
    event_shape: tuple
    plates: tuple  # ((name, dim), ...) of the vectorised plates around the site, by dim
    observed: bool
    enumerable: bool  # a discrete distribution, to be enumerated where a guide samples it
    enumerate: str | None  # the site's infer["enumerate"]


@dataclass(frozen=True)
class GuideReport:
    """What :func:`check_guide` found in a guide that keeps the contract; ``str()`` of it lists the sites.

    Attributes
    ----------
    guide, model : str
        The guide class's name and the model's registry name.
    sites : dict
        Site name -> its batch and event shapes, plates and enumeration, as traced on G = 2
        groups of B = 3 random images.
    sync_free_equal : bool or None
        Whether the sync-free ELBO equals TraceEnum_ELBO (loss and gradients); None: not asked.
    """

    guide: str
    model: str
    sites: dict[str, Site]
    sync_free_equal: bool | None

    def __str__(self) -> str:
        lines = [f"{self.guide} keeps the guide contract of model {self.model} (G = {G}, B = {B}):"]
        for name, site in self.sites.items():
            plates = ", ".join(p for p, _ in site.plates) or "none"
            how = ", enumerated" if site.enumerate else ""
            lines.append(f"  {name}: batch {site.batch_shape}, event {site.event_shape}, plates {plates}{how}")
        if self.sync_free_equal:
            lines.append("  the sync-free ELBO equals TraceEnum_ELBO: it may declare `proven_sync_free = True`")
        return "\n".join(lines)


def check_guide(guide_cls: type[Guide], model_cfg: ModelConfig, model: str = "ugvae", elbo: bool = False):
    """Check that a guide keeps the contract of its model, and name each fault with its fix.

    Builds the model and the guide, traces both on random groups and checks: the model's latent
    sites under their names, plates and shapes; ``d`` enumerated in parallel; every parameter
    trained; ``local_posterior`` and ``global_posterior`` returning the documented NamedTuples and
    shapes; the class facts ``has_global_latent`` and ``has_mixture``. Entering a plate twice by
    name (``pyro.plate("samples", ...)`` twice), a classic Pyro mistake, is named with its idiom.

    Parameters
    ----------
    guide_cls : type
        A subclass of :class:`Guide`.
    model_cfg : ModelConfig
        Sizes to build both with; a small one (``x_shape=(1, 8, 8)``, ``hidden=16``) is quick.
    model : str, default "ugvae"
        The model's registry name.
    elbo : bool, default False
        Also compare the sync-free ELBO with TraceEnum_ELBO, loss and every gradient (relative
        tolerance 1e-5). Once it passes, the class may declare ``proven_sync_free = True``.

    Returns
    -------
    GuideReport
        The traced sites, and the ELBO comparison when asked.

    Raises
    ------
    GuideContractError
        One line per fault in ``problems``, each naming the site or method and the fix.

    Examples
    --------
    >>> print(check_guide(ugvae.UGVAEGuide, ugvae.ModelConfig(x_shape=(1, 8, 8), hidden=16)))  # doctest: +ELLIPSIS
    UGVAEGuide keeps the guide contract of model ugvae (G = 2, B = 3):
    ...
    """
    name = getattr(guide_cls, "__name__", type(guide_cls).__name__)
    if not (isinstance(guide_cls, type) and issubclass(guide_cls, Guide)):
        raise GuideContractError(name, [f"{name} is not a subclass of ugvae.guide.Guide: derive it from Guide"])
    check_model(model)
    if guide_cls.model_name not in (None, model):
        raise GuideContractError(
            name, [f"{name}.model_name is {guide_cls.model_name!r}: check it with model={guide_cls.model_name!r}"]
        )
    with torch.random.fork_rng(devices=[]), pyro.validation_enabled(True):
        torch.manual_seed(0)
        p = MODELS[model](model_cfg)
        try:
            q = guide_cls(model_cfg)
        except Exception as error:
            raise GuideContractError(name, [f"{name}(model_cfg) raises {said(error)}"]) from None
        x = torch.rand(G, B, *model_cfg.x_shape)
        expected = sites_of(poutine.trace(p).get_trace(x))
        problems, sites = program_problems(p, q, x, expected)
        problems += posterior_problems(q, model_cfg)
        equal = None
        if elbo and not problems:
            problems = sync_free_problems(p, q, x)
            equal = not problems
    if problems:
        raise GuideContractError(name, problems)
    return GuideReport(name, model, sites, equal)


# -- the program ----------------------------------------------------------------------------
def sites_of(trace) -> dict[str, Site]:
    sites = {}
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        fn = site["fn"]
        sites[name] = Site(
            tuple(fn.batch_shape),
            tuple(fn.event_shape),
            tuple(sorted(((f.name, f.dim) for f in site["cond_indep_stack"] if f.vectorized), key=lambda p: p[1])),
            site["is_observed"],
            fn.has_enumerate_support,
            site["infer"].get("enumerate"),
        )
    return sites


def program_problems(model, guide, x, expected: dict[str, Site]) -> tuple[list[str], dict[str, Site]]:
    """(faults of the guide's program against the model's sites, the guide's sites)."""
    try:
        guide_trace = poutine.trace(poutine.enum(guide, first_available_dim=-1 - len(PLATES))).get_trace(x)
    except Exception as error:
        return [failure_line(error, expected, tuple(x.shape))], {}
    sites = sites_of(guide_trace)
    problems = site_problems(model, guide, sites, expected)
    if problems:
        return problems, sites
    return elbo_problems(model, guide, x), sites


def failure_line(error: Exception, expected: dict[str, Site], shape: tuple) -> str:
    text = str(error)
    for plate in PLATES:
        if f"Multiple sample sites named '{plate}'" in text:
            return (
                f"the plate {plate!r} is entered twice by name: a second pyro.plate({plate!r}, ...) is a second site "
                f"of that name, which Pyro refuses (\"Multiple sample sites named '{plate}'\"); build the plate once, "
                f"{plate} = pyro.plate({plate!r}, size, dim={PLATES[plate]}), and enter that object twice "
                f"(`with {plate}:`)"
            )
    for site in expected:
        if f"Multiple sample sites named '{site}'" in text:
            return f"the guide samples site {site!r} twice: sample each site once"
    fix = ""
    if "Shape mismatch inside plate" in text:
        fix = ": give the site the model's batch shape and its latent dims as an event, .to_event(1) (model/ugvae.py)"
    return f"guide(x), x of shape (G, B, C, H, W) = {shape} in [0, 1], raises {said(error)}{fix}"


def site_problems(model, guide, sites: dict[str, Site], expected: dict[str, Site]) -> list[str]:
    latent = [n for n, s in expected.items() if not s.observed]
    missing = [n for n in latent if n not in sites]
    unknown = [n for n in sites if n not in expected]
    observed = [n for n in sites if n in expected and expected[n].observed]
    problems = []
    if missing or unknown:
        what = []
        if unknown:
            what.append(f"samples {listed(unknown)}, which the model has not,")
        if missing:
            what.append(f"lacks the model's latent {listed(missing)}")
        problems.append(
            f"the guide {' and '.join(what).rstrip(',')}: sample every latent site of the model under its name "
            f"({listed(latent)}; model/ugvae.py) and no other"
        )
    if observed:
        problems.append(f"the guide samples the model's observed {listed(observed)}: a guide samples latent sites only")
    for name in latent:
        if name in sites:
            problems += one_site_problems(name, sites[name], expected[name], model)
    problems += fact_problems(model, guide)
    return problems


def one_site_problems(name: str, site: Site, want: Site, model) -> list[str]:
    if site.plates != want.plates:
        extra = {p for p, _ in site.plates} - {p for p, _ in want.plates}
        hint = " (one per group: sample it outside `samples`)" if extra == {"samples"} else ""
        return [
            f"guide site {name!r} is in the plates {plates_of(site)}, the model's in {plates_of(want)}{hint}: "
            "sample it under the model's plates at the model's dims"
        ]
    problems = []
    batch = site.batch_shape[len(site.batch_shape) - len(want.batch_shape) :]  # leading dims: enumeration's
    if batch != want.batch_shape or site.event_shape != want.event_shape:
        problems.append(
            f"guide site {name!r} has batch shape {site.batch_shape} and event shape {site.event_shape}, the model's "
            f"{want.batch_shape} and {want.event_shape} (G = {G}, B = {B}; model/ugvae.py): shape its distribution "
            "as the model's"
        )
    if want.enumerable and site.enumerate != "parallel":
        how = "enumerated in sequence" if site.enumerate else "sampled"
        size = model.latent_sizes.get(name, "its")
        problems.append(
            f"guide site {name!r} is {how}, not enumerated in parallel: give its pyro.sample "
            f"infer={{'enumerate': 'parallel'}}, so that the ELBO sums over its {size} values exactly (eq. 10-11)"
        )
    return problems


def fact_problems(model, guide) -> list[str]:
    problems = []
    for fact, site in (("has_global_latent", "beta"), ("has_mixture", "d")):
        mine, theirs = getattr(guide, fact), getattr(model, fact)
        if mine != theirs:
            problems.append(
                f"{type(guide).__name__}.{fact} is {mine}, but the model {'samples' if theirs else 'has no'} "
                f"site {site!r}: set `{fact} = {theirs}` on the class"
            )
    return problems


def elbo_problems(model, guide, x) -> list[str]:
    """TraceEnum_ELBO of the pair: finite, a gradient for every guide parameter, no warning from Pyro."""
    guide.zero_grad()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            loss = TraceEnum_ELBO(max_plate_nesting=len(PLATES), strict_enumeration_warning=False).differentiable_loss(
                model, guide, x
            )
            loss.backward()
        except Exception as error:
            return [f"TraceEnum_ELBO of the model replayed against the guide raises {said(error)}"]
    problems = [
        f"Pyro warns about the pair: {' '.join(str(w.message).split())[:300]}"
        for w in caught
        if issubclass(w.category, (UserWarning, RuntimeWarning))
    ]
    if not math.isfinite(loss.item()):
        problems.append(f"TraceEnum_ELBO is {loss.item()} on images in [0, 1]: check the scales are positive")
    idle = [n for n, p in guide.named_parameters() if p.requires_grad and p.grad is None]
    if idle:
        problems.append(
            f"the guide's {listed(idle[:4])}{' and more' if len(idle) > 4 else ''} get no gradient from the ELBO: "
            "a network that the program never uses, or that is no submodule of the guide, never trains"
        )
    return problems


# -- the posteriors ------------------------------------------------------------------------
def posterior_problems(guide: Guide, cfg: ModelConfig) -> list[str]:
    x = torch.rand(G, B, *cfg.x_shape)
    want = {"z_loc": (G, B, cfg.z_dim), "z_scale": (G, B, cfg.z_dim)}
    if guide.has_mixture:
        want["pi"] = (G, B, cfg.K)
    problems = summary_problems(guide, "local_posterior", LocalPosterior, want, x)
    if guide.has_global_latent:
        want = {"loc": (G, cfg.beta_dim), "scale": (G, cfg.beta_dim)}
        problems += summary_problems(guide, "global_posterior", GlobalPosterior, want, x)
    return problems


def summary_problems(guide: Guide, method: str, kind: type, want: dict[str, tuple], x) -> list[str]:
    try:
        summary = getattr(guide, method)(x)
    except Exception as error:
        return [f"{method}(x) raises {said(error)}"]
    if not isinstance(summary, kind):
        return [f"{method}(x) returns a {type(summary).__name__}, not a {kind.__name__}: return {kind.__name__}(...)"]
    faults = []
    for field in kind._fields:
        value = getattr(summary, field)
        if field not in want:
            if value is not None:
                faults.append(f"{field} is a {type(value).__name__}, not None (the guide has no mixture)")
        elif not (isinstance(value, torch.Tensor) and value.is_floating_point()):
            faults.append(f"{field} is a {type(value).__name__}, not a float tensor")
        elif tuple(value.shape) != want[field]:
            faults.append(f"{field} has shape {tuple(value.shape)}, not {want[field]}")
        elif field.endswith("scale") and not (value > 0).all():
            faults.append(f"{field} is not positive everywhere")
        elif field == "pi" and not torch.allclose(value.sum(-1), torch.ones(())):
            faults.append("pi does not sum to one over its last dim")
    if not faults:
        return []
    sizes = "(G, B, z_dim), pi (G, B, K)" if kind is LocalPosterior else "(G, beta_dim)"
    return [f"{method}(x) for G = {G}, B = {B}: {'; '.join(faults)} (guide/base.py: {sizes})"]


# -- the sync-free ELBO ---------------------------------------------------------------------
def sync_free_problems(model, guide, x) -> list[str]:
    """Whether the sync-free ELBO equals TraceEnum_ELBO on `x`, loss and every gradient."""
    # The one import of train/ below it (tests/test_layers.py): the loss that training owns.
    from ..train.elbo import SyncFreeTraceEnum_ELBO

    reference = loss_and_grads(
        TraceEnum_ELBO(max_plate_nesting=len(PLATES), strict_enumeration_warning=False), model, guide, x
    )
    try:
        loss, grads = loss_and_grads(
            SyncFreeTraceEnum_ELBO(max_plate_nesting=len(PLATES), strict_enumeration_warning=False), model, guide, x
        )
    except UnsupportedStructure as error:
        return [f"the sync-free ELBO cannot assemble the pair ({error}): leave `proven_sync_free` unset"]
    ref_loss, ref_grads = reference
    if not math.isclose(loss, ref_loss, rel_tol=TOLERANCE):
        return [f"the sync-free ELBO is {-loss:.6g}, TraceEnum_ELBO {-ref_loss:.6g}: leave `proven_sync_free` unset"]
    differ = [
        n
        for n, ref in ref_grads.items()
        if n not in grads or not torch.allclose(grads[n], ref, rtol=TOLERANCE, atol=TOLERANCE * float(ref.abs().max()))
    ]
    if differ:
        return [
            f"the sync-free ELBO's gradients of {listed(differ[:4])} differ from TraceEnum_ELBO's: "
            "leave `proven_sync_free` unset"
        ]
    return []


def elbo_of(kind):
    # VAE and ML-VAE have nothing to enumerate, as meant: no warning that they do not.
    return kind(max_plate_nesting=len(PLATES), strict_enumeration_warning=False)


def loss_and_grads(elbo, model, guide, x) -> tuple[float, dict[str, torch.Tensor]]:
    loss_fn = elbo(model, guide)
    torch.manual_seed(1)  # the same draws of z and beta for both ELBOs
    loss_fn.zero_grad()
    loss = loss_fn(x)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in loss_fn.named_parameters() if p.grad is not None}


# -- words ------------------------------------------------------------------------------------
def said(error: Exception) -> str:
    return f"{type(error).__name__}: {first_line(error)}"


def first_line(message) -> str:
    return (str(message).strip() or "-").splitlines()[0][:300]


def listed(names) -> str:
    return ", ".join(repr(n) for n in names)


def plates_of(site: Site) -> str:
    return " and ".join(f"{name} (dim {dim})" for name, dim in site.plates) or "none"
