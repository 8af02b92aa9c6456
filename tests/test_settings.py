"""settings.py: one declaration per field, one `check` of every value (types, bounds, finiteness,
choices, strings, lists), every problem in one ConfigError, and every settings class of the package
declared with it."""

import dataclasses
import importlib
import inspect
from dataclasses import dataclass

import pytest

from ugvae.errors import ConfigError
from ugvae.experiments import cli
from ugvae.model import ModelConfig
from ugvae.settings import MAX_ITEMS, MAX_SEED, Settings, check, seed_setting, setting, shown
from ugvae.trained.config import LaunchConfig, Levers, RunLocation, TrainConfig


@dataclass(frozen=True)
class Example(Settings):
    count: int = setting(3, "a count", at_least=1, at_most=10)
    rate: float = setting(0.5, "a rate", above=0, below=1)
    name: str = setting("a", "a name", choices=("a", "b"))
    path: str | None = setting(None, "a path", default_is="none")
    flag: bool = setting(False, "a switch")
    sizes: list[int] = setting([2], "sizes", at_least=2)
    extra: list[str] = setting([], "may stay empty")
    seed: int = seed_setting("a seed")

    def cross_field_problems(self):
        return ["`count` must not exceed 5 with `flag`"] if self.flag and self.count > 5 else []


@pytest.mark.parametrize(
    "values, words",
    [
        ({"count": True}, "`count` must be a whole number, got True"),
        ({"rate": True}, "`rate` must be a number, got True"),
        ({"count": 2.0}, "`count` must be a whole number, got 2.0"),
        ({"count": 0}, "`count` must be between 1 and 10, got 0"),
        ({"rate": 1}, "`rate` must be > 0 and < 1, got 1"),
        ({"rate": float("nan")}, "`rate` must be a finite number, got nan"),
        ({"rate": -float("inf")}, "`rate` must be a finite number, got -inf"),
        ({"rate": 10**400}, "`rate` must be a finite number, got a whole number of 1329 bits"),
        ({"name": "c"}, "`name` must be one of a, b, got 'c'"),
        ({"path": ""}, "`path` must not be empty"),
        ({"path": "a\0b"}, "`path` must not hold a NUL character"),
        ({"path": "x" * 5000}, "`path` must be at most 4096 characters, got 5000"),
        ({"path": 3}, "`path` must be a string or null, got 3"),
        ({"flag": 1}, "`flag` must be true or false, got 1"),
        ({"sizes": []}, "`sizes` needs at least one value"),
        ({"sizes": [2, 1]}, "`sizes` values must be >= 2, got 1"),
        (
            {"sizes": [2] * (MAX_ITEMS + 1)},
            f"`sizes` must be a list of at most {MAX_ITEMS} values, each a whole number, got a list of 257 items",
        ),
        ({"seed": -1}, f"`seed` must be between 0 and {MAX_SEED}, got -1"),
        ({"seed": 2**32}, f"`seed` must be between 0 and {MAX_SEED}, got 4294967296"),
    ],
    ids=lambda v: str(v)[:40],
)
def test_a_value_against_its_declaration(values, words):
    with pytest.raises(ConfigError) as error:
        Example(**values)
    assert str(error.value) == words


def test_an_int_passes_for_a_float_and_an_empty_list_where_the_default_is_one():
    assert Example(rate=0.25, extra=[]).rate == 0.25 and Example(count=10, sizes=(2, 3)).count == 10


def test_every_field_problem_is_named_in_one_error_and_cross_field_rules_wait_for_sound_fields():
    with pytest.raises(ConfigError) as error:
        Example(count=0, rate=2.0, name="z", flag=True)
    assert str(error.value).count("`") == 6 and "exceed" not in str(error.value)
    with pytest.raises(ConfigError, match="`count` must not exceed 5 with `flag`"):
        Example(count=7, flag=True)


def test_replace_checks_again_and_settings_are_frozen():
    with pytest.raises(ConfigError, match="`epochs`"):
        dataclasses.replace(TrainConfig(), epochs=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().epochs = 3


def test_shown_never_prints_an_unbounded_value():
    nested = []
    for _ in range(100_000):  # repr() of this recurses past the interpreter's limit
        nested = [nested]
    assert shown(10**100_000) == "a whole number of 332193 bits"  # str() of it raises ValueError
    assert shown(nested) == "a list of 1 item" and shown("x" * 10**6).endswith("(1000000 characters)")
    with pytest.raises(
        ConfigError, match="`sizes` must be a list of at most 256 values, each a whole number, got a list of 1 item"
    ):
        Example(sizes=nested)


def test_levers_are_declared_once_and_config_json_stays_flat():
    lever_names = [f.name for f in dataclasses.fields(Levers)]
    train = TrainConfig(local_kl_weight=0.5)
    assert set(lever_names) <= set(train.to_dict()) and all(not isinstance(v, dict) for v in train.to_dict().values())
    assert train.levers == Levers(local_kl_weight=0.5) and TrainConfig.from_dict(train.to_dict()) == train


def settings_classes():
    """Every settings dataclass of the package: the configs and each command's settings."""
    found = {ModelConfig, TrainConfig, LaunchConfig, Levers, RunLocation}
    for command in [*cli.COMMANDS.values(), *cli.EXPERIMENTS.values()]:
        module = importlib.import_module(command.module, "ugvae.experiments")
        found.add(getattr(module, command.settings))
    for module in ("ugvae.trained.inference", "ugvae.trained.evaluation"):
        found.update(c for _, c in inspect.getmembers(importlib.import_module(module), inspect.isclass))
    return sorted((c for c in found if issubclass(c, Settings) and c is not Settings), key=lambda c: c.__name__)


@pytest.mark.parametrize("settings_type", settings_classes(), ids=lambda c: c.__name__)
def test_every_settings_class_declares_each_field_and_its_defaults_pass_its_own_check(settings_type):
    assert dataclasses.is_dataclass(settings_type) and settings_type.__dataclass_params__.frozen
    for f in dataclasses.fields(settings_type):
        assert "setting" in f.metadata, f"{settings_type.__name__}.{f.name} is not declared with setting()"
    if settings_type.__name__ != "EmbedSettings":  # needs a folder or a split
        check(settings_type())
