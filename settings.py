"""How a command's settings are declared: a dataclass whose fields are made with `setting`.

Each command of this package is a typed function `f(run, settings)` of a trained run and a
settings dataclass, callable from Python. Its fields carry their help text (and, where the flag
is not `--field-name`, their flags) as metadata, so that the command line (experiments/cli.py)
builds each command's flags from the dataclass, and names a field's flag in an error message
that names the field. Nothing here imports argparse.

    @dataclass
    class SampleSettings:
        num_groups: int = setting(4, "groups to draw, one row of the figure each", "--groups")
"""

from __future__ import annotations

from dataclasses import MISSING, field, fields

from .errors import ConfigError


def setting(default=MISSING, help: str = "", *flags: str, **cli):
    """A dataclass field with its help text, its flags (default `--field-name`) and further
    argparse keywords (`metavar`, `choices`, ...) for the command line."""
    metadata = {"help": help, "flags": flags, "cli": cli}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def flag_names(settings_type) -> dict[str, str]:
    """field name -> its long flag, for a settings dataclass."""
    out = {}
    for f in fields(settings_type):
        flags = f.metadata.get("flags") or ()
        longs = [name for name in flags if name.startswith("--")]
        out[f.name] = longs[0] if longs else "--" + f.name.replace("_", "-")
    return out


def check_at_least(settings, **minimums) -> None:
    """A ConfigError naming the first field of `settings` below its minimum; a list field needs
    at least one value, each at or above the minimum; a field that is None is not checked."""
    for name, minimum in minimums.items():
        value = getattr(settings, name)
        if value is None:
            continue
        values = value if isinstance(value, list | tuple) else [value]
        if not values:
            raise ConfigError(f"`{name}` needs at least one value")
        if min(values) < minimum:
            raise ConfigError(f"`{name}` must be >= {minimum}, got {value}")
