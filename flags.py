"""How settings become command-line flags, and the parser every command uses.

Each field of a settings dataclass (settings.py) becomes one flag, made from its declaration:
`--field-name` or its declared flags, the type of its annotation (`--x/--no-x` for a bool,
several values for a list, the first type of `A | B` that reads the text), its choices, and a
help line that ends with its default and what that default means. Old spellings of a renamed
flag still work for one release and log one deprecation line.

Every generated flag's argparse default is SUPPRESS, so the parsed namespace holds exactly the
flags the command line gave, a flag given with its default value included (a resumed run
refuses a given flag that would change it); `given_values` reads them, and the dataclass itself
supplies every other value, so each default is written once, in its field.

    CliParser     one-line errors, a did-you-mean for a mistyped flag, no abbreviated flags
    LazyParser    a subcommand whose flags are built on first use, so `--help` stays quick
    add_settings  the flags of a settings dataclass
    given_values  field -> value of the flags a command line gave (and command-line defaults)
    GLOSSARY      the flags every command uses in one sense, shown in the top-level --help
    FlagNames     the console's formatter: a message's `field` shown as the flag that sets it

Only this module, run.py and experiments/cli.py know argparse.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import logging
import operator
import re
import types
import typing
from dataclasses import MISSING, fields
from typing import NamedTuple

from .settings import declaration, default_of, type_hints

logger = logging.getLogger(__name__)


class Term(NamedTuple):
    """A word of the glossary: its flags and placeholder in every command, and what it means."""

    flags: tuple[str, ...]
    metavar: str
    meaning: str


# field -> the one sense of its flag in every command that has it (tests/test_cli_flags.py reads
# every parser); a field of these names takes the placeholder given here
GLOSSARY = {
    "groups": Term(("--groups",), "SPEC", "how `train` forms groups: random, labels:ALPHA or clusters:ALPHA"),
    "num_groups": Term(("--num-groups",), "N", "how many groups a command draws"),
    "group_size": Term(("--group-size", "-B"), "B", "images per group"),
    "baseline_runs": Term(("--baseline-runs",), "RUN_DIR", "runs of other models, compared with --run"),
    "seed": Term(("--seed",), "N", "a seed, 0 to 2**32 - 1"),
}


def glossary_text() -> str:
    shown = {", ".join(sorted(t.flags, key=len)) + f" {t.metavar}": t.meaning for t in GLOSSARY.values()}
    width = max(map(len, shown))
    return "words every command uses in one sense:\n" + "\n".join(
        f"  {flag:<{width}}  {meaning}" for flag, meaning in shown.items()
    )


class CliParser(argparse.ArgumentParser):
    """A parser whose errors are one line, like every other bad input (usage is in --help), and
    that suggests the closest flag for a mistyped one.

    Abbreviated options are off: `--e 3` would otherwise mean `--epochs 3` today and an
    "ambiguous option" error once another option starts with `--e`.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)  # the glossary's lines
        super().__init__(*args, **kwargs)

    def error(self, message):
        unknown = re.match(r"unrecognized arguments: (\S+)", message)
        if unknown:
            flag = unknown[1].split("=")[0]
            close = difflib.get_close_matches(flag, self.option_strings(), n=1)
            if close:
                message += f" (did you mean {close[0]}?)"
        self.exit(2, f"error: {message}; see `{self.prog} --help`\n")

    def option_strings(self) -> list[str]:
        """Every flag of this parser and of the subcommand parsers built so far (the one that ran)."""
        options = []
        for action in self._actions:
            options += action.option_strings
            if isinstance(action, argparse._SubParsersAction):
                for parser in action.choices.values():
                    if getattr(parser, "_builder", "built") is None:  # LazyParser: built when parsed
                        options += parser.option_strings()
        return options


class LazyParser(CliParser):
    """A subcommand parser whose arguments are added on first use (parsing or help).

    Building a subcommand's arguments imports its module (torch, pyro, ...); `--help` only needs
    the names, so each subcommand pays for its imports only when it is called.
    """

    def __init__(self, *args, builder=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._builder = builder

    def _build(self):
        builder, self._builder = self._builder, None
        if builder is not None:
            builder(self)

    def parse_known_args(self, args=None, namespace=None):
        self._build()
        return super().parse_known_args(args, namespace)

    def format_help(self):
        self._build()
        return super().format_help()

    def format_usage(self):
        self._build()
        return super().format_usage()


class IgnoredFlag(argparse.Action):
    """A flag that a command took but never used, still accepted for one more release, with one notice."""

    def __call__(self, parser, namespace, values, option_string=None):
        logger.warning("%s does nothing here, is deprecated and goes in the next release; drop it", option_string)


class RenamedFlag(argparse.Action):
    """An old spelling of a flag, read as the new one for one more release, with one notice."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        logger.warning("%s is deprecated and goes in the next release; write %s", option_string, self.new)
        setattr(namespace, self.dest, values)


def add_quiet(parser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars; notices are still shown")


def flags_of(f) -> tuple[str, ...]:
    """The flags of the field `f`: its declared ones, or `--field-name`."""
    return declaration(f).flags or ("--" + f.name.replace("_", "-"),)


def add_settings(parser, settings_type, skip=(), section: str | None = None) -> dict[str, str]:
    """A flag in `parser` (or an argument group) per field of `settings_type` but those in `skip`
    (with `section`: only the fields declared in that --help section); returns field -> long flag."""
    names = {}
    hints = type_hints(settings_type)
    for f in fields(settings_type):
        if f.name in skip or (section is not None and declaration(f).section != section):
            continue
        declared, flags = declaration(f), flags_of(f)
        kind = _without_none(hints[f.name])
        kwargs = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_line(f)}
        metavar = declared.metavar or (GLOSSARY[f.name].metavar if f.name in GLOSSARY else None)
        if metavar:
            kwargs["metavar"] = metavar
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction if declared.negatable else "store_true"
        else:
            item = typing.get_args(kind)[0] if typing.get_origin(kind) is list else None
            kwargs.update(type=reader(item or kind), choices=declared.choices)
            if item is not None:
                kwargs["nargs"] = "+"
        parser.add_argument(*flags, **kwargs)
        if declared.old_flags:
            if kind is bool:
                raise TypeError(f"`{f.name}`: a renamed flag must take a value")
            old = {**kwargs, "help": argparse.SUPPRESS, "metavar": None}
            parser.add_argument(*declared.old_flags, action=RenamedFlag, new=flags[0], **old)
        names[f.name] = next(name for name in flags if name.startswith("--"))
    return names


def given_values(namespace, settings_type) -> dict:
    """The fields of `settings_type` that the command line set (from a namespace parsed by flags of
    `add_settings`), over the defaults the command line has of its own (`command_line_default`)."""
    values = {}
    for f in fields(settings_type):
        default = declaration(f).command_line_default
        if hasattr(namespace, f.name):
            values[f.name] = getattr(namespace, f.name)
        elif default is not MISSING:
            values[f.name] = default
    return values


def as_flags(message: str, names: dict[str, str]) -> str:
    """A library message with each `field` it names shown as the flag that sets it."""
    return re.sub(r"`(\w+)`", lambda m: names.get(m[1], m[1]), message)


class FlagNames(logging.Formatter):
    """The console's formatter: each field a record names is shown as its flag."""

    def __init__(self, names: dict[str, str]):
        super().__init__()
        self.names = names

    def format(self, record):
        return as_flags(super().format(record), self.names)


def help_line(f) -> str:
    """The declared help of field `f`, with its default in words: the default's meaning where it
    declares one (`default_is`), else the value."""
    declared = declaration(f)
    default = declared.command_line_default
    default = default_of(f) if default is MISSING else default
    if declared.default_is:
        shown = declared.default_is
    elif isinstance(default, bool):
        if not declared.negatable:
            return declared.help.replace("%", "%%")  # a switch: off unless given
        shown = "on" if default else "off"
    elif default is None:
        raise TypeError(f"`{f.name}` defaults to None: declare what that means with `default_is`")
    elif isinstance(default, list):
        shown = " ".join(map(str, default)) or "none"
    else:
        shown = str(default)
    return f"{declared.help} (default: {shown})".replace("%", "%%")


def reader(kind):
    """The function that reads a flag's text as `kind`; for `A | B`, the first that reads it."""
    members = _members(kind)
    if not members:
        return kind

    def read(text: str):
        for member in members:
            try:
                return member(text)
            except ValueError:
                continue
        raise ValueError(text)

    read.__name__ = " or ".join(m.__name__ for m in members)  # argparse's "invalid ... value"
    return read


def _members(hint) -> tuple:
    """The types of a union `A | B`; () for any other annotation."""
    is_union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    return typing.get_args(hint) if is_union else ()


def _without_none(hint):
    """`int | None` -> int; `float | str` stays."""
    members = [m for m in _members(hint) if m is not type(None)]
    return functools.reduce(operator.or_, members) if members else hint
