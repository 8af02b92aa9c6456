#!/usr/bin/env python
"""Command-line face of ugvae: train, evaluate, compare and run the paper's experiments.

    python run.py --dataset mnist                  # train (the default command)
    python run.py --resume runs/mnist-ugvae-...    # continue a killed run
    python run.py evaluate --run RUN_DIR           # test ELBO, IWAE log-likelihood, clustering
    python run.py compare RUN_DIR...               # one table of several runs
    python run.py experiment NAME --run RUN_DIR    # figures and tables of section 4

Importing this module has no side effects; `from run import load_run` loads a saved run.
"""

from __future__ import annotations

import argparse
import sys

from train.runs import load_run  # noqa: F401  (re-exported: `from run import load_run`)

COMMANDS = ("train", "evaluate", "compare", "experiment")


class CliParser(argparse.ArgumentParser):
    """A parser whose errors are one line, like every other bad input (usage is in --help)."""

    def error(self, message):
        self.exit(2, f"error: {message}; see `{self.prog} --help`\n")


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
    from model.config import ARCHS, CLUSTER_WEIGHTS, LIKELIHOODS
    from train.config import TrainConfig

    d = TrainConfig()
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        default=d.dataset,
        help="mnist, fashion-mnist, digits, celeba, synthetic, folder:PATH, grouped:NAME (groups sharing "
        "hidden factors), or A+B for a mixture of two (default: %(default)s)",
    )
    g.add_argument("--data-dir", default=None, help="where datasets are found or downloaded (default: ./.data)")
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
    g.add_argument("--model", default=d.model, help="ugvae, vae, gmvae or mlvae (default: %(default)s)")
    g.add_argument(
        "--guide",
        default=None,
        help="variational family; default: the model's own (ugvae: structured; ablations: beta-from-x, mean-field)",
    )
    g.add_argument("--K", type=int, default=10, help="number of clusters of the local mixture")
    g.add_argument("--z-dim", type=int, default=10, help="local latent size")
    g.add_argument("--beta-dim", type=int, default=10, help="global latent size")
    g.add_argument("--hidden", type=int, default=256, help="hidden units of the MLP networks")
    g.add_argument("--likelihood", choices=LIKELIHOODS, default="gaussian", help="pixel likelihood")
    g.add_argument("--var-x", type=float, default=0.1, help="variance of the Gaussian likelihood")
    g.add_argument(
        "--cluster-weights",
        choices=CLUSTER_WEIGHTS,
        default="uniform",
        help="p(d | beta): uniform (eq. 4) or global, softmax(A beta + b) (an extension of the paper)",
    )
    g.add_argument("--arch", choices=ARCHS, default="auto", help="mlp, conv (64x64), or auto from the image size")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=d.epochs, help="passes over the training set")
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
    g.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cpu; a resumed run keeps its own)")
    g.add_argument("--jit", action="store_true", help="use JitTraceEnum_ELBO (same loss, less overhead)")
    g.add_argument("--clip-norm", type=float, default=None, help="clip the gradient norm to this value")
    g.add_argument("--log-every", type=int, default=d.log_every, help="steps between logged losses")
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps between checkpoints")
    g.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints, help="how many checkpoints to keep")
    g = p.add_argument_group("output")
    g.add_argument("--runs-dir", default="runs", help="parent of the new run directory (default: %(default)s)")
    g.add_argument(
        "--run-dir",
        default=None,
        help="the new run's directory, which must not exist (default: a new RUNS_DIR/DATASET-MODEL-TIME)",
    )
    g.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue a killed run in its own directory")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    from train.lightning import add_arguments as add_lightning_arguments

    add_lightning_arguments(p.add_argument_group("scaling out (PyTorch Lightning, optional extra)"))


def build_parser() -> argparse.ArgumentParser:
    parser = CliParser(
        prog="run.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_train_arguments(sub.add_parser("train", help="train a model (default command)"))
    from experiments.cli import add_subcommands

    add_subcommands(sub)
    return parser


def cmd_train(args) -> int:
    from experiments.report import tensorboard_writer, training_report
    from model.config import UGVAEConfig
    from train.config import TrainConfig
    from train.loop import resume, train

    if args.resume and args.strategy:
        from train.runs import RunError

        raise RunError("--resume is not supported with --strategy yet; resume without --strategy on one device")
    if args.resume:
        run_dir = resume(args.resume, quiet=args.quiet, device=args.device, writer_factory=tensorboard_writer)
    else:
        train_cfg = TrainConfig(
            dataset=args.dataset,
            model=args.model,
            guide=args.guide,
            epochs=args.epochs,
            group_size=args.group_size,
            groups_per_step=args.groups_per_step,
            lr=args.lr,
            seed=args.seed,
            device=args.device or "cpu",
            jit=args.jit,
            data_dir=args.data_dir,
            image_size=args.image_size,
            mix=args.mix,
            groups=args.groups,
            group_warmup=args.group_warmup,
            log_every=args.log_every,
            checkpoint_every=args.checkpoint_every,
            keep_checkpoints=args.keep_checkpoints,
            clip_norm=args.clip_norm,
        )
        from data import load_dataset

        x_shape = load_dataset(args.dataset, "test", args.data_dir, args.image_size).x_shape
        model_cfg = UGVAEConfig(
            x_shape=x_shape,
            z_dim=args.z_dim,
            beta_dim=args.beta_dim,
            K=args.K,
            hidden=args.hidden,
            likelihood=args.likelihood,
            var_x=args.var_x,
            arch=args.arch,
            cluster_weights=args.cluster_weights,
        )
        if args.strategy:
            from train.lightning import fit_lightning

            run_dir = fit_lightning(train_cfg, model_cfg, args, args.runs_dir)
            if run_dir is None:  # every process but rank 0 leaves the report to rank 0
                return 0
        else:
            run_dir = train(
                train_cfg,
                args.runs_dir,
                model_cfg,
                quiet=args.quiet,
                writer_factory=tensorboard_writer,
                run_dir=args.run_dir,
            )
    training_report(run_dir)
    print(run_dir)
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug may stand anywhere, also after the options of a subcommand.
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    # Training is the default command: `run.py --dataset mnist` means `run.py train --dataset mnist`.
    if not any(a in COMMANDS for a in argv[:1]) and not {"-h", "--help"} & set(argv[:1]):
        argv.insert(0, "train")
    args = build_parser().parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return 0
    from data import DataError
    from train import RunError, TrainingDiverged

    try:
        return cmd_train(args) if args.command == "train" else args.handler(args)
    except (DataError, RunError, TrainingDiverged, ValueError, OSError) as e:
        if debug:
            raise
        # OSError covers unreadable, missing and read-only paths; one line even if a message has several.
        print("error: " + " ".join(str(e).split("\n")), file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"interrupted: {e}" if str(e) else "interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
