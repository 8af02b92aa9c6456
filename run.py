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
    ugvae sample --run RUN_DIR --groups 4       # new groups, each sharing one beta
    ugvae experiment NAME --run RUN_DIR         # figures and tables of section 4

Installed, this is `ugvae.run` and the `ugvae` command; in a checkout, `python run.py` runs
the checkout's own package. This module alone knows flags: the library speaks of fields (in
backticks in its messages), and `main` shows each as the flag that sets it. It owns the console
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
import re
import sys

if __name__ == "__main__" and not __package__:  # `python run.py`: this checkout is the package
    from _checkout import use_checkout

    use_checkout()
    __package__ = "ugvae"

COMMANDS = ("train", "evaluate", "compare", "embed", "sample", "experiment")
# Flags that may change when a run is resumed; any other flag must match the run's config.json.
RESUME_FLAGS = {"resume", "epochs", "device", "quiet", "runs_dir", "strategy", "devices", "num_nodes", "accelerator"}
# Flags that say where a new run goes: meaningless for a resumed run, which stays in its directory.
# (--runs-dir is ignored: tests and scripts pass it to every call.)
NEW_RUN_FLAGS = {"run_dir", "config"}
LAUNCH_FLAGS = ("strategy", "devices", "num_nodes", "accelerator")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in every help line, but not for required flags and flags whose default is no value."""

    def _get_help_string(self, action):
        if action.required or action.default in (None, argparse.SUPPRESS) or action.default is False:
            return action.help
        return super()._get_help_string(action)


class CliParser(argparse.ArgumentParser):
    """A parser whose errors are one line, like every other bad input (usage is in --help), and
    that suggests the closest flag for a mistyped one.

    Abbreviated options are off: `--e 3` would otherwise mean `--epochs 3` today and an
    "ambiguous option" error once another option starts with `--e`.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", HelpFormatter)
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


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def share_or_law(text: str) -> float | str:
    """--mix: a float share, or a law such as beta:0.5 kept as text."""
    try:
        return float(text)
    except ValueError:
        return text


def add_train_arguments(p: argparse.ArgumentParser):
    from .model.config import ARCHS, CLUSTER_WEIGHTS, LIKELIHOODS, ModelConfig
    from .trained.config import TrainConfig

    d, m = TrainConfig(), ModelConfig()
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        default=d.dataset,
        help="mnist, fashion-mnist, digits, celeba, synthetic, folder:PATH, grouped:NAME (groups sharing "
        "hidden factors), or A+B for a mixture of two",
    )
    g.add_argument("--data-dir", default=None, help="where datasets are found or downloaded; None: ./.data")
    g.add_argument("--image-size", type=positive_int, default=None, help="resize images to SIZE x SIZE")
    g.add_argument(
        "--mix",
        type=share_or_law,
        default=d.mix,
        help="share of dataset A in each group of an A+B mixture, or beta:A for a share ~ Beta(A, A) per group",
    )
    g.add_argument(
        "--groups",
        default=d.groups,
        help="training groups: random, labels:ALPHA (class proportions ~ Dirichlet(ALPHA); 0: one class) "
        "or clusters:ALPHA (the same over the model's own clusters)",
    )
    g.add_argument(
        "--group-warmup", type=int, default=d.group_warmup, help="epochs of random groups before clusters:ALPHA"
    )
    g = p.add_argument_group("model")
    g.add_argument("--model", default=d.model, help="ugvae, vae, gmvae or mlvae")
    g.add_argument(
        "--guide",
        default=None,
        help="variational family; None: the model's own (ugvae: structured; ablations: beta-from-x, mean-field)",
    )
    g.add_argument("--K", type=int, default=m.K, help="number of clusters of the local mixture")
    g.add_argument("--z-dim", type=int, default=m.z_dim, help="local latent size")
    g.add_argument("--beta-dim", type=int, default=m.beta_dim, help="global latent size")
    g.add_argument("--hidden", type=int, default=m.hidden, help="hidden units of the MLP networks")
    g.add_argument("--likelihood", choices=LIKELIHOODS, default=m.likelihood, help="pixel likelihood")
    g.add_argument("--var-x", type=float, default=m.var_x, help="variance of the Gaussian likelihood")
    g.add_argument(
        "--cluster-weights",
        choices=CLUSTER_WEIGHTS,
        default=m.cluster_weights,
        help="p(d | beta): uniform (eq. 4) or global, softmax(A beta + b) (an extension of the paper)",
    )
    g.add_argument("--arch", choices=ARCHS, default=m.arch, help="mlp, conv (64x64), or auto from the image size")
    g.add_argument(
        "--decoder-film",
        action=argparse.BooleanOptionalAction,
        default=m.decoder_film,
        help="UG-VAE: beta also modulates the decoder's hidden layer (FiLM), an extension of the paper",
    )
    g = p.add_argument_group("training")
    g.add_argument(
        "--epochs", type=int, default=d.epochs, help="passes over the training set (with --resume: the new total)"
    )
    g.add_argument("--group-size", "-B", type=int, default=d.group_size, help="B: samples per group")
    g.add_argument(
        "--groups-per-step",
        "-G",
        type=int,
        default=d.groups_per_step,
        help="G: independent groups per step, vectorised in one call",
    )
    g.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    g.add_argument("--seed", type=int, default=d.seed, help="random seed")
    g.add_argument(
        "--device",
        default="auto",
        help="auto (cuda when available, else cpu), cpu or cuda[:N]; a resumed run keeps its own",
    )
    g.add_argument("--jit", action="store_true", help="use JitTraceEnum_ELBO (same loss, less overhead)")
    g.add_argument(
        "--validate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Pyro's argument checks, which sync with the host every step; None: on, but off on CUDA",
    )
    g.add_argument("--graph", action="store_true", help="replay the whole step as one CUDA graph (needs cuda)")
    g.add_argument("--clip-norm", type=float, default=None, help="clip the gradient norm to this value")
    g.add_argument("--log-every", type=int, default=d.log_every, help="steps between logged losses")
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps between checkpoints")
    g.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints, help="how many checkpoints to keep")
    add_lever_arguments(p, d)
    g = p.add_argument_group("output")
    g.add_argument("--runs-dir", default="runs", help="parent of the new run directory")
    g.add_argument(
        "--run-dir",
        default=None,
        help="the new run's directory, which must not exist; None: a new RUNS_DIR/DATASET-MODEL-TIME",
    )
    g.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="continue a killed run in its own directory, or extend a finished one with --epochs",
    )
    g.add_argument(
        "--config",
        metavar="CONFIG_JSON",
        default=None,
        help="start a new run with the model and training config of RUN_DIR/config.json; given flags override it",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bars; notices are still shown")
    g = p.add_argument_group("scaling out (PyTorch Lightning, optional extra)")
    g.add_argument(
        "--strategy",
        default=None,
        help="train under PyTorch Lightning with this strategy: ddp (one process per "
        "device; also under torchrun or SLURM), ddp_spawn, auto",
    )
    g.add_argument("--devices", default="auto", help="devices per node: a count, a list like 0,1, or auto")
    g.add_argument("--num-nodes", type=int, default=1, help="machines taking part in the run")
    g.add_argument("--accelerator", default="auto", help="cpu, gpu or auto")


def add_lever_arguments(p: argparse.ArgumentParser, d):
    """The levers of the objective (trained/config.py's `Levers`); at their defaults the loss is the ELBO."""
    g = p.add_argument_group("levers of the objective (extensions of the paper; what each bounds: train/elbo.py)")
    g.add_argument(
        "--local-kl-weight",
        type=float,
        default=d.local_kl_weight,
        help="weight lambda on the KL of z and d (1: the ELBO)",
    )
    g.add_argument(
        "--leave-one-out",
        action=argparse.BooleanOptionalAction,
        default=d.leave_one_out,
        help="UG-VAE: decode each sample with beta inferred from the other members of its group",
    )
    g.add_argument(
        "--set-mix-weight",
        type=float,
        default=d.set_mix_weight,
        help="UG-VAE with --cluster-weights global: weight gamma on KL(the group's mean q(d) || p(d | beta)), "
        "which pulls p(d | beta) to the group's mix (0: the ELBO)",
    )


def given_flags(argv: list[str]) -> set[str]:
    """The `dest` of every train flag that `argv` sets, whatever its value.

    Parsed a second time with every default suppressed, so a flag given with its default value
    still counts as given (which `default=None` sentinels would also do, but they hide the
    defaults from --help).
    """
    parser = CliParser(prog="train", argument_default=argparse.SUPPRESS)
    add_train_arguments(parser)
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_known_args(argv)[0]))


def flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """dest -> its long flag, for every option of `parser`."""
    names = {}
    for action in parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if longs:
            names[action.dest] = longs[0]
    return names


def build_train_arguments(parser: argparse.ArgumentParser):
    add_train_arguments(parser)
    parser.set_defaults(flag_names=flag_names(parser))


def program_name() -> str:
    """What this command calls itself: `run.py` when started as `python run.py` in a checkout,
    else `ugvae`, the installed command (also `python -m ugvae`)."""
    return "run.py" if os.path.basename(sys.argv[0]) == "run.py" else "ugvae"


def build_parser(prog: str = "ugvae") -> argparse.ArgumentParser:
    from .version import __version__

    parser = CliParser(
        prog=prog,
        description=__doc__.split("\n\n")[0],
        epilog=f"Training is the default command: `{prog} --dataset mnist` means `{prog} train --dataset mnist`. "
        f"`{prog} COMMAND --help` lists a command's flags and their defaults.",
    )
    parser.add_argument("--version", action="version", version=f"ugvae {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=LazyParser)
    sub.add_parser("train", help="train a model (default command)", builder=build_train_arguments)
    from .experiments.cli import add_subcommands

    add_subcommands(sub)
    return parser


def check_names(model: str, guide: str | None, dataset: str):
    """Model, guide and dataset names, checked before any data is loaded (the error names the choices)."""
    from .data.registry import check_dataset_name
    from .guide import guide_class

    guide_class(model, guide)
    check_dataset_name(dataset)


def configs_from_args(args, given: set[str]):
    """(TrainConfig, model fields) of a new run: --config's, else the defaults, with given flags on top.

    The model fields are ModelConfig's; x_shape is among them only when it is known without
    loading data (from --config, unless a flag changes the data).
    """
    from dataclasses import fields, replace

    from .model.config import ModelConfig
    from .trained import TrainConfig

    train_keys = {f.name for f in fields(TrainConfig)}
    model_keys = {f.name for f in fields(ModelConfig)} - {"x_shape"}
    if not args.config:
        return TrainConfig(**{k: getattr(args, k) for k in train_keys}), {k: getattr(args, k) for k in model_keys}
    from .trained.run import read_config_file

    template = read_config_file(args.config)
    train_cfg = replace(template.train_cfg, **{k: getattr(args, k) for k in given & train_keys})
    sizes = {**template.model_cfg.to_dict(), **{k: getattr(args, k) for k in given & model_keys}}
    sizes["x_shape"] = tuple(sizes["x_shape"])
    if {"dataset", "image_size", "data_dir"} & given:
        del sizes["x_shape"]  # other data: the shape comes from it
    return train_cfg, sizes


def check_resume_flags(run, args, given: set[str]):
    """Refuse every given flag that would change the resumed run, naming it; --epochs, --device,
    --quiet and the launch flags are the ones a resumed run may change."""
    from .errors import ConfigError

    saved = {**run.model_cfg.to_dict(), **run.train_cfg.to_dict()}
    refused = []
    for dest in sorted(given - RESUME_FLAGS):
        if dest in NEW_RUN_FLAGS or dest not in saved or getattr(args, dest) != saved[dest]:
            refused.append("--" + dest.replace("_", "-"))
    if refused:
        raise ConfigError(
            f"--resume continues {run.run_dir} with its own config, but {', '.join(refused)} "
            f"{'differs' if len(refused) == 1 else 'differ'} from it or does not apply; drop "
            f"{'it' if len(refused) == 1 else 'them'}, or start a new run with "
            f"`{args.prog} train --config {run.run_dir}/config.json` and the new flags"
        )


def cmd_train(args, given: set[str]) -> int:
    from .experiments.report import print_training_report, training_report
    from .train import fit, resume
    from .trained import LaunchConfig

    launch = None
    if args.strategy:
        launch = LaunchConfig(**{k: getattr(args, k) for k in LAUNCH_FLAGS})
    if args.resume:
        from .trained import Run

        run = Run.open(args.resume)
        check_resume_flags(run, args, given)
        epochs = args.epochs if "epochs" in given else None
        device = args.device if "device" in given else None
        run = resume(run, epochs=epochs, device=device, launch=launch, on_finish=training_report)
    else:
        train_cfg, model_values = configs_from_args(args, given)
        check_names(train_cfg.model, train_cfg.guide, train_cfg.dataset)
        run = fit(
            train_cfg,
            run_dir=args.run_dir,
            runs_dir=args.runs_dir,
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


def as_flags(message: str, names: dict[str, str]) -> str:
    """A library message with each `field` it names shown as the flag that sets it."""
    return re.sub(r"`(\w+)`", lambda m: names.get(m[1], m[1]), message)


class ConsoleHandler(logging.Handler):
    """Log records on stderr, one line each, written between the lines of a progress bar, with
    each field they name shown as its flag."""

    def __init__(self, names: dict[str, str]):
        super().__init__()
        self.names = names

    def emit(self, record):
        try:
            from tqdm import tqdm

            tqdm.write(as_flags(self.format(record), self.names), file=sys.stderr)
        except Exception:
            self.handleError(record)


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
    args = parser.parse_args(routed)
    args.prog = prog
    from . import progress

    quiet = getattr(args, "quiet", False)
    progress.set_enabled(not quiet)
    package_log = logging.getLogger(__package__)
    handler = ConsoleHandler(getattr(args, "flag_names", {}))
    package_log.addHandler(handler)
    package_log.setLevel(logging.WARNING if quiet else logging.INFO)  # notices are warnings: always shown
    from .errors import UGVAEError

    try:
        if args.command == "train":
            return cmd_train(args, given_flags(routed[1:]))
        return args.handler(args)
    except UGVAEError as e:
        if debug:
            raise
        # One line even if a message has several.
        print("error: " + " ".join(as_flags(str(e), args.flag_names).split("\n")), file=sys.stderr)
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
        progress.set_enabled(True)


if __name__ == "__main__":
    sys.exit(main())
