"""Global/local interpolation grids: what beta and z each control (section 4.1, fig. 3; fig. 4 for ML-VAE).

Row r moves beta diagonally across the prior's unit ball, beta_r = t_r (1, ..., 1) with t_r
from -1 to +1; column c moves z diagonally around the cluster's prior mean given beta,

    z_rc = mu_z^(d)(beta_r) + s_c (1, ..., 1),   s_c from -3 to +3,   mu_z^(d) of eq. 3,

and each cell shows the decoder's mean image for (z_rc, beta_r); d plays no other role, since
both latents are set by hand. `beta_centre="posterior"` moves the rows around the mean of
q(beta | X) over random test groups instead of 0: trained runs put that mean far from the
prior's centre (|mu| of about 2 per dim on MNIST), where the paper's diagonal never passes.
The components are the model's own (model/base.py `prior_components`): ML-VAE's prior on z is
a mixture of one, N(0, I), so its one grid, cluster 0, is centred at 0.

Writes cluster_D.png per chosen cluster, summary.png (up to three grids side by side) and
interpolation.json to a new RUN/experiments/interpolation[-n]/ (whole or absent). The JSON
reports the mean absolute pixel change between neighbouring rows (what beta changes) and
between neighbouring columns (what z changes) of each grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch

from ..data import load_dataset, seeded_partition, to_unit_float
from ..errors import ConfigError
from ..progress import progress
from ..settings import Settings, setting
from ..trained import Run
from ..trained.diagnostics import cluster_probabilities
from ..trained.evaluation import cluster_usage
from ..trained.inference import require_global_latent
from ..trained.outputs import OutputFolder
from .plotting import save_figure, save_grid, save_json, show_grid

NAME = "interpolation"


MAX_STEPS = 64  # rows or columns of a grid


@dataclass(frozen=True)
class InterpolationSettings(Settings):
    clusters: list[int | str] | None = setting(
        None, "clusters to draw, or 'all'", default_is="the 3 most used on the test split", metavar="D"
    )
    rows: int = setting(7, "beta values per grid", at_least=2, at_most=MAX_STEPS)
    cols: int = setting(7, "z values per grid", at_least=2, at_most=MAX_STEPS)
    beta_range: float = setting(1.0, "beta goes from -R to +R", above=0, metavar="R")
    z_range: float = setting(3.0, "z goes from mu_z - R to mu_z + R", above=0, metavar="R")
    beta_centre: str = setting(
        "prior",
        "rows around 0 (the paper's) or around the mean of q(beta|X) of random test groups",
        choices=("prior", "posterior"),
    )
    data_dir: str | None = setting(None, "where the dataset is found", default_is="the run's own")


@dataclass
class InterpolationResult:
    out_dir: str
    files: list[str]
    grids: list[dict]  # per grid: cluster (None for ML-VAE), file, beta_effect, z_effect
    step: int  # the checkpoint the grids were drawn from


def interpolation(run: Run, settings: InterpolationSettings | None = None) -> InterpolationResult:
    """Global/local interpolation grids (section 4.1, fig. 3; fig. 4 for an ML-VAE run).

    Row r moves beta along the diagonal of the prior's unit ball (or around E q(beta | X) with
    ``beta_centre="posterior"``); column c moves z around the cluster's prior mean given beta; each
    cell is the decoder's mean. Writes ``cluster_D.png`` per chosen cluster, ``summary.png`` and
    ``interpolation.json`` (the mean pixel change between neighbouring rows and columns) to a new
    ``RUN/experiments/interpolation[-n]/``.

    Parameters
    ----------
    run : Run
        A trained run (:func:`ugvae.load_run`). It needs a global latent (UG-VAE or ML-VAE).
    settings : InterpolationSettings, optional
        Default: ``InterpolationSettings()``.

    Returns
    -------
    InterpolationResult

    Raises
    ------
    RunError
        A run whose model has no global latent.
    """
    settings = settings or InterpolationSettings()
    model, guide = run.model, run.guide
    require_global_latent(run, "there is no beta to interpolate")
    folder = OutputFolder(run.path("experiments"), NAME, run_dir=run.run_dir)
    panels = grid_panels(run, settings)
    centre = None
    if settings.beta_centre == "posterior":
        centre = posterior_centre(guide, test_images(run, settings.data_dir), run.train_cfg.group_size)
    ranges = {"beta_range": settings.beta_range, "z_range": settings.z_range}
    label = row_label(settings)
    grids, results = {}, []
    with folder:
        for title, (d, filename) in progress(panels.items(), desc="interpolation grids", unit="grid"):
            grids[title] = images = interpolation_grid(
                model, d, settings.rows, settings.cols, beta_centre=centre, **ranges
            )
            save_grid(
                folder.file(filename),
                images.flatten(0, 1),
                nrow=settings.cols,
                title=title,
                xlabel=f"z: mu_z - {settings.z_range:g} to mu_z + {settings.z_range:g}",
                ylabel=label,
            )
            results.append({"cluster": d, "file": filename, **grid_effects(images)})
        save_summary(folder.file("summary.png"), grids, settings.cols, label)
        save_json(
            folder.file("interpolation.json"),
            {
                "run": run.run_dir,
                "step": run.step,  # the checkpoint these figures were drawn from
                "model": run.model_name,
                "rows": settings.rows,
                "cols": settings.cols,
                **ranges,
                "beta_centre": None if centre is None else centre.tolist(),
                "grids": results,
            },
        )
    return InterpolationResult(folder.path, folder.files, results, run.step)


def report(result: InterpolationResult) -> str:
    lines = [f"{r['file']}: beta effect {r['beta_effect']:.4f}, z effect {r['z_effect']:.4f}" for r in result.grids]
    return "\n".join(lines + [f"wrote {result.out_dir}"])


def row_label(settings: InterpolationSettings) -> str:
    around = "" if settings.beta_centre == "prior" else " around the posterior mean"
    return f"beta: -{settings.beta_range:g} to +{settings.beta_range:g} on every dim{around}"


def interpolation_latents(
    model,
    cluster: int,
    rows: int,
    cols: int,
    beta_range: float = 1.0,
    z_range: float = 3.0,
    beta_centre: torch.Tensor | None = None,
):
    """z (rows, cols, z_dim) and beta (rows, cols, beta_dim) of the grid around component `cluster`."""
    cfg, device = model.cfg, model.device
    t = torch.linspace(-beta_range, beta_range, rows, device=device)
    beta = t[:, None] * torch.ones(cfg.beta_dim, device=device)
    if beta_centre is not None:
        beta = beta + beta_centre.to(device)
    centre = model.prior_components(beta).loc[:, cluster]  # (rows, K, z_dim) -> mu_z^(d)(beta_r)
    s = torch.linspace(-z_range, z_range, cols, device=device)
    z = centre[:, None, :] + s[None, :, None]
    return z, beta[:, None, :].expand(rows, cols, cfg.beta_dim)


@torch.no_grad()
def interpolation_grid(model, cluster: int, rows: int, cols: int, **ranges) -> torch.Tensor:
    """Decoded images (rows, cols, C, H, W) of the grid."""
    return model.decode(*interpolation_latents(model, cluster, rows, cols, **ranges))


def grid_effects(images: torch.Tensor) -> dict:
    """Mean absolute pixel change between neighbouring rows (beta) and columns (z)."""
    return {
        "beta_effect": float((images[1:] - images[:-1]).abs().mean()),
        "z_effect": float((images[:, 1:] - images[:, :-1]).abs().mean()),
    }


def cluster_shares(guide, images: torch.Tensor) -> torch.Tensor:
    """Share of the images per cluster (K,): the mean of q(d|z) at z = E q(z|x) (evaluation's usage)."""
    return torch.tensor(cluster_usage(cluster_probabilities(guide, images))["cluster_shares"])


def choose_clusters(asked: list[str | int] | None, K: int, usage) -> list[int]:
    """`all`, explicit cluster numbers, or by default the three clusters the test images use most."""
    if (asked is not None and [str(a) for a in asked] == ["all"]) or (asked is None and K <= 3):
        return list(range(K))
    if asked:
        try:
            clusters = [int(a) for a in asked]
        except ValueError:
            raise ConfigError(f"`clusters` takes cluster numbers or 'all', got {' '.join(map(str, asked))}") from None
        if not all(0 <= d < K for d in clusters):
            raise ConfigError(f"`clusters` {' '.join(map(str, asked))} is outside 0..{K - 1}; the run has K={K}")
        return clusters
    return usage().argsort(descending=True)[: min(3, K)].tolist()


def grid_panels(run: Run, settings: InterpolationSettings) -> dict:
    """title -> (cluster, file name) of the chosen components of p(z | d, beta)."""

    def usage():
        return cluster_shares(run.guide, test_images(run, settings.data_dir))

    clusters = choose_clusters(settings.clusters, run.model.num_components, usage)
    return {f"cluster {d}": (d, f"cluster_{d}.png") for d in clusters}


def test_images(run: Run, data_dir: str | None) -> torch.Tensor:
    train_cfg = run.train_cfg
    return load_dataset(train_cfg.dataset, "test", data_dir or train_cfg.data_dir, train_cfg.image_size).images


@torch.no_grad()
def posterior_centre(guide, images: torch.Tensor, group_size: int) -> torch.Tensor:
    """Mean over random test groups of the mean of q(beta | X)."""
    device = next(guide.parameters()).device
    x = to_unit_float(images[seeded_partition(len(images), group_size)]).to(device)
    return guide.global_posterior(x).loc.mean(0)


def save_summary(path: str, grids: dict, cols: int, label: str):
    """Up to three grids side by side, as in fig. 3."""
    shown = list(grids.items())[:3]
    fig, axes = plt.subplots(1, len(shown), figsize=(3.6 * len(shown), 3.9), squeeze=False)
    for ax, (title, images) in zip(axes[0], shown):
        show_grid(ax, images.flatten(0, 1), nrow=cols, title=title)
    axes[0][0].set_ylabel(label)
    save_figure(fig, path)
