"""Guides by name, by class and by entry point (guide/registry.py): where each comes from, and that
an entry point is read only for a name nobody else provides, and refused in one line when broken."""

import importlib.metadata
import sys

import pytest
from pyro.infer.autoguide import AutoNormal

from tests.helpers import install_distribution
from ugvae.errors import ConfigError, GuideUnavailable, UnknownName
from ugvae.guide import GUIDES, SHIPPED, Guide, GuideSource, UGVAEGuide, VAEGuide, guide_class, guide_source, register
from ugvae.guide.registry import default_name, registered_name
from ugvae.model import MODELS

MINE = "from ugvae.guide import UGVAEGuide\n\nclass MineGuide(UGVAEGuide):\n    pass\n"


class MeanPoolGuide(UGVAEGuide):
    pass


@pytest.fixture
def site(tmp_path, monkeypatch, guides_restored):
    """A folder on sys.path that distributions are installed into, as pip would."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for module in [m for m in sys.modules if m.startswith("planted_")]:
        del sys.modules[module]


def test_every_shipped_guide_names_the_model_it_is_registered_for():
    assert {m for m, _ in SHIPPED} == set(MODELS)
    for (model, name), cls in SHIPPED.items():
        assert cls.model_name == model, name
        assert guide_source(model, name) == GuideSource("shipped")
    with pytest.raises(TypeError):
        SHIPPED[("ugvae", "mine")] = MeanPoolGuide  # fixed at release: nothing registers into it


def test_a_registered_class_is_found_by_name_and_recorded_as_registered_at_run_time(guides_restored):
    assert register(MeanPoolGuide) == "mean-pool"  # the class's name in the shipped names' style
    assert guide_class("ugvae", "mean-pool") is MeanPoolGuide
    assert guide_source("ugvae", "mean-pool").to_dict() == {
        "kind": "registered at run time",
        "defined_in": f"{__name__}:MeanPoolGuide",
    }
    assert register(MeanPoolGuide, model="ugvae", name="mine") == "mine"
    # `fit(guide=Class)` takes the name it is registered by, and registers a new class under its own.
    assert registered_name(MeanPoolGuide, "ugvae") in ("mean-pool", "mine")

    class SetTransformerGuide(UGVAEGuide):
        pass

    assert registered_name(SetTransformerGuide, "ugvae") == "set-transformer"
    assert GUIDES[("ugvae", "set-transformer")] is SetTransformerGuide
    assert registered_name("structured", "ugvae") == "structured" and registered_name(None, "vae") is None


def test_registering_again_replaces_a_run_time_guide_but_never_a_shipped_one(guides_restored):
    register(MeanPoolGuide, name="pool")

    class Redefined(UGVAEGuide):  # a notebook cell run again
        pass

    register(Redefined, name="pool")
    assert guide_class("ugvae", "pool") is Redefined
    with pytest.raises(ConfigError, match="'structured' of model ugvae is the shipped UGVAEGuide's: register"):
        register(MeanPoolGuide, name="structured")
    assert guide_class("ugvae", "structured") is UGVAEGuide


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: register(VAEGuide, model="ugvae", name="v"), "VAEGuide is a guide of model vae, not of ugvae"),
        (lambda: register(MeanPoolGuide, name="no spaces"), "is no guide name"),
        (lambda: register(MeanPoolGuide, model="vea"), "model 'vea' is unknown"),
        (lambda: register(AutoNormal), "must be a subclass of ugvae.guide.Guide"),
        (
            lambda: registered_name(AutoNormal, "ugvae"),
            "AutoGuide .* is not amortised.*'Writing a guide'.*'Pyro AutoGuides'",
        ),
        (
            lambda: registered_name(lambda model: AutoNormal(model), "ugvae"),
            "got a value of type function; a Pyro AutoGuide",
        ),
        (lambda: registered_name(3, "ugvae"), "got a value of type int; see guide/base.py"),
    ],
    ids=["other model", "bad name", "unknown model", "autoguide", "autoguide to fit", "factory", "number"],
)
def test_a_class_that_cannot_be_a_guide_of_that_model_is_one_line(call, message, guides_restored):
    with pytest.raises(ConfigError, match=message) as caught:
        call()
    assert "\n" not in str(caught.value)


def test_an_instance_is_refused_with_the_fix(tiny_cfg):
    with pytest.raises(ConfigError, match="must be the class MeanPoolGuide, not an instance"):
        registered_name(MeanPoolGuide(tiny_cfg), "ugvae")


def test_an_installed_entry_point_is_loaded_by_name_and_recorded_with_its_distribution(site):
    install_distribution(site, "mine-guides", "0.3", {"mine": "planted_mine:MineGuide"}, {"planted_mine": MINE})
    assert "planted_mine" not in sys.modules  # nothing is loaded before a name asks for it
    cls = guide_class("ugvae", "mine")
    assert cls.__name__ == "MineGuide" and cls.__module__ == "planted_mine"
    assert guide_source("ugvae", "mine") == GuideSource("entry point", "mine-guides", "0.3", "planted_mine:MineGuide")
    with pytest.raises(ConfigError, match="provided by the distribution mine-guides: register MeanPoolGuide under"):
        register(MeanPoolGuide, name="mine")


def test_entry_points_are_not_read_for_a_shipped_or_registered_name(monkeypatch, guides_restored):
    def unread(**kwargs):
        raise AssertionError("installed entry points were read")

    monkeypatch.setattr(importlib.metadata, "entry_points", unread)
    register(MeanPoolGuide, name="pool")
    for model, name in [*SHIPPED, ("ugvae", "pool")]:
        guide_class(model, name)
        guide_source(model, name)


@pytest.mark.parametrize(
    "target, source, message",
    [
        ("planted_gone:MineGuide", None, "ModuleNotFoundError: No module named 'planted_gone'"),
        ("planted_raises:MineGuide", "raise RuntimeError('no GPU driver')\n", "RuntimeError: no GPU driver"),
        (
            "planted_other:MineGuide",
            "MineGuide = 3\n",
            "names a value of type int, not a subclass of ugvae.guide.Guide",
        ),
        (
            "planted_bare:MineGuide",
            "from ugvae.guide import Guide\nclass MineGuide(Guide):\n    pass\n",
            "MineGuide, which declares no `model_name`",
        ),
        (
            "planted_vae:MineGuide",
            "from ugvae.guide import VAEGuide\nclass MineGuide(VAEGuide):\n    pass\n",
            "is a guide of model vae, not of ugvae; set `model` to vae",
        ),
    ],
    ids=["missing module", "import fails", "not a class", "no model", "another model"],
)
def test_a_broken_entry_point_is_one_line_naming_its_distribution(site, target, source, message):
    module = target.split(":")[0]
    install_distribution(site, "broken-guides", "1.0", {"mine": target}, {module: source} if source else {})
    with pytest.raises(GuideUnavailable, match=message) as caught:
        guide_class("ugvae", "mine")
    text = str(caught.value)
    assert "\n" not in text and "the distribution broken-guides 1.0" in text and "Traceback" not in text
    assert ("ugvae", "mine") not in GUIDES


def test_two_distributions_declaring_one_name_are_named_both(site):
    for dist in ("first-guides", "second-guides"):
        module = f"planted_{dist.split('-')[0]}"
        install_distribution(site, dist, "1.0", {"mine": f"{module}:MineGuide"}, {module: MINE})
    with pytest.raises(GuideUnavailable, match="more than one installed distribution: first-guides .*second-guides"):
        guide_class("ugvae", "mine")


def test_an_unknown_name_lists_the_choices_and_the_installed_entry_points(site):
    install_distribution(site, "mine-guides", "0.3", {"mine": "planted_mine:MineGuide"}, {"planted_mine": MINE})
    with pytest.raises(UnknownName, match="'exact' does not exist for model 'ugvae'; choose one of") as caught:
        guide_class("ugvae", "exact")
    assert "entry-point group ugvae.guides; installed entry points: mine" in str(caught.value)
    assert "planted_mine" not in sys.modules


@pytest.mark.parametrize(
    "cls, name", [(MeanPoolGuide, "mean-pool"), (UGVAEGuide, "ugvae"), (Guide, "guide"), (VAEGuide, "vae")]
)
def test_default_names_follow_the_shipped_style(cls, name):
    assert default_name(cls) == name
