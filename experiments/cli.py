"""The `evaluate`, `compare`, `embed`, `sample` and `experiment NAME` commands of the command line.

Each command is a typed function of this package, `f(run, settings)` with a settings dataclass
(settings.py); this module turns the dataclass's fields into flags (flags.py), loads the run
once (`--run RUN_DIR`, `--device`), calls the function under the run's lock with torch's
`--threads` (trained/threads.py) and prints its `report`. Adding a command is a module plus a
line in COMMANDS or EXPERIMENTS.

Nothing here imports those modules until their command is parsed or its help is shown: they
bring torch, pyro, matplotlib or scikit-learn, and `--help` needs only the names and one-line
summaries below (a test checks each summary against its module's docstring).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
from dataclasses import dataclass

from ..flags import IgnoredFlag, add_quiet, add_settings, given_values


@dataclass(frozen=True)
class Command:
    module: str  # relative to this package
    function: str  # f(run, settings)
    settings: str  # the settings dataclass
    summary: str
    # where the run comes from: "run" (--run RUN_DIR), "runs" (RUN_DIR...), or "run-or-checkpoint"
    runs: str = "run"
    run_help: str = "a trained run"  # the help of --run
    computes: bool = True  # whether it runs a model, and so takes --device


COMMANDS = {
    "evaluate": Command(
        ".commands.evaluate",
        "evaluate_run",
        "EvaluateSettings",
        "test ELBO, IWAE log-likelihood and clustering accuracy of a run",
        runs="run-or-checkpoint",
    ),
    "compare": Command(
        ".commands.compare",
        "compare",
        "CompareSettings",
        "one Markdown/CSV table of several runs",
        "runs",
        "trained runs, one table row each",
    ),
    "embed": Command(
        ".commands.embed",
        "embed_run",
        "EmbedSettings",
        "q(beta | X) and q(z | x) of a run's data or of your own image sets",
    ),
    "sample": Command(
        ".commands.sample",
        "sample_run",
        "SampleSettings",
        "new groups of images, each sharing one beta (from the prior or a set of images)",
    ),
    "upgrade": Command(
        ".commands.upgrade",
        "upgrade_runs",
        "UpgradeSettings",
        "convert a run's checkpoints of the older, pickled format (step-N.pt) to the current one, once",
        "runs",
        "runs whose step-N.pt checkpoints to convert",
        computes=False,
    ),
}
EXPERIMENTS = {
    "interpolation": Command(
        ".interpolation",
        "interpolation",
        "InterpolationSettings",
        "Global/local interpolation grids: what beta and z each control (section 4.1, fig. 3; fig. 4 for ML-VAE).",
        run_help="a trained UG-VAE or ML-VAE run",
    ),
    "structured-batches": Command(
        ".structured_batches",
        "structured_batches",
        "StructuredBatchesSettings",
        "Structured batches: does q(beta | X) tell the rule behind a group? (section 4.3, table 1, fig. 7)",
        run_help="a trained run directory",
    ),
    "domain-alignment": Command(
        ".domain_alignment",
        "domain_alignment",
        "DomainAlignmentSettings",
        "Unsupervised domain alignment (section 4.2, figs. 5-6): does beta find the domain of a group?",
        run_help="a run trained on a mixture A+B",
    ),
    "group-factors": Command(
        ".group_factors",
        "group_factors",
        "GroupFactorsSettings",
        "Group factors: does beta recover, and render, what the members of a group share?",
        run_help="a run trained on grouped:BASE",
    ),
    "set-generation": Command(
        ".set_generation",
        "set_generation",
        "SetGenerationSettings",
        "Sets in, sets out: what a set's beta generates, against a set's codes, its members and new real sets.",
        run_help="a trained run (UG-VAE, ML-VAE, VAE or GMVAE) on grouped:BASE, labelled data or folder:PATH",
    ),
}


def _module(command: Command):
    return importlib.import_module(command.module, __package__)


def settings_from(args, settings_type):
    return settings_type(**given_values(args, settings_type))


def _builder(command: Command):
    def build(parser):
        from ..trained.config import DEVICE_NAMES, CommandThreads

        module = _module(command)
        if command.runs == "runs":
            parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help=command.run_help)
        elif command.runs == "run-or-checkpoint":
            which = parser.add_mutually_exclusive_group(required=True)
            which.add_argument("--run", metavar="RUN_DIR", help="a trained run: its newest good checkpoint")
            which.add_argument(
                "--checkpoint", metavar="PATH", help="a checkpoint of a run, RUN/checkpoints/step-N.safetensors"
            )
        else:
            parser.add_argument("--run", required=True, metavar="RUN_DIR", help=command.run_help)
        settings_type = getattr(module, command.settings)
        flag_names = add_settings(
            parser, settings_type, skip=("checkpoint",) if command.runs == "run-or-checkpoint" else ()
        )
        if command.computes:
            parser.add_argument(
                "--device", default="auto", help=f"where the run's model runs: {DEVICE_NAMES} (default: auto)"
            )
            flag_names.update(add_settings(parser, CommandThreads))
        else:  # 0.2's commands all took it; a script that passes it keeps working for a release
            parser.add_argument("--device", action=IgnoredFlag, dest="ignored_device", help=argparse.SUPPRESS)
        add_quiet(parser)
        flag_names.update(run="--run", device="--device", run_dir="RUN_DIR" if command.runs == "runs" else "--run")
        parser.set_defaults(handler=_handler(command), flag_names=flag_names)

    return build


def _handler(command: Command):
    def handler(args) -> int:
        from ..trained import Run
        from ..trained.config import CommandThreads
        from ..trained.threads import using_threads

        module = _module(command)
        settings = settings_from(args, getattr(module, command.settings))
        function = getattr(module, command.function)
        device = getattr(args, "device", "cpu")  # a command that computes nothing takes no --device
        threads = settings_from(args, CommandThreads).threads if command.computes else None
        with using_threads(threads):
            if command.runs == "runs":
                result = function(args.runs, settings, device)
            else:
                run_dir = args.run or module.run_dir_of(args.checkpoint)
                run = Run.open(run_dir, device)
                # Outputs sent elsewhere (`out`) leave the run itself untouched: no lock, read-only runs work.
                writes_into_run = getattr(settings, "out", None) is None
                elsewhere = "out" if hasattr(settings, "out") else None  # what a read-only run's refusal suggests
                with run.lock(elsewhere=elsewhere) if writes_into_run else contextlib.nullcontext():
                    result = function(run, settings)
        print(module.report(result))
        return 0

    return handler


def add_subcommands(sub):
    """Add the commands to `sub`, whose parser_class builds each parser's arguments on first use
    from the `builder` keyword (flags.LazyParser)."""
    for name, command in COMMANDS.items():
        sub.add_parser(name, help=command.summary, description=command.summary, builder=_builder(command))

    p = sub.add_parser("experiment", help="the paper's experiments on a trained run: " + ", ".join(EXPERIMENTS))
    names = p.add_subparsers(dest="experiment", metavar="NAME", required=True, parser_class=type(p))
    for name, command in EXPERIMENTS.items():
        names.add_parser(name, help=command.summary, description=command.summary, builder=_builder(command))
