"""The `evaluate`, `compare`, `embed`, `sample` and `experiment NAME` subcommands of run.py.

Each command is a module of this package exposing `add_arguments(parser)` and
`run(args) -> int`; adding one is a module plus a line in COMMANDS or EXPERIMENTS.

Nothing here imports those modules until their command is parsed or its help is shown: they
bring torch, pyro, matplotlib or scikit-learn, and `run.py --help` needs only the names and
one-line summaries below (a test checks each summary against its module's docstring). Every command holds
the lock of each run it may write into (`train.lock`) while it runs.
"""

from __future__ import annotations

import contextlib
import importlib
import os

# name -> (module, relative to this package; one-line summary)
COMMANDS = {
    "evaluate": (".evaluate", "test ELBO, IWAE log-likelihood and clustering accuracy of a run"),
    "compare": (".compare", "one Markdown/CSV table of several runs"),
    "embed": (".embed", "q(beta | X) and q(z | x) of a run's data or of your own folder of image sets"),
    "sample": (".sample", "new groups of images, each sharing one beta (from the prior or a folder)"),
}
EXPERIMENTS = {
    "interpolation": (
        ".interpolation",
        "Global/local interpolation grids: what beta and z each control (section 4.1, fig. 3; fig. 4 for ML-VAE).",
    ),
    "structured-batches": (
        ".structured_batches",
        "Structured batches: does q(beta | X) tell the rule behind a group? (section 4.3, table 1, fig. 7)",
    ),
    "domain-alignment": (
        ".domain_alignment",
        "Unsupervised domain alignment (section 4.2, figs. 5-6): does beta find the domain of a group?",
    ),
    "group-factors": (
        ".group_factors",
        "Group factors: does beta recover, and render, what the members of a group share?",
    ),
    "set-generation": (
        ".set_generation",
        "Sets in, sets out: what a set's beta generates, against a set's codes, its members and new real sets.",
    ),
}


def _module(path: str):
    return importlib.import_module(path, __package__)


def runs_written(args) -> list[str]:
    """The run directories a subcommand writes into: --run, the run of --checkpoint, compare's runs."""
    if getattr(args, "run", None):
        return [args.run]
    if getattr(args, "checkpoint", None):
        return [os.path.dirname(os.path.dirname(os.path.abspath(args.checkpoint)))]
    return list(getattr(args, "runs", None) or [])


def _builder(path: str):
    def handler(args):
        from ..train.lock import run_lock  # train/ brings torch: only once a command runs

        with contextlib.ExitStack() as locks:
            for run_dir in runs_written(args):
                locks.enter_context(run_lock(run_dir))
            return _module(path).run(args)

    def build(parser):
        _module(path).add_arguments(parser)
        parser.set_defaults(handler=handler)

    return build


def add_subcommands(sub):
    """Add the commands to `sub`, whose parser_class builds each parser's arguments on first use
    from the `builder` keyword (run.LazyParser)."""
    for name, (path, summary) in COMMANDS.items():
        sub.add_parser(name, help=summary, description=summary, builder=_builder(path))

    p = sub.add_parser("experiment", help="the paper's experiments on a trained run: " + ", ".join(EXPERIMENTS))
    names = p.add_subparsers(dest="experiment", metavar="NAME", required=True, parser_class=type(p))
    for name, (path, summary) in EXPERIMENTS.items():
        names.add_parser(name, help=summary, description=summary, builder=_builder(path))
