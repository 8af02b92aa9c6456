"""A table of fields for every settings dataclass, made from its `setting()` declarations.

autodoc shows a class's docstring; for a subclass of `ugvae.settings.Settings` this extension
appends a table of its fields: name, type, default (or what the default means), the values it
may take (bounds and choices, as `check` enforces them), its command-line flag and its help
text. The declarations are the only place a bound is written; the page cannot drift from them.
"""

from __future__ import annotations

import typing
from dataclasses import MISSING, fields

from ugvae.flags import flags_of
from ugvae.run import train_settings
from ugvae.settings import Settings, declaration, default_of, type_hints


def type_text(hint) -> str:
    """`int | None`, `list[float]`, `tuple[int, int, int]`: the annotation as written."""
    if isinstance(hint, type) and not typing.get_args(hint):
        return "None" if hint is type(None) else hint.__name__
    return str(hint).replace("typing.", "").replace("NoneType", "None")


def allowed_text(declared) -> str:
    parts = []
    if declared.choices is not None:
        parts.append("one of " + ", ".join(f"``{c}``" for c in declared.choices))
    for word, bound in (
        ("≥", declared.at_least),
        (">", declared.above),
        ("≤", declared.at_most),
        ("<", declared.below),
    ):
        if bound is not None:
            parts.append(f"{word} {bound:g}" if isinstance(bound, float) else f"{word} {bound}")
    if declared.rule is not None:
        parts.append(f"checked by ``{declared.rule.__name__}``")
    return ", ".join(parts) or "-"


def default_text(f) -> str:
    declared = declaration(f)
    if declared.default_is:
        return declared.default_is
    default = default_of(f)
    return "required" if default is MISSING else f"``{default!r}``"


def cell(text: str) -> str:
    return " ".join(str(text).split()) or "-"


def flag_text(settings_type, f) -> str:
    # `train`'s flags are the fields of its settings that name a --help section; x_shape, for
    # one, is the data's and no flag. Every other command has a flag for each field.
    if settings_type in train_settings() and declaration(f).section is None:
        return "-"
    return ", ".join(f"``{flag}``" for flag in flags_of(f))


def field_table(settings_type) -> list[str]:
    """reST lines of a list-table of the fields of `settings_type`."""
    hints = type_hints(settings_type)
    lines = [
        ".. list-table:: Fields (checked when the object is made; a bad value raises ConfigError naming it)",
        "   :header-rows: 1",
        "   :widths: 16 14 16 16 14 24",
        "",
        "   * - field",
        "     - type",
        "     - default",
        "     - allowed",
        "     - flag",
        "     - meaning",
    ]
    for f in fields(settings_type):
        declared = declaration(f)
        row = [
            f"``{f.name}``",
            f"``{type_text(hints[f.name])}``",
            default_text(f),
            allowed_text(declared),
            flag_text(settings_type, f),
            declared.help or "-",
        ]
        lines.append(f"   * - {cell(row[0])}")
        lines.extend(f"     - {cell(value)}" for value in row[1:])
    return lines


def append_field_table(app, what, name, obj, options, lines):
    if what == "class" and isinstance(obj, type) and issubclass(obj, Settings) and obj is not Settings:
        lines.extend(["", *field_table(obj), ""])


def setup(app):
    app.connect("autodoc-process-docstring", append_field_table)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
