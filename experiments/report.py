"""Figures every training run ends with: loss curves, reconstructions and samples.

loss_curve.png      train ELBO per logged step, test ELBO and cluster usage per epoch
reconstructions.png test groups (odd rows) above their reconstructions (even rows)
samples.png         UG-VAE: rows are beta values, columns clusters d, each image the
                    decoded component mean mu_d(beta); other models: their own samples
"""

from __future__ import annotations

import math
import os

import matplotlib.pyplot as plt
import torch
from pyro import poutine

from ..data import fixed_groups, load_dataset, to_unit_float
from ..progress import plural
from ..train.hooks import TensorBoard
from ..trained.metrics import read_metrics
from .plotting import image_grid, save_figure, save_grid


def plot_loss_curve(run_dir: str):
    rows = read_metrics(os.path.join(run_dir, "metrics.csv"))
    steps = [r for r in rows if r["kind"] == "step"]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax.plot(
        [r["step"] for r in steps], [r["train_elbo"] for r in steps], lw=0.8, alpha=0.7, label="train (logged steps)"
    )
    ax.plot([r["step"] for r in epochs], [r["test_elbo"] for r in epochs], "o-", ms=3, label="test (per epoch)")
    ax.set_xlabel("step"), ax.set_ylabel("ELBO per sample (nats)"), ax.legend()
    if epochs and epochs[-1]["test_elbo"] == epochs[-1]["test_elbo"]:
        lo = min(r["test_elbo"] for r in epochs[len(epochs) // 4 :]) if len(epochs) > 3 else None
        if lo is not None:
            ax.set_ylim(bottom=lo - 0.2 * abs(lo))
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
    """Images (rows * cols, C, H, W) and cols.

    UG-VAE: rows are draws of beta ~ p(beta), columns the K clusters, each image the decoded
    component mean mu_d(beta). Other models: decoded draws of their latents from the prior, one
    group per row (ML-VAE: one beta per row), column k drawn from cluster d = k where there is a d.
    """
    cfg, device = model.cfg, next(model.parameters()).device
    torch.manual_seed(seed)
    if model.has_global_latent and model.has_mixture:
        beta = torch.randn(rows, 1, cfg.beta_dim, device=device)
        z = model.cluster_prior(beta)[0][:, 0]  # (rows, K, z_dim)
        return model.decode(z, beta).reshape((-1,) + cfg.x_shape), cfg.K
    columns = torch.arange(cfg.K, device=device).expand(rows, cfg.K)
    trace = poutine.trace(poutine.condition(model, {"d": columns})).get_trace(None, num_groups=rows, group_size=cfg.K)
    latents = [trace.nodes[name]["value"] for name in ("z", "beta") if name in trace.nodes]
    return model.decode(*latents).reshape((-1,) + cfg.x_shape), cfg.K


# What a finished run directory holds, in the order the end-of-training message names them.
RUN_FILES = (
    "config.json",
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
    print(f"  {command} sample --run {run.run_dir} --num-groups 4", file=out)
    print(
        f"  {command} experiment interpolation --run {run.run_dir}   (also structured-batches, domain-alignment)",
        file=out,
    )


def training_report(run):
    """The figures of the module docstring, from the run's newest checkpoint."""
    run.load_weights()
    model, train_cfg = run.model, run.train_cfg
    plot_loss_curve(run.run_dir)
    test = load_dataset(train_cfg.dataset, "test", train_cfg.data_dir, train_cfg.image_size)
    B = min(train_cfg.group_size, 8)
    idx = fixed_groups(len(test), train_cfg.group_size)[:4, :B]
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
    board = TensorBoard.in_dir(run.path("tensorboard"))
    if board:
        board.writer.add_image("reconstructions", image_grid(pairs, B), run.step)
        board.writer.add_image("samples", image_grid(images, cols), run.step)
        board.close()
