"""One way to declare a setting, and one check of every value.

Every config (ModelConfig, TrainConfig, LaunchConfig) and every command's settings is a frozen
dataclass derived from `Settings` whose fields are made with `setting`. A field declares, once:
its type (the annotation), its default, its bounds or choices, its help text and, where the flag
is not `--field-name`, its flags:

    @dataclass(frozen=True)
    class SampleSettings(Settings):
        num_groups: int | None = setting(None, "groups to draw", at_least=1, at_most=MAX_GROUPS,
                                         default_is="4 from the prior")

`check(config)`, run whenever a Settings is made (also by `dataclasses.replace`), checks every
field against its declaration and then the class's `cross_field_problems`, and raises one
ConfigError that names every problem:

    types     int, float, str, bool, X | None, X | Y, list[X], tuple[X, ...]; an int passes for
              a float, a bool never for a number
    numbers   finite (an int's bit length is read before it could become a float), then
              `at_least`, `above`, `at_most`, `below`
    strings   non-empty, at most MAX_TEXT characters, no NUL; one of `choices` when declared
    lists     at most MAX_ITEMS items, each checked as above; at least one unless the default is []
    rule      a field's own `rule`, such as the parse of a dataset name, once the above hold

Messages name fields in backticks (`group_size`; the command line shows each as its flag) and
show values through `shown`, which never prints an unbounded one. flags.py builds the command
line from the same declarations; nothing here imports argparse.
"""

from __future__ import annotations

import functools
import math
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import NamedTuple

from .errors import ConfigError, UGVAEError

MAX_TEXT = 4096  # characters of a string setting: PATH_MAX, far beyond any name or spec
MAX_ITEMS = 256  # items of a list setting
MAX_SEED = 2**32 - 1  # numpy's legacy generator (seeded by pyro.set_rng_seed) takes no more


class Declaration(NamedTuple):
    """What a field declares besides its type and default (see `setting`)."""

    help: str
    flags: tuple[str, ...] = ()
    at_least: float | None = None
    above: float | None = None
    at_most: float | None = None
    below: float | None = None
    choices: tuple | None = None
    default_is: str | None = None
    command_line_default: object = MISSING
    old_flags: tuple[str, ...] = ()
    section: str | None = None
    metavar: str | None = None
    negatable: bool = True
    rule: Callable | None = None


def setting(default=MISSING, help: str = "", *flags: str, **declared):
    """A dataclass field with its declaration: `help`, `flags` (default `--field-name`) and

    at_least, above, at_most, below   bounds of a number, or of each number of a list
    choices                           the values a string (or each string of a list) may take
    default_is                        what the default means, in words, where its value does not say
    command_line_default              the default of the flag, where it differs from the field's
    old_flags                         spellings of the flag that still work for one release
    section                           the --help section that lists the flag
    metavar                           the flag's placeholder in --help
    negatable                         a bool's flag comes with --no-FLAG (False: the flag alone)
    rule                              a function of the value, once it has its type and bounds,
                                      that raises a UGVAEError saying what is wrong with it
    """
    if "choices" in declared:
        declared["choices"] = tuple(declared["choices"])
    metadata = {"setting": Declaration(help, tuple(flags), **declared)}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def seed_setting(help: str, default: int | None = 0, **declared):
    """A seed: a whole number from 0 to MAX_SEED."""
    return setting(default, help, at_least=0, at_most=MAX_SEED, **declared)


def same_setting(settings_type, name: str, **changes):
    """A field declared as `name` of `settings_type`, with `changes` to its declaration (a help
    text, ...): where two commands take one concept, it is declared once."""
    f = next(f for f in fields(settings_type) if f.name == name)
    metadata = {"setting": declaration(f)._replace(**changes)}
    if f.default_factory is not MISSING:
        return field(default_factory=f.default_factory, metadata=metadata)
    return field(default=f.default, metadata=metadata)


def declaration(f) -> Declaration:
    """The declaration of the dataclass field `f` (a plain field declares nothing but its type)."""
    return f.metadata.get("setting") or Declaration("")


def default_of(f):
    return f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default


@dataclass(frozen=True)
class Settings:
    """Base of every settings dataclass: checked when made, so an instance holds valid values."""

    def __post_init__(self):
        check(self)

    def cross_field_problems(self) -> list[str]:
        """Rules that tie fields together, asked once every field is sound; none by default."""
        return []

    def to_dict(self) -> dict:
        return asdict(self)


def check(config) -> None:
    """One ConfigError naming every field of the dataclass `config` that breaks its declaration,
    or, when every field is sound, every cross-field rule it breaks."""
    problems = field_problems(config)
    if not problems and hasattr(config, "cross_field_problems"):
        problems = list(config.cross_field_problems())
    if problems:
        raise ConfigError("; ".join(problems))


def field_problems(config) -> list[str]:
    hints = type_hints(type(config))
    problems = []
    for f in fields(config):
        problem = value_problem(f.name, getattr(config, f.name), hints[f.name], declaration(f), default_of(f))
        if problem:
            problems.append(problem)
    return problems


@functools.cache
def type_hints(settings_type) -> dict:
    """The annotations of a dataclass as types (read once per class: evaluating them is slow)."""
    return typing.get_type_hints(settings_type)


def value_problem(name: str, value, hint, declared: Declaration, default=MISSING) -> str | None:
    """What is wrong with `value` for a field `name` of type `hint`, or None."""
    if not fits(value, hint):
        return f"`{name}` must be {kind_text(hint)}, got {shown(value)}"
    if isinstance(value, (list, tuple)):
        if not value and default != [] and not _is_tuple(hint):
            return f"`{name}` needs at least one value"
        problems = (scalar_problem(item, declared) for item in value)
        problem = next((p for p in problems if p), None)
        return f"`{name}` values {problem}" if problem else None
    problem = scalar_problem(value, declared)
    if problem:
        return f"`{name}` {problem}"
    if declared.rule is not None and value is not None:
        try:
            declared.rule(value)
        except UGVAEError as e:
            return str(e)
    return None


def scalar_problem(value, declared: Declaration) -> str | None:
    if isinstance(value, str):
        if not value:
            return "must not be empty"
        if len(value) > MAX_TEXT:
            return f"must be at most {MAX_TEXT} characters, got {len(value)}"
        if "\0" in value:
            return "must not hold a NUL character"
        if declared.choices is not None and value not in declared.choices:
            return f"must be one of {', '.join(map(str, declared.choices))}, got {shown(value)}"
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    # float() of an int above 2**1024 overflows; every comparison below is exact on ints.
    if (isinstance(value, float) and not math.isfinite(value)) or (
        isinstance(value, int) and value.bit_length() > 1023
    ):
        return f"must be a finite number, got {shown(value)}"
    lo, hi = declared.at_least, declared.at_most
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        if lo is not None and hi is not None:
            return f"must be between {lo} and {hi}, got {shown(value)}"
        return f"must be >= {lo}, got {shown(value)}" if lo is not None else f"must be at most {hi}, got {shown(value)}"
    if (declared.above is not None and not value > declared.above) or (
        declared.below is not None and not value < declared.below
    ):
        limits = [f"> {declared.above}" if declared.above is not None else None]
        limits.append(f"< {declared.below}" if declared.below is not None else None)
        return f"must be {' and '.join(w for w in limits if w)}, got {shown(value)}"
    return None


def fits(value, hint) -> bool:
    """Whether `value` is of the annotated type `hint` (see the module docstring)."""
    if hint is type(None):
        return value is None
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(fits(value, member) for member in typing.get_args(hint))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)) or len(value) > MAX_ITEMS:
            return False
        if origin is tuple and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(fits(v, a) for v, a in zip(value, args))
        return all(fits(v, args[0]) for v in value)
    raise TypeError(f"a setting cannot be of type {hint}; use int, float, str, bool, lists and tuples of them")


def kind_text(hint) -> str:
    """`hint` in words: 'a whole number or null', 'a list of numbers', ..."""
    words = {bool: "true or false", int: "a whole number", float: "a number", str: "a string", type(None): "null"}
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return " or ".join(kind_text(member) for member in typing.get_args(hint))
    if hint in words:
        return words[hint]
    args = typing.get_args(hint)
    if _is_tuple(hint) and args[-1] is not Ellipsis:
        return f"{len(args)} values, each {kind_text(args[0])}"
    return f"a list of at most {MAX_ITEMS} values, each {kind_text(args[0])}"


def _is_tuple(hint) -> bool:
    return typing.get_origin(hint) is tuple


def shown(value) -> str:
    """`value` for a message: short, and never the str() of something unbounded (a 10**5-digit int
    cannot even be printed, a deeply nested list would recurse)."""
    if value is None or isinstance(value, (bool, float)):
        return repr(value)
    if isinstance(value, int):
        return repr(value) if value.bit_length() <= 64 else f"a whole number of {value.bit_length()} bits"
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else f"{value[:40]!r}... ({len(value)} characters)"
    scalars = (bool, int, float, str, type(None))
    if isinstance(value, (list, tuple)) and len(value) <= 8 and all(isinstance(v, scalars) for v in value):
        inner = ", ".join(shown(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    n = len(value) if isinstance(value, (list, tuple, dict)) else None
    size = "" if n is None else f" of {n} item" + ("s" if n != 1 else "")
    return f"a {type(value).__name__}{size}"


def from_json(settings_type, values, what: str, ignored: tuple[str, ...] = ()):
    """`settings_type` made from `values`, a JSON object of its fields (config.json); a key this
    version does not know is refused by name, since the run would not be the one the file describes."""
    if not isinstance(values, dict):
        raise ConfigError(f"{what} must be a JSON object, got {type(values).__name__}")
    known = {f.name for f in fields(settings_type)}
    unknown = sorted(str(k)[:40] for k in values if k not in known and k not in ignored)
    if unknown:
        raise ConfigError(f"{what} has unknown fields {', '.join(f'`{k}`' for k in unknown[:10])}; remove them")
    return settings_type(**{k: v for k, v in values.items() if k in known})
