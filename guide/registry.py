"""Models and guides by name: the one place that pairs a generative model with its guides.

A guide comes from one of three places, and a run's config.json records which (`GuideSource`):

    shipped                 SHIPPED below
    entry point             an installed distribution declares it in the entry-point group
                            `ugvae.guides`, named by the guide's name, the class naming its model:

                                # pyproject.toml of the user's package
                                [project.entry-points."ugvae.guides"]
                                mine = "mypackage.guides:MineGuide"     # MineGuide.model_name = "ugvae"

    registered at run time  `register(MineGuide, model="ugvae", name="mine")`, or `fit(guide=MineGuide)`

Entry points are read only for a name that is neither shipped nor registered, and loaded then.

Trust: nothing here imports a module because a run's config.json names it. A name read from a
config.json is looked up among the shipped guides, those registered in this process and the
entry points of installed distributions, which the user chose to install; a name found in none
is a `GuideUnavailable` that says how to provide it. What config.json records of a guide's
origin (its distribution, its class) is only ever shown.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
from dataclasses import asdict, dataclass
from types import MappingProxyType

from ..errors import ConfigError, GuideUnavailable, UnknownName
from ..model import MODELS, ModelConfig
from .attention import AttentionGuide
from .base import Guide
from .beta_from_x import BetaFromXGuide
from .gmvae import GMVAEGuide
from .mean_field import MeanFieldGuide
from .mlvae import MLVAEGuide
from .set_mix import SetMixGuide
from .ugvae import UGVAEGuide
from .vae import VAEGuide

logger = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "ugvae.guides"
SHIPPED_KIND, ENTRY_POINT_KIND, RUN_TIME_KIND = "shipped", "entry point", "registered at run time"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
MAX_RECORD = 200  # characters of a recorded distribution, version or class path

# (model name, guide name) -> guide class, as shipped; the first guide listed for a model is its
# default. tests/train/test_elbo.py proves each pair under the sync-free ELBO (train/elbo.py).
SHIPPED: MappingProxyType[tuple[str, str], type[Guide]] = MappingProxyType(
    {
        ("ugvae", "structured"): UGVAEGuide,
        ("ugvae", "beta-from-x"): BetaFromXGuide,
        ("ugvae", "mean-field"): MeanFieldGuide,
        ("ugvae", "attention"): AttentionGuide,
        ("ugvae", "set-mix"): SetMixGuide,
        ("vae", "gaussian"): VAEGuide,
        ("gmvae", "structured"): GMVAEGuide,
        ("mlvae", "accumulated-evidence"): MLVAEGuide,
    }
)
# Every guide this process knows: the shipped ones, those registered, those loaded from entry points.
GUIDES: dict[tuple[str, str], type[Guide]] = dict(SHIPPED)


@dataclass(frozen=True)
class GuideSource:
    """Where a guide came from, as config.json records it.

    Attributes
    ----------
    kind : str
        ``"shipped"``, ``"entry point"`` or ``"registered at run time"``.
    distribution, version : str or None
        The installed distribution that declares an entry-point guide, and its version.
    defined_in : str or None
        Where its class lives (``module:Class``): recorded for the reader, never imported.
    """

    kind: str
    distribution: str | None = None
    version: str | None = None
    defined_in: str | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d) -> GuideSource:
        """From config.json's `guide_source`; a ValueError names what is malformed."""
        if not isinstance(d, dict) or not set(d) <= {"kind", "distribution", "version", "defined_in"}:
            raise ValueError("`guide_source` must be an object of kind, distribution, version and defined_in")
        if d.get("kind") not in (SHIPPED_KIND, ENTRY_POINT_KIND, RUN_TIME_KIND):
            raise ValueError(f"`guide_source.kind` must be {SHIPPED_KIND!r}, {ENTRY_POINT_KIND!r} or {RUN_TIME_KIND!r}")
        for key, value in d.items():
            if not isinstance(value, str) or not value or len(value) > MAX_RECORD or not value.isprintable():
                raise ValueError(f"`guide_source.{key}` must be a short line of text")
        return cls(**d)

    def describe(self) -> str:
        if self.kind == ENTRY_POINT_KIND:
            return f"from the entry point of the distribution {self.distribution} {self.version or ''}".rstrip()
        if self.kind == RUN_TIME_KIND:
            return RUN_TIME_KIND + (f" from {self.defined_in}" if self.defined_in else "")
        return "shipped with ugvae"


SHIPPED_SOURCE = GuideSource(SHIPPED_KIND)
_sources: dict[tuple[str, str], GuideSource] = {}  # of the guides in GUIDES that are not shipped


def check_model(model_name: str) -> None:
    if model_name not in MODELS:
        raise UnknownName(f"model {model_name!r} is unknown; choose one of {sorted(MODELS)}")


def check_guide_name(name) -> None:
    """A ConfigError unless `name` can name a guide (in flags, config.json and entry points)."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ConfigError(f"`guide` {name!r:.80} is no guide name: use up to 64 letters, digits, '-', '_', '.' or '+'")


def guide_names(model_name: str) -> list[str]:
    """The guide names this process knows for a model: shipped and registered (installed entry
    points are loaded by name, on first use, and not listed).

    Parameters
    ----------
    model_name : str
        A model's registry name.

    Raises
    ------
    UnknownName
        No such model.
    """
    check_model(model_name)
    return [g for (m, g) in GUIDES if m == model_name]


def default_guide(model_name: str) -> str:
    """The name of a model's default guide, its first shipped one: ``"structured"`` for ugvae.

    Parameters
    ----------
    model_name : str
        A model's registry name.

    Raises
    ------
    UnknownName
        No such model.
    """
    check_model(model_name)
    return next(g for (m, g) in SHIPPED if m == model_name)


def guide_class(model_name: str, guide_name: str | None = None) -> type[Guide]:
    """The class of a guide, by name.

    Parameters
    ----------
    model_name : str
        A model's registry name: ``ugvae``, ``vae``, ``gmvae`` or ``mlvae``.
    guide_name : str, optional
        The guide's name. Default: the model's first (:func:`default_guide`).

    Returns
    -------
    type
        The :class:`Guide` subclass: shipped, registered in this process, or else from an
        installed package's entry point (group ``ugvae.guides``), which this loads.

    Raises
    ------
    UnknownName
        No such model, or no such guide; the message lists the choices and installed entry points.
    """
    check_model(model_name)
    guide_name = guide_name or default_guide(model_name)
    key = (model_name, guide_name)
    if key not in GUIDES:
        check_guide_name(guide_name)
        if not _load_entry_point(model_name, guide_name):
            installed = sorted({ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)})
            also = f"; installed entry points: {', '.join(installed)}" if installed else ""
            raise UnknownName(
                f"guide {guide_name!r} does not exist for model {model_name!r}; choose one of "
                f"{guide_names(model_name)}, or install a package that provides it in the entry-point group "
                f"{ENTRY_POINT_GROUP}{also}"
            )
    return GUIDES[key]


def guide_source(model_name: str, guide_name: str) -> GuideSource:
    """Where a guide came from: shipped, an installed entry point, or registered at run time.

    Parameters
    ----------
    model_name : str
        A model's registry name.
    guide_name : str
        One of its guides (found as :func:`guide_class` finds it).

    Returns
    -------
    GuideSource
    """
    key = (model_name, guide_name)
    cls = guide_class(model_name, guide_name)
    if SHIPPED.get(key) is cls:
        return SHIPPED_SOURCE
    # A class put into GUIDES by hand is registered at run time, as `register` would have done.
    return _sources.get(key) or GuideSource(RUN_TIME_KIND, defined_in=class_path(cls))


def run_guide_source(model_name: str, guide_name: str, recorded: GuideSource | None, run_dir: str) -> GuideSource:
    """Where the guide of the run in `run_dir` comes from in this process (loading its entry point
    if need be), given what its config.json `recorded` (None for runs made before the record).
    A guide found nowhere is a GuideUnavailable that names it and the two ways to provide it."""
    try:
        current = guide_source(model_name, guide_name)
    except GuideUnavailable:
        raise
    except UnknownName:
        recorded = recorded or GuideSource(RUN_TIME_KIND)
        cls_name = (recorded.defined_in or "YourGuide").rpartition(":")[2].rpartition(".")[2]
        package = (
            f"the distribution {recorded.distribution}" if recorded.distribution else "the package that provides it"
        )
        raise GuideUnavailable(
            f"{run_dir} was trained with the guide {guide_name!r} of model {model_name} ({recorded.describe()}), "
            f"which is not available here: install {package} (entry-point group {ENTRY_POINT_GROUP}), or register "
            f"the class before opening the run: ugvae.guide.register({cls_name}, model={model_name!r}, "
            f"name={guide_name!r})"
        ) from None
    if recorded is not None and recorded.kind == ENTRY_POINT_KIND and recorded != current:
        logger.warning(
            f"{run_dir} was trained with the guide {guide_name!r} {recorded.describe()}; this process has it "
            f"{current.describe()}"
        )
    return current


def register(guide_cls: type[Guide], model: str | None = None, name: str | None = None) -> str:
    """Make `guide_cls` the guide `name` of `model` in this process, and return the name.

    A run trained with it records it as "registered at run time"; another process opens that run
    once it makes the same call before :func:`ugvae.load_run`. For every process (and the command
    line), declare it as an entry point instead (:doc:`/tutorials/writing-a-guide`).

    Parameters
    ----------
    guide_cls : type
        A subclass of :class:`Guide` (not an instance: ugvae builds it).
    model : str, optional
        The model's registry name. Default: the class's ``model_name``, else ``"ugvae"``.
    name : str, optional
        The guide's name: 1 to 64 letters, digits and ``_.+-``, starting with a letter or digit.
        Default: the class's name in the registry's style (``MeanPoolGuide`` -> ``"mean-pool"``).

    Returns
    -------
    str
        The name it is registered under.

    Raises
    ------
    ConfigError
        Not a Guide subclass, a guide of another model, a malformed name, or a name a shipped
        guide or an installed entry point already holds. Registering the same name again
        replaces an earlier registration (a notebook cell run twice).
    """
    if not (isinstance(guide_cls, type) and issubclass(guide_cls, Guide)):
        raise ConfigError(f"`guide` must be a subclass of ugvae.guide.Guide, got {described(guide_cls)}")
    model = model or guide_cls.model_name or "ugvae"
    check_model(model)
    if guide_cls.model_name not in (None, model):
        raise ConfigError(
            f"`guide` {guide_cls.__name__} is a guide of model {guide_cls.model_name}, not of {model}: "
            f"set `model` to {guide_cls.model_name}"
        )
    name = name or default_name(guide_cls)
    check_guide_name(name)
    key = (model, name)
    taken = GUIDES.get(key)
    if taken is guide_cls:
        return name
    if key in SHIPPED:
        raise ConfigError(
            f"guide name {name!r} of model {model} is the shipped {SHIPPED[key].__name__}'s: "
            f"register {guide_cls.__name__} under another `name`"
        )
    if key in _sources and _sources[key].kind == ENTRY_POINT_KIND:
        raise ConfigError(
            f"guide name {name!r} of model {model} is provided by the distribution {_sources[key].distribution}: "
            f"register {guide_cls.__name__} under another `name`"
        )
    GUIDES[key] = guide_cls
    _sources[key] = GuideSource(RUN_TIME_KIND, defined_in=class_path(guide_cls))
    return name


def registered_name(guide, model: str) -> str:
    """The registry name of `fit`'s `guide`: a name as it is, a Guide subclass under the name it is
    registered by (registering it first when it is not); anything else is refused."""
    if guide is None or isinstance(guide, str):
        return guide
    if isinstance(guide, type) and issubclass(guide, Guide):
        known = [g for (m, g), cls in GUIDES.items() if m == model and cls is guide]
        return known[0] if known else register(guide, model)
    if isinstance(guide, Guide):
        raise ConfigError(f"`guide` must be the class {type(guide).__name__}, not an instance: ugvae builds it")
    raise ConfigError(
        f"`guide` must be a guide name or a subclass of ugvae.guide.Guide, got {described(guide)}; "
        + (AUTOGUIDE_REFUSAL if callable(guide) else "see guide/base.py for the contract")
    )


# Why `fit` refuses Pyro's AutoGuides (docs/tutorials/writing-a-guide, "Pyro AutoGuides"): an AutoGuide of
# poutine.block(config_enumerate(model), hide=["d"]) makes its parameters on its first call, one
# per latent of the batch it saw; what ugvae does with a run (new groups each step, the test
# ELBO and `embed` on groups never seen) needs q to be a function of the data.
AUTOGUIDE_REFUSAL = (
    "a Pyro AutoGuide (or a factory of one) is not amortised: its parameters fit one fixed batch of groups, "
    "so a run could neither infer beta for new groups (embed, the test ELBO) nor train on fresh groups each step; "
    "fit it against a trained run with plain SVI on your groups instead (the tutorial 'Writing a guide' "
    "of the documentation, 'Pyro AutoGuides')"
)


def build(model_cfg: ModelConfig, model_name: str = "ugvae", guide_name: str | None = None):
    """A fresh model and guide, by registry names.

    Parameters
    ----------
    model_cfg : ModelConfig
        Sizes of both.
    model_name : str, default "ugvae"
        ``ugvae``, ``vae``, ``gmvae`` or ``mlvae``.
    guide_name : str, optional
        A guide of that model. Default: the model's first.

    Returns
    -------
    tuple of (GenerativeModel, Guide)
        Untrained, in train mode, on the CPU.

    Raises
    ------
    UnknownName
        No such model or guide; the message lists the choices.

    Examples
    --------
    >>> model, guide = ugvae.build(ugvae.ModelConfig(x_shape=(1, 8, 8)), "ugvae", "mean-field")
    >>> type(guide).__name__
    'MeanFieldGuide'
    """
    guide = guide_class(model_name, guide_name)
    return MODELS[model_name](model_cfg), guide(model_cfg)


# -- helpers ------------------------------------------------------------------------------
def default_name(guide_cls: type) -> str:
    """`MeanPoolGuide` -> "mean-pool", the style of the shipped names."""
    stem = guide_cls.__name__.removesuffix("Guide") or guide_cls.__name__
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", stem).lower()


def class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"[:MAX_RECORD]


def described(value) -> str:
    if isinstance(value, type):
        return f"the class {value.__module__}.{value.__qualname__}"
    return f"a value of type {type(value).__name__}"


def _load_entry_point(model_name: str, guide_name: str) -> bool:
    """Load the installed entry point `guide_name` of the group, register its class; whether there
    was one. A broken one is a GuideUnavailable naming its distribution."""
    found = {(ep.dist.name if ep.dist else "?", ep.value): ep for ep in _entry_points(guide_name)}
    if not found:
        return False
    if len(found) > 1:
        named = ", ".join(sorted(f"{dist} ({value})" for dist, value in found))
        raise GuideUnavailable(
            f"guide {guide_name!r} is declared by more than one installed distribution: {named}; uninstall one"
        )
    ((dist_name, value), ep) = next(iter(found.items()))
    version = ep.dist.version if ep.dist else None
    who = f"the entry point {guide_name} = {value!r} of the distribution {dist_name} {version or ''}".rstrip()
    try:
        cls = ep.load()
    except Exception as error:  # whatever the package's import raises, it is the package's fault
        first = (str(error).strip() or "-").splitlines()[0][:200]
        raise GuideUnavailable(
            f"{who} fails to load ({type(error).__name__}: {first}); reinstall or fix {dist_name}"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, Guide)):
        raise GuideUnavailable(f"{who} names {described(cls)}, not a subclass of ugvae.guide.Guide; fix {dist_name}")
    if cls.model_name is None:
        raise GuideUnavailable(f"{who} names {cls.__name__}, which declares no `model_name`; fix {dist_name}")
    if cls.model_name != model_name:
        raise GuideUnavailable(
            f"{who} is a guide of model {cls.model_name}, not of {model_name}; set `model` to {cls.model_name}"
        )
    GUIDES[(model_name, guide_name)] = cls
    _sources[(model_name, guide_name)] = GuideSource(ENTRY_POINT_KIND, dist_name, version, value[:MAX_RECORD])
    return True


def _entry_points(name: str):
    return importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=name)
