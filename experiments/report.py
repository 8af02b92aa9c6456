"""Figures every training run ends with: loss curves, reconstructions and samples.

loss_curve.png      train ELBO per logged step and test ELBO per evaluated epoch, over the
                    whole run; cluster usage per evaluated epoch
reconstructions.png test groups (odd rows) above their reconstructions (even rows)
samples.png         the generative program's own draws: a group per row (beta ~ p(beta) once
                    per row where the model has it), column k drawn from cluster d = k
                    (z ~ p(z | d = k, beta)) where it has clusters, each image the decoder's mean

The images go to RUN/tensorboard/ too when TensorBoard is installed (trained/tensorboard.py).
"""

from __future__ import annotations

import math
import os

import matplotlib.pyplot as plt
import torch
from pyro import poutine

from ..data import load_dataset, seeded_partition, to_unit_float
from ..progress import plural
from ..trained.inference import prior_trace
from ..trained.metrics import read_metrics
from ..trained.tensorboard import summary_writer
from .plotting import image_grid, save_figure, save_grid


def plot_loss_curve(run_dir: str):
    rows = read_metrics(os.path.join(run_dir, "metrics.csv"))
    steps = [r for r in rows if r["kind"] == "step"]
    epochs = [r for r in rows if r["kind"] == "epoch" and not math.isnan(r["test_elbo"])]  # the evaluated ones
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax.plot(
        [r["step"] for r in steps], [r["train_elbo"] for r in steps], lw=0.8, alpha=0.7, label="train (logged steps)"
    )
    ax.plot([r["step"] for r in epochs], [r["test_elbo"] for r in epochs], "o-", ms=3, label="test (evaluated epochs)")
    ax.set_xlabel("step"), ax.set_ylabel("ELBO per sample (nats)"), ax.legend()  # every point of the run shown
    if epochs and not math.isnan(epochs[-1]["clusters_used"]):
        ax2.plot(
            [r["epoch"] for r in epochs], [r["clusters_used"] for r in epochs], label="clusters with >= 2% of mean pi"
        )
        ax2.plot(
            [r["epoch"] for r in epochs], [r["clusters_used_argmax"] for r in epochs], label="same, argmax assignments"
        )
        ax2.set_xlabel("epoch"), ax2.set_ylabel("clusters"), ax2.legend()
    else:
        ax2.axis("off")
    save_figure(fig, os.path.join(run_dir, "loss_curve.png"))


@torch.no_grad()
def sample_grid(model, rows: int = 8, seed: int = 0) -> tuple[torch.Tensor, int]:
    """Images (rows * K, C, H, W) and K: `rows` groups of K from the generative program, image k of
    each drawn from cluster d = k where the model has clusters (the condition is void otherwise)."""
    cfg = model.cfg
    torch.manual_seed(seed)
    columns = torch.arange(cfg.K, device=model.device).expand(rows, cfg.K)
    trace = prior_trace(poutine.condition(model, {"d": columns}), rows, cfg.K)
    return trace.nodes["x"]["fn"].mean.reshape((-1,) + cfg.x_shape), cfg.K


# What a finished run directory holds, in the order the end-of-training message names them.
RUN_FILES = (
    "config.json",
    "environment.json",
    "checkpoints",
    "metrics.csv",
    "summary.json",
    "loss_curve.png",
    "reconstructions.png",
    "samples.png",
    "tensorboard",
)


def print_training_report(run, out=None, command: str = "ugvae"):
    """A few lines on stdout at the end of training: the scores, the files, the next commands
    (as `command` spells itself: `ugvae`, or `python run.py` in a checkout)."""
    import json
    import sys

    out = out or sys.stdout
    with open(run.path("summary.json")) as f:
        summary = json.load(f)

    def number(key, digits=2):
        value = summary.get(key)
        return "-" if value is None else f"{value:.{digits}f}"

    line = f"test ELBO {number('test_elbo')}   train ELBO {number('train_elbo')} (nats per sample)"
    if summary.get("clusters_used") is not None:
        line += f"   clusters used {summary['clusters_used']:g}"
    trained = f"{plural(summary['epochs'], 'epoch')}, {plural(summary['steps'], 'step')}"
    print(f"trained {trained} in {summary['train_seconds']:.0f} s", file=out)
    print("  " + line, file=out)
    written = [name for name in RUN_FILES if os.path.exists(run.path(name))]
    print(f"  wrote {run.run_dir}/: {', '.join(written)}", file=out)
    print("next:", file=out)
    print(f"  {command} evaluate --run {run.run_dir}", file=out)
    print(f"  {command} embed --run {run.run_dir} --folder YOUR_IMAGE_SETS", file=out)
    print(f"  {command} sample --run {run.run_dir} --beta-from YOUR_IMAGE_SETS", file=out)
    for name, what in NEXT_EXPERIMENTS:
        print(f"  {command} experiment {name} --run {run.run_dir}   ({what})", file=out)
    print(f"  what this session really used (versions, device, data): {run.path('environment.json')}", file=out)


# The experiments the end of training suggests, with what each asks; every one of them is listed.
NEXT_EXPERIMENTS = (
    ("interpolation", "what beta and z each control"),
    ("set-generation", "more images like a set, scored"),
    ("group-factors", "on grouped: data, what beta recovers of a group's factors"),
    ("structured-batches", "whether q(beta | X) tells the rule behind a group"),
    ("domain-alignment", "on A+B data, whether beta finds a group's domain"),
)


def training_report(run):
    """Draw the figures every training run ends with, from the run's newest checkpoint.

    ``loss_curve.png`` (train ELBO per logged step and test ELBO per epoch, cluster usage),
    ``reconstructions.png`` (test groups above their reconstructions) and ``samples.png`` (a group
    per row, column k drawn from cluster k), into the run directory and its TensorBoard log.

    Parameters
    ----------
    run : Run
        A trained run; the command line calls this at the end of training.
    """
    run.load_weights()
    model, train_cfg = run.model, run.train_cfg
    plot_loss_curve(run.run_dir)
    test = load_dataset(train_cfg.dataset, "test", train_cfg.data_dir, train_cfg.image_size)
    B = min(train_cfg.group_size, 8)
    idx = seeded_partition(len(test), train_cfg.group_size)[:4, :B]
    x = to_unit_float(test.images[idx]).to(run.device)
    recon = run.reconstruct(x)
    pairs = torch.stack([x, recon], dim=1).reshape((-1,) + x.shape[2:])
    save_grid(run.path("reconstructions.png"), pairs, nrow=B, title="test groups (odd rows), reconstructions (even)")
    images, cols = sample_grid(model)
    save_grid(
        run.path("samples.png"),
        images,
        nrow=cols,
        title="samples: rows = beta ~ p(beta), columns = cluster d",
        xlabel="cluster d",
        ylabel="beta",
    )
    writer = summary_writer(run.path("tensorboard"))
    if writer is not None:
        writer.add_image("reconstructions", image_grid(pairs, B), run.step)
        writer.add_image("samples", image_grid(images, cols), run.step)
        writer.close()
