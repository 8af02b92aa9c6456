#!/usr/bin/env python
"""Command-line face of ugvae: train, evaluate, compare, embed your own images, sample, and
run the paper's experiments.

    ugvae --dataset mnist                       # train (the default command)
    ugvae --resume RUN_DIR                      # continue a killed run
    ugvae --resume RUN_DIR --epochs 400         # extend a finished run to 400 epochs
    ugvae train --config RUN_DIR/config.json    # a new run with that config (flags override)
    ugvae evaluate --run RUN_DIR                # test ELBO, IWAE log-likelihood, clustering
    ugvae compare RUN_DIR...                    # one table of several runs
    ugvae embed --run RUN_DIR --folder DIR      # beta and z of your own image sets
    ugvae sample --run RUN_DIR --num-groups 4   # new groups, each sharing one beta
    ugvae experiment NAME --run RUN_DIR         # figures and tables of section 4

Installed, this is `ugvae.run` and the `ugvae` command; in a checkout, `python run.py` runs
the checkout's own package. Flags are made from the settings' fields (flags.py: `train`'s from
TrainConfig, ModelConfig, RunLocation and LaunchConfig, the other commands' in
experiments/cli.py); this module adds only --resume, --config and --quiet, and routes. The
library speaks of fields (in backticks in its messages), and `main` shows each as its flag. It owns the console
(a logging handler; `--quiet` hides progress bars, never notices) and the exit codes: 2 for
ugvae's own errors, in one line, 130/143 for an interrupted training; any other exception is a
bug and keeps its traceback. Importing it has no side effects and no heavy imports (torch comes
with the command that needs it, so `--help` is quick).
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys
from dataclasses import fields
from typing import NamedTuple

if __name__ == "__main__" and not __package__:
    # `python run.py` in a checkout, installed or not: this folder is the package `ugvae` (setup.cfg
    # maps it so), imported by path so that the checkout runs its own code, whatever is installed.
    import importlib.util

    _spec = importlib.util.spec_from_file_location(
        "ugvae", os.path.join(os.path.dirname(os.path.abspath(__file__)), "__init__.py"), submodule_search_locations=[]
    )
    _spec.submodule_search_locations.append(os.path.dirname(_spec.origin))
    sys.modules["ugvae"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["ugvae"])
    __package__ = "ugvae"

from .flags import CliParser, FlagNames, LazyParser, add_quiet, add_settings, as_flags, given_values, glossary_text  # noqa: E402

COMMANDS = ("train", "evaluate", "compare", "embed", "sample", "upgrade", "experiment")
# Fields that a resumed run may change (`resume`'s arguments); any other given flag must match its
# config.json. --runs-dir is ignored: tests and scripts pass it to every call.
RESUMABLE = {"epochs", "device", "threads", "runs_dir", "strategy", "devices", "num_nodes", "accelerator"}


class TrainSettings(NamedTuple):
    """The settings dataclasses whose fields are `train`'s flags."""

    train: type
    model: type
    location: type
    launch: type


def train_settings() -> TrainSettings:
    from .model.config import ModelConfig
    from .trained.config import LaunchConfig, RunLocation, TrainConfig

    return TrainSettings(TrainConfig, ModelConfig, RunLocation, LaunchConfig)


def build_train_arguments(parser: argparse.ArgumentParser):
    from .trained.config import OUTPUT, SECTIONS

    names = {}
    for title in SECTIONS:
        group = parser.add_argument_group(title)
        for settings_type in train_settings():
            names.update(add_settings(group, settings_type, section=title))
        if title == OUTPUT:
            output = group
    output.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a killed run in its own directory, or extend a finished one with --epochs",
    )
    output.add_argument(
        "--config",
        metavar="CONFIG_JSON",
        help="start a new run with the model and training config of RUN_DIR/config.json; given flags override it",
    )
    add_quiet(output)
    parser.set_defaults(flag_names={**names, "resume": "--resume", "config": "--config"})


def program_name() -> str:
    """What this command calls itself: `run.py` when started as `python run.py` in a checkout,
    else `ugvae`, the installed command (also `python -m ugvae`)."""
    return "run.py" if os.path.basename(sys.argv[0]) == "run.py" else "ugvae"


def build_parser(prog: str = "ugvae") -> argparse.ArgumentParser:
    from .version import __version__

    parser = CliParser(
        prog=prog,
        description=__doc__.split("\n\n")[0],
        epilog=f"Training is the default command: `{prog} --dataset mnist` means `{prog} train --dataset mnist`.\n"
        f"`{prog} COMMAND --help` lists a command's flags and their defaults.\n\n{glossary_text()}",
    )
    parser.add_argument("--version", action="version", version=f"ugvae {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=LazyParser)
    sub.add_parser("train", help="train a model (default command)", builder=build_train_arguments)
    from .experiments.cli import add_subcommands

    add_subcommands(sub)
    return parser


def configs_from_args(args, given: set[str]):
    """(TrainConfig, model fields) of a new run: --config's, else the defaults, with given flags on top.

    The model fields are ModelConfig's; x_shape is among them only when it is known without
    loading data (from --config, unless a flag changes the data).
    """
    from dataclasses import replace

    from .trained.run import read_config_file

    kinds = train_settings()
    train_values, model_values = given_values(args, kinds.train), given_values(args, kinds.model)
    if not args.config:
        return kinds.train(**train_values), model_values
    template = read_config_file(args.config)
    train_cfg = replace(template.train_cfg, **{k: v for k, v in train_values.items() if k in given})
    sizes = {**template.model_cfg.to_dict(), **model_values}
    if {"dataset", "image_size", "data_dir"} & given:
        del sizes["x_shape"]  # other data: the shape comes from it
    return train_cfg, sizes


def check_resume_flags(run, args, given: set[str]):
    """Refuse every given flag that would change the resumed run, naming it; --epochs, --device,
    --threads, --quiet and the launch flags are the ones a resumed run may change."""
    from .errors import ConfigError

    saved = {**run.model_cfg.to_dict(), **run.train_cfg.to_dict()}
    refused = [name for name in sorted(given - RESUMABLE) if name not in saved or getattr(args, name) != saved[name]]
    refused = [args.flag_names[name] for name in refused] + (["--config"] if args.config else [])
    if refused:
        raise ConfigError(
            f"--resume continues {run.run_dir} with its own config, but {', '.join(refused)} "
            f"{'differs' if len(refused) == 1 else 'differ'} from it or does not apply; drop "
            f"{'it' if len(refused) == 1 else 'them'}, or start a new run with "
            f"`{args.prog} train --config {run.run_dir}/config.json` and the new flags"
        )


def launch_config(args, given: set[str]):
    """The LaunchConfig of `--strategy` and its companions, or None: one device, without Lightning."""
    from .errors import ConfigError

    launch_type = train_settings().launch
    values = given_values(args, launch_type)
    if values["strategy"] is not None:
        return launch_type(**values)
    companions = sorted(given & set(values))
    if companions:
        named = ", ".join(f"`{name}`" for name in companions)
        raise ConfigError(f"{named} {'applies' if len(companions) == 1 else 'apply'} only with `strategy`; add it")
    return None


def cmd_train(args) -> int:
    from .experiments.report import print_training_report, training_report
    from .train import fit, resume

    given = set(vars(args)) & {f.name for t in train_settings() for f in fields(t)}
    launch = launch_config(args, given)
    if args.resume:
        from .trained import Run

        run = Run.open(args.resume)
        check_resume_flags(run, args, given)
        epochs = args.epochs if "epochs" in given else None
        device = args.device if "device" in given else None
        threads = args.threads if "threads" in given else None
        run = resume(run, epochs=epochs, device=device, threads=threads, launch=launch, on_finish=training_report)
    else:
        train_cfg, model_values = configs_from_args(args, given)
        location_type = train_settings().location
        location = location_type(**given_values(args, location_type))
        run = fit(
            train_cfg,
            run_dir=location.run_dir,
            runs_dir=location.runs_dir,
            launch=launch,
            on_finish=training_report,
            **model_values,
        )
    if run is None:  # a Lightning process other than rank 0 leaves the report to rank 0
        return 0
    print_training_report(run, command="python run.py" if args.prog == "run.py" else args.prog)
    print(run.run_dir)  # last line: the run directory, for scripts
    return 0


def route(argv: list[str], prog: str = "ugvae") -> list[str] | None:
    """argv with the command made explicit, or None when the help is wanted.

    Training is the default command, so `ugvae --dataset mnist` means `ugvae train --dataset
    mnist`; a first word that is no command gets a "did you mean" error instead of being read
    as a training flag.
    """
    if not argv:
        return None
    first = argv[0]
    if first in COMMANDS or first in ("-h", "--help", "--version"):
        return argv
    if not first.startswith("-"):
        close = difflib.get_close_matches(first, COMMANDS, n=1)
        hint = f"did you mean '{close[0]}'" if close else f"choose one of {', '.join(COMMANDS)}"
        raise SystemExit(_usage_error(f"unknown command '{first}' ({hint})", prog))
    return ["train", *argv]


def _usage_error(message: str, prog: str) -> int:
    print(f"error: {message}; see `{prog} --help`", file=sys.stderr)
    return 2


def tolerate_environment() -> str | None:
    """Odd environments get output, not a traceback: a console encoding without a character of
    a path (PYTHONIOENCODING=ascii) shows it as \\xNN, and a name that is not UTF-8 keeps its
    bytes; a closed stdout or stderr swallows what goes there; figures are files drawn with Agg,
    so an unknown MPLBACKEND cannot stop a command. Returns the problem that does stop it, if any."""
    import codecs

    def console_errors(error):
        text = error.object[error.start : error.end]
        if isinstance(error, UnicodeEncodeError) and all("\udc80" <= c <= "\udcff" for c in text):
            return bytes(ord(c) - 0xDC00 for c in text), error.end  # surrogate escapes: the name's own bytes
        return codecs.backslashreplace_errors(error)

    codecs.register_error("ugvae-console", console_errors)
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:  # started with it closed (>&-)
            setattr(sys, name, open(os.devnull, "w"))
        if hasattr(getattr(sys, name), "reconfigure"):
            getattr(sys, name).reconfigure(errors="ugvae-console")
    if "MPLBACKEND" in os.environ:
        os.environ["MPLBACKEND"] = "agg"
    if sys.flags.optimize >= 2:  # pyro builds its settings' docs from docstrings when imported
        return "Pyro cannot run without docstrings, which python -OO (PYTHONOPTIMIZE=2) strips; run without it"
    try:
        os.getcwd()
    except FileNotFoundError:  # torch cannot even load there (MKL dies naming its library)
        return "the current folder no longer exists; cd to an existing folder and run the command again"
    return None


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = program_name()
    if problem := tolerate_environment():
        print(f"error: {problem}", file=sys.stderr)
        return 2
    # --debug may stand anywhere, also after the options of a subcommand.
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        routed = route(argv, prog)
    except SystemExit as e:
        return e.code
    parser = build_parser(prog)
    if routed is None:
        parser.print_help()
        return 0
    from . import progress
    from .errors import UGVAEError

    package_log = logging.getLogger(__package__)
    level = package_log.level
    # The console, before parsing: a deprecated flag's notice goes through it (progress.py).
    handler, flag_names = progress.Console(), FlagNames({})
    handler.setFormatter(flag_names)
    package_log.addHandler(handler)
    package_log.setLevel(logging.INFO)
    try:
        args = parser.parse_args(routed)
        args.prog = prog
        flag_names.names = args.flag_names
        # Progress lines are INFO records: quiet hides them, and keeps notices, which are warnings.
        package_log.setLevel(logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
        return cmd_train(args) if args.command == "train" else args.handler(args)
    except UGVAEError as e:
        if debug:
            raise
        # One line even if a message has several.
        print("error: " + " ".join(as_flags(str(e), flag_names.names).split("\n")), file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        message = f"interrupted: {e}" if str(e) else "interrupted"
        if getattr(e, "run_dir", None):
            command = "python run.py" if prog == "run.py" else prog
            message += f"; continue with `{command} --resume {e.run_dir}`"
        print(message, file=sys.stderr)
        return getattr(e, "exit_code", 130)  # 143 for SIGTERM
    finally:
        package_log.removeHandler(handler)
        package_log.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
