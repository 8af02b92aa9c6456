"""Global/local interpolation grids: what beta and z each control (section 4.1, fig. 3; fig. 4 for ML-VAE).

Row r moves beta diagonally across the prior's unit ball, beta_r = t_r (1, ..., 1) with t_r
from -1 to +1; column c moves z diagonally around the cluster's prior mean given beta,

    z_rc = mu_z^(d)(beta_r) + s_c (1, ..., 1),   s_c from -3 to +3,   mu_z^(d) of eq. 3,

and each cell shows the decoder's mean image for (z_rc, beta_r); d plays no other role, since
both latents are set by hand. `--beta-centre posterior` moves the rows around the mean of
q(beta | X) over random test groups instead of 0: trained runs put that mean far from the
prior's centre (|mu| of about 2 per dim on MNIST), where the paper's diagonal never passes.
ML-VAE has one Gaussian prior on z, so its grid is centred at 0.
The JSON reports the mean absolute pixel change between neighbouring rows (what beta changes)
and between neighbouring columns (what z changes) of each grid.
"""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import torch

from ..data import fixed_groups, load_dataset, to_unit_float
from ..errors import RunError
from ..train import load_run
from .plotting import experiment_dir, save_figure, save_grid, save_json, show_grid


def row_label(args) -> str:
    around = "" if args.beta_centre == "prior" else " around the posterior mean"
    return f"beta: -{args.beta_range:g} to +{args.beta_range:g} on every dim{around}"


def interpolation_latents(
    model,
    cluster: int | None,
    rows: int,
    cols: int,
    beta_range: float = 1.0,
    z_range: float = 3.0,
    beta_centre: torch.Tensor | None = None,
):
    """z (rows, cols, z_dim) and beta (rows, cols, beta_dim) of the grid; cluster None centres z at 0."""
    cfg = model.cfg
    device = next(model.parameters()).device
    t = torch.linspace(-beta_range, beta_range, rows, device=device)
    beta = t[:, None] * torch.ones(cfg.beta_dim, device=device)
    if beta_centre is not None:
        beta = beta + beta_centre.to(device)
    if cluster is None:
        centre = torch.zeros(rows, cfg.z_dim, device=device)
    else:
        centre = model.cluster_prior(beta)[0][:, cluster]  # (rows, K, z_dim) -> mu_z^(d)(beta_r)
    s = torch.linspace(-z_range, z_range, cols, device=device)
    z = centre[:, None, :] + s[None, :, None]
    return z, beta[:, None, :].expand(rows, cols, cfg.beta_dim)


@torch.no_grad()
def interpolation_grid(model, cluster: int | None, rows: int, cols: int, **ranges) -> torch.Tensor:
    """Decoded images (rows, cols, C, H, W) of the grid."""
    return model.decode(*interpolation_latents(model, cluster, rows, cols, **ranges))


def grid_effects(images: torch.Tensor) -> dict:
    """Mean absolute pixel change between neighbouring rows (beta) and columns (z)."""
    return {
        "beta_effect": float((images[1:] - images[:-1]).abs().mean()),
        "z_effect": float((images[:, 1:] - images[:, :-1]).abs().mean()),
    }


@torch.no_grad()
def cluster_usage(guide, images: torch.Tensor, chunk: int = 500) -> torch.Tensor:
    """Share of test images per cluster, the mean of q(d|z) at z = mean of q(z|x)."""
    device = next(guide.parameters()).device
    pis = [guide.local_posterior(to_unit_float(x.to(device)).unsqueeze(0)).pi[0].cpu() for x in images.split(chunk)]
    return torch.cat(pis).mean(0)


def choose_clusters(asked: list[str] | None, K: int, usage) -> list[int]:
    """`all`, explicit cluster numbers, or by default the three clusters the test images use most."""
    if asked == ["all"]:
        return list(range(K))
    if asked:
        try:
            clusters = [int(a) for a in asked]
        except ValueError:
            raise ValueError(f"--clusters takes cluster numbers or 'all', got {' '.join(asked)}") from None
        if not all(0 <= d < K for d in clusters):
            raise ValueError(f"--clusters {' '.join(asked)} is outside 0..{K - 1}; the run has K={K}")
        return clusters
    return usage().argsort(descending=True)[: min(3, K)].tolist()


def add_arguments(p):
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="a trained UG-VAE or ML-VAE run")
    p.add_argument(
        "--clusters",
        nargs="+",
        default=None,
        metavar="D",
        help="clusters to draw, or 'all'; None: the 3 most used on the test split",
    )
    p.add_argument("--rows", type=int, default=7, help="beta values per grid")
    p.add_argument("--cols", type=int, default=7, help="z values per grid")
    p.add_argument("--beta-range", type=float, default=1.0, help="beta goes from -R to +R")
    p.add_argument("--z-range", type=float, default=3.0, help="z goes from mu_z - R to mu_z + R")
    p.add_argument(
        "--beta-centre",
        choices=("prior", "posterior"),
        default="prior",
        help="rows around 0 (the paper's) or around the mean of q(beta|X) of random test groups",
    )
    p.add_argument("--data-dir", default=None, help="where the dataset is found; None: the run's")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")


def grid_panels(model, guide, config, args) -> dict:
    """title -> (cluster or None, file name): the chosen clusters of UG-VAE, or ML-VAE's one grid."""
    if not model.has_mixture:  # ML-VAE: one grid around the standard normal prior of z
        return {f"{config.train_cfg.model}, z around 0": (None, "grid.png")}

    def usage():
        return cluster_usage(guide, test_images(config, args))

    return {f"cluster {d}": (d, f"cluster_{d}.png") for d in choose_clusters(args.clusters, config.model_cfg.K, usage)}


def test_images(config, args) -> torch.Tensor:
    train_cfg = config.train_cfg
    return load_dataset(train_cfg.dataset, "test", args.data_dir or train_cfg.data_dir, train_cfg.image_size).images


@torch.no_grad()
def posterior_centre(guide, images: torch.Tensor, group_size: int) -> torch.Tensor:
    """Mean over random test groups of the mean of q(beta | X)."""

    device = next(guide.parameters()).device
    x = to_unit_float(images[fixed_groups(len(images), group_size)]).to(device)
    return guide.global_posterior(x).loc.mean(0)


def save_summary(path: str, grids: dict, cols: int, label: str):
    """Up to three grids side by side, as in fig. 3."""
    shown = list(grids.items())[:3]
    fig, axes = plt.subplots(1, len(shown), figsize=(3.6 * len(shown), 3.9), squeeze=False)
    for ax, (title, images) in zip(axes[0], shown):
        show_grid(ax, images.flatten(0, 1), nrow=cols, title=title)
    axes[0][0].set_ylabel(label)
    save_figure(fig, path)


def run(args) -> int:
    if args.rows < 2 or args.cols < 2:
        raise ValueError(f"--rows and --cols must be >= 2, got {args.rows} and {args.cols}")
    config = load_run(args.run, args.device)
    model, guide = config.model, config.guide
    if not guide.has_global_latent:
        raise RunError(
            f"the {config.train_cfg.model} run has no global latent beta to interpolate; pass a ugvae or mlvae run"
        )
    out = experiment_dir(args.run, "interpolation")
    ranges = {"beta_range": args.beta_range, "z_range": args.z_range}
    centre = None
    if args.beta_centre == "posterior":
        centre = posterior_centre(guide, test_images(config, args), config.train_cfg.group_size)
    grids, results = {}, []
    for title, (d, filename) in grid_panels(model, guide, config, args).items():
        grids[title] = images = interpolation_grid(model, d, args.rows, args.cols, beta_centre=centre, **ranges)
        z_centre = "0" if d is None else "mu_z"
        save_grid(
            os.path.join(out, filename),
            images.flatten(0, 1),
            nrow=args.cols,
            title=title,
            xlabel=f"z: {z_centre} - {args.z_range:g} to {z_centre} + {args.z_range:g}",
            ylabel=row_label(args),
        )
        results.append({"cluster": d, "file": filename, **grid_effects(images)})
    save_summary(os.path.join(out, "summary.png"), grids, args.cols, row_label(args))
    save_json(
        os.path.join(out, "interpolation.json"),
        {
            "run": args.run,
            "step": config.step,  # the checkpoint these figures were drawn from
            "model": config.train_cfg.model,
            "rows": args.rows,
            "cols": args.cols,
            **ranges,
            "beta_centre": None if centre is None else centre.tolist(),
            "grids": results,
        },
    )
    for r in results:
        print(f"{r['file']}: beta effect {r['beta_effect']:.4f}, z effect {r['z_effect']:.4f}")
    print(f"wrote {out}")
    return 0
