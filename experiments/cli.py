"""The `evaluate`, `compare` and `experiment NAME` subcommands of run.py.

Each experiment is a module of this package exposing `add_arguments(parser)` and
`run(args) -> int`; adding one is a module plus a line in EXPERIMENTS.
"""

from __future__ import annotations

import argparse
import importlib

EXPERIMENTS = {
    "interpolation": "experiments.interpolation",
    "structured-batches": "experiments.structured_batches",
    "domain-alignment": "experiments.domain_alignment",
    "group-factors": "experiments.group_factors",
}


def _module(path: str):
    return importlib.import_module(path)


def _delegate(path: str):
    return lambda args: _module(path).run(args)


def add_subcommands(sub):
    p = sub.add_parser("evaluate", help="test ELBO, IWAE log-likelihood and clustering accuracy of a run")
    _module("experiments.evaluate").add_arguments(p)
    p.set_defaults(handler=_delegate("experiments.evaluate"))

    p = sub.add_parser("compare", help="one Markdown/CSV table of several runs")
    _module("experiments.compare").add_arguments(p)
    p.set_defaults(handler=_delegate("experiments.compare"))

    p = sub.add_parser("experiment", help="the paper's experiments on a trained run: " + ", ".join(EXPERIMENTS))
    names = p.add_subparsers(dest="experiment", metavar="NAME", required=True)
    for name, path in EXPERIMENTS.items():
        module = _module(path)
        q = names.add_parser(
            name,
            help=(module.__doc__ or "").strip().split("\n")[0],
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        module.add_arguments(q)
        q.set_defaults(handler=_delegate(path))
