"""Unsupervised domain alignment (section 4.2, figs. 5-6): does beta find the domain of a group?

The run was trained on groups that mix two datasets A and B at random, without domain labels.
Test groups built with the labels then probe the global space. With beta_k = E q(beta | X_k), the
product-of-Gaussians mean of eq. 8-9 for a pure group X_k, and z_k = E q(z | x_k) (eq. 6) for one
image x_k of that group, the grids decode

    x(s, t) = E p(x | z = (1-t) z_1 + t z_2, beta = (1-s) beta_1 + s beta_2),  s (rows), t (columns) in [0, 1]

(d plays no part: z is given). Files in a new RUN/experiments/domain-alignment[-n]/ (whole or absent):

    cross_domain.png    (a) fig. 5a/6: x_1 from a pure-A group, x_2 from a pure-B group
    within_domain.png   (b) fig. 5c: x_1, x_2 from two pure-A groups
    beta_tsne.png       (c) fig. 5b: t-SNE of E q(beta | X) of pure-A, pure-B and mixed groups,
                        with the beta paths of (a) and (b)
    domain_alignment.json  (d) 5-fold cross-validated accuracy of a logistic regression telling
                        pure-A from pure-B groups by their code, per group size, for this run, each
                        of `baseline_runs`, an untrained encoder of the same architecture and the group's
                        mean image. A model without a global latent (VAE) is coded by its groups'
                        mean of E q(z | x). Also the mean absolute pixel change from x(0, t) to
                        x(1, t) and from x(s, 0) to x(s, 1) of each grid: how much the decoder
                        listens to beta and to z.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..data import ImageSet, load_dataset, mixed_class_groups, structured_groups, to_unit_float
from ..errors import ConfigError, RunError
from ..progress import progress
from ..settings import Settings, seed_setting, setting
from ..trained import Run, load_run
from ..trained.config import MAX_GROUP_SIZE
from ..trained.inference import MAX_GROUPS, require_global_latent
from ..trained.outputs import OutputFolder
from .group_features import encode_groups, untrained_guide
from .plotting import save_figure, save_json, show_grid

NAME = "domain-alignment"


@dataclass(frozen=True)
class DomainAlignmentSettings(Settings):
    baseline_runs: list[str] = setting(
        [],
        "runs of other models (VAE, ML-VAE) on the same data, for the accuracy table",
        "--baseline-runs",
        old_flags=("--baseline-run",),
        metavar="RUN_DIR",
    )
    split: str = setting("test", "images the groups are drawn from", choices=("train", "test"))
    num_groups: int = setting(100, "groups of each kind: pure A, pure B, mixed", at_least=2, at_most=MAX_GROUPS)
    group_size: int | None = setting(
        None, "B of the figures", "--group-size", "-B", at_least=1, at_most=MAX_GROUP_SIZE, default_is="the run's B"
    )
    probe_sizes: list[int] | None = setting(
        None,
        "group sizes of the accuracy table",
        at_least=1,
        at_most=MAX_GROUP_SIZE,
        default_is="1, 8 and --group-size",
        metavar="B",
    )
    steps: int = setting(7, "interpolation steps along beta and along z", at_least=2, at_most=64)
    seed: int = seed_setting("seed of the groups, t-SNE and folds")


@dataclass
class DomainAlignmentResult:
    out_dir: str
    files: list[str]
    domains: list[str]  # the short names of A and B
    probe_sizes: list[int]
    accuracy_table: list[dict]  # per code: model, run, code, accuracy and accuracy_std per probe size
    changes: dict  # per interpolation figure: mean absolute pixel change along beta and along z


def domain_alignment(run: Run, settings: DomainAlignmentSettings | None = None) -> DomainAlignmentResult:
    """Unsupervised domain alignment (section 4.2, figs. 5-6): does beta find the domain of a group?

    For a run trained on random groups of an ``A+B`` mixture: grids decoding interpolations of beta
    and z between a pure-A and a pure-B group (``cross_domain.png``) and within A
    (``within_domain.png``), a t-SNE of E q(beta | X) of pure and mixed groups (``beta_tsne.png``),
    and the cross-validated accuracy of telling pure-A from pure-B groups by their code
    (``domain_alignment.json``), in a new ``RUN/experiments/domain-alignment[-n]/``.

    Parameters
    ----------
    run : Run
        A trained run (:func:`ugvae.load_run`). It must be trained on a mixture ``A+B``.
    settings : DomainAlignmentSettings, optional
        Default: ``DomainAlignmentSettings()``.

    Returns
    -------
    DomainAlignmentResult

    Raises
    ------
    RunError
        A run not trained on a mixture, or without a global latent where one is needed.
    """
    settings = settings or DomainAlignmentSettings()
    require_global_latent(
        run, "there is no beta to interpolate", "pass a UG-VAE or ML-VAE run, and this one in `baseline_runs`"
    )
    train_cfg = run.train_cfg
    data = load_domains(run, settings.split)
    names = [short_name(n) for n in data.domain_names]
    B = settings.group_size or train_cfg.group_size
    folder = OutputFolder(run.path("experiments"), NAME, run_dir=run.run_dir)
    groups = domain_groups(data.domains, settings.num_groups, B, train_cfg.mix, settings.seed)
    sizes = sorted(set(settings.probe_sizes or (1, 8, B)))
    with folder:
        changes = draw_figures(run, data.images, groups, names, folder, settings)
        rows = accuracy_table(run, data, sizes, settings)
        save_json(
            folder.file("domain_alignment.json"),
            {
                "run": run.run_dir,
                "step": run.step,  # the checkpoint these numbers were computed from
                "dataset": train_cfg.dataset,
                "split": settings.split,
                "domains": data.domain_names,
                "group_size": B,
                "num_groups": settings.num_groups,
                "mix_of_mixed_groups": train_cfg.mix,
                "classifier": "standardised logistic regression, stratified 5-fold cross-validation, pure A vs pure B",
                "interpolation_mean_abs_pixel_change": changes,
                "accuracy_table": rows,
            },
        )
    return DomainAlignmentResult(folder.path, folder.files, names, sizes, rows, changes)


def report(result: DomainAlignmentResult) -> str:
    a, b = result.domains
    lines = [f"accuracy telling pure {a} from pure {b} groups, at group sizes {result.probe_sizes}:"]
    for row in result.accuracy_table:
        cells = "  ".join(f"{row['accuracy'][s]:.3f}" for s in result.probe_sizes)
        lines.append(f"  {cells}  {row['model']}, {row['code']}")
    return "\n".join(lines + [f"figures and numbers in {result.out_dir}"])


FIGURES = ("cross_domain.png", "within_domain.png", "beta_tsne.png")


def domain_groups(domains: torch.Tensor, num_groups: int, group_size: int, mix: float, seed: int) -> dict:
    """(num_groups, group_size) indices of pure-A (domain 0), pure-B (domain 1) and mixed groups."""
    return {
        "A": structured_groups(domains, [0], num_groups, group_size, seed),
        "B": structured_groups(domains, [1], num_groups, group_size, seed + 1),
        "mixed": mixed_class_groups(domains, [0], [1], mix, num_groups, group_size, seed + 2),
    }


def as_float(images: torch.Tensor, idx: torch.Tensor, device) -> torch.Tensor:
    return to_unit_float(images[idx]).to(device)


def mean_images(images: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """(num_groups, C*H*W): the reference code that needs no model at all."""
    return torch.stack([to_unit_float(images[idx]).mean(0).flatten() for idx in groups])


def domain_accuracy(codes_a: torch.Tensor, codes_b: torch.Tensor, seed: int = 0, folds: int = 5):
    """Mean and std over stratified folds of a standardised logistic regression's test accuracy."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folds = min(folds, len(codes_a), len(codes_b))
    if folds < 2:
        raise ConfigError(
            f"the accuracy needs at least 2 groups of each domain, got {len(codes_a)} and {len(codes_b)}; "
            "draw more groups"
        )
    features = torch.cat([codes_a, codes_b]).double().numpy()
    labels = np.r_[np.zeros(len(codes_a)), np.ones(len(codes_b))]
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    scores = cross_val_score(classifier, features, labels, cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    return float(scores.mean()), float(scores.std())


@torch.no_grad()
def interpolation(model, guide, x_1: torch.Tensor, x_2: torch.Tensor, steps: int):
    """Images (steps * steps, C, H, W) of x(s, t) and the beta path (steps, beta_dim).

    beta_k is the posterior mean of group x_k (B, C, H, W), z_k that of the group's first image.
    """
    (beta_1, beta_2), _ = guide.global_posterior(torch.stack([x_1, x_2]))
    z_1, z_2 = guide.local_posterior(torch.stack([x_1[:1], x_2[:1]])).z_loc[:, 0]
    s = torch.linspace(0, 1, steps, device=beta_1.device)[:, None]
    betas, zs = (1 - s) * beta_1 + s * beta_2, (1 - s) * z_1 + s * z_2
    images = model.decode(zs[None, :, :], betas[:, None, :])  # rows: beta, columns: z
    return images.reshape((-1,) + images.shape[2:]), betas


def endpoint_changes(grid: torch.Tensor) -> dict:
    """How far the decoded image moves from beta_1 to beta_2 (fixed z) and from z_1 to z_2 (fixed beta).

    A decoder that ignores beta moves along z only, whatever the t-SNE of beta shows.
    """
    return {
        "beta_1 -> beta_2": float((grid[-1] - grid[0]).abs().mean()),
        "z_1 -> z_2": float((grid[:, -1] - grid[:, 0]).abs().mean()),
    }


def save_interpolation(path: str, sources: torch.Tensor, grid: torch.Tensor, steps: int, title: str):
    fig, (ax_sources, ax_grid) = plt.subplots(
        1, 2, figsize=(1.2 + 0.55 * steps, 0.7 + 0.55 * steps), gridspec_kw={"width_ratios": [1, steps]}
    )
    show_grid(ax_sources, sources, nrow=1, title="x_1, x_2")
    show_grid(ax_grid, grid, nrow=steps, title=title)
    ax_grid.set_xlabel("z: z_1 -> z_2"), ax_grid.set_ylabel("beta: beta_1 -> beta_2")
    save_figure(fig, path)


def save_tsne(path: str, codes: dict, paths: dict, names: list[str], seed: int):
    """2-D t-SNE of all group codes and path points together (t-SNE cannot place new points later)."""
    from sklearn.manifold import TSNE

    parts = list(codes.values()) + list(paths.values())
    points = torch.cat(parts).double().numpy()
    perplexity = min(30.0, (len(points) - 1) / 3)
    embedded = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)
    pieces = np.split(embedded, np.cumsum([len(p) for p in parts])[:-1])
    fig, ax = plt.subplots(figsize=(5.5, 5))
    styles = {
        "A": dict(marker="s", c="tab:blue", label=f"pure {names[0]}"),
        "B": dict(marker="^", c="tab:green", label=f"pure {names[1]}"),
        "mixed": dict(marker="o", c="0.6", label="mixed"),
    }
    for kind, xy in zip(codes, pieces):
        ax.scatter(xy[:, 0], xy[:, 1], s=14, alpha=0.7, **styles[kind])
    for (label, colour), xy in zip(zip(paths, ("tab:orange", "tab:brown")), pieces[len(codes) :]):
        ax.plot(xy[:, 0], xy[:, 1], "-o", c=colour, ms=4, lw=1.5, label=label)
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title("t-SNE of E q(beta | X) per group")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def short_name(dataset: str) -> str:
    """'folder:/data/3d-chairs/' -> '3d-chairs', for legends and titles."""
    key, _, path = dataset.partition(":")
    return os.path.basename(path.rstrip("/")) if key == "folder" and path else dataset


def load_domains(run: Run, split: str) -> ImageSet:
    """The `split` of the run's A+B mixture, with the domain of each image."""
    train_cfg = run.train_cfg
    data = load_dataset(train_cfg.dataset, split, train_cfg.data_dir, train_cfg.image_size)
    if data.domains is None or len(data.domain_names) != 2:
        raise RunError(
            f"run {run.run_dir} was trained on '{train_cfg.dataset}', not on two datasets; "
            "train on a mixture such as mnist+fashion-mnist"
        )
    return data


def draw_figures(
    run: Run, images: torch.Tensor, groups: dict, names: list[str], folder: OutputFolder, settings
) -> dict:
    """Figures (a), (b) and (c) in `folder`; returns the pixel changes along beta and z of (a) and (b)."""
    model, guide, device, steps = run.model, run.guide, run.device, settings.steps
    codes = {kind: encode_groups(guide, images, idx).loc for kind, idx in groups.items()}
    pairs = {
        f"(a) {names[0]} -> {names[1]}": (FIGURES[0], groups["A"][0], groups["B"][0]),
        f"(b) {names[0]} -> {names[0]}": (FIGURES[1], groups["A"][0], groups["A"][1]),
    }
    beta_paths, changes = {}, {}
    for label, (file, g_1, g_2) in pairs.items():
        x_1, x_2 = as_float(images, g_1, device), as_float(images, g_2, device)
        grid, beta_paths[label] = interpolation(model, guide, x_1, x_2, steps)
        changes[label] = endpoint_changes(grid.view((steps, steps) + grid.shape[1:]))
        save_interpolation(folder.file(file), torch.stack([x_1[0], x_2[0]]).cpu(), grid.cpu(), steps, label)
    paths = {k: v.cpu() for k, v in beta_paths.items()}
    save_tsne(folder.file(FIGURES[2]), codes, paths, names, settings.seed)
    return changes


def accuracy_table(run: Run, data: ImageSet, sizes: list[int], settings: DomainAlignmentSettings) -> list[dict]:
    """(d): this run, each baseline run, an untrained encoder and the group mean image, on the same groups."""
    images, device, seed = data.images, run.device, settings.seed
    probes = {
        size: domain_groups(data.domains, settings.num_groups, size, run.train_cfg.mix, seed + 10 * size)
        for size in sizes
    }
    codes = [(run.model_name, run.run_dir, run.guide)]
    for baseline_dir in settings.baseline_runs:
        other = load_run(baseline_dir, str(device))
        if other.model_cfg.x_shape != run.model_cfg.x_shape:
            raise RunError(
                f"`baseline_runs`: {baseline_dir} takes images {other.model_cfg.x_shape}, not "
                f"{run.model_cfg.x_shape}; train it on the same dataset as {run.run_dir}"
            )
        codes.append((other.model_name, baseline_dir, other.guide))
    untrained = untrained_guide(run.model_cfg, run.model_name, run.guide_name, seed).to(device)
    codes.append((f"untrained {run.model_name}", None, untrained))
    codes.append(("none", None, None))
    rows = []
    with progress(total=len(codes) * len(sizes), desc="domain accuracy", unit="probe") as bar:
        for label, run_dir, guide in codes:
            accuracy, spread, code = {}, {}, "group mean image"
            for size, groups in probes.items():
                if guide is None:
                    a, b = mean_images(images, groups["A"]), mean_images(images, groups["B"])
                else:
                    (a, _, code), (b, _, _) = (encode_groups(guide, images, groups[k]) for k in ("A", "B"))
                accuracy[size], spread[size] = domain_accuracy(a, b, seed)
                bar.update()
            rows.append({"model": label, "run": run_dir, "code": code, "accuracy": accuracy, "accuracy_std": spread})
    return rows
