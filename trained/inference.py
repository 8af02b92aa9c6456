"""What a trained run computes for new data: embeddings, new groups of images, reconstructions.

    embed        q(beta | X) of every group (eq. 8-9, a product of per-image Gaussians, so a group
                 may hold any number of images) and q(z | x), q(d | z) of every image (eq. 6-7)
    sample       new groups from the generative program (eq. 1-4) run with no data under
                 `poutine.trace`: beta ~ p(beta) once per group, or fixed with `poutine.condition`
                 to E q(beta | X) of a set ("more images like this set"); then d, z per image, and
                 each image the decoder's mean for (z, beta)
    reconstruct  the decoder's mean at the posterior means of z and beta
    posteriors   the guide's summaries of groups, None where the model has no such latent: the
                 one place that asks whether there is a beta, so callers never ask a model's kind
    group_code   a group's code: q(beta | X), or the mean of its members' codes without a beta

Images are floats in [0, 1] shaped (G, B, C, H, W), or (B, C, H, W) for one group, or a folder
of image sets: each sub-folder one group of any size (a flat folder is cut into groups of B).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyro
import torch
from pyro import poutine

from ..data import ImageGroups, folder_groups, load_dataset, to_unit_float
from ..data.folder import consecutive
from ..errors import ConfigError, DataError, RunError
from ..progress import plural, progress
from ..settings import Settings, seed_setting, setting
from .config import MAX_GROUP_SIZE
from .diagnostics import beta_inactive_notice

logger = logging.getLogger(__name__)
GROUPS_PER_PASS = 64  # equal-sized groups embedded in one call
MAX_GROUPS = 2**16  # groups drawn at once
# More pixels than this in one call would be a memory error, not a figure anyone looks at.
MAX_SAMPLED_PIXELS = 2**31


@dataclass(frozen=True)
class EmbedArguments(Settings):
    """How `Run.embed` cuts images into groups; the `embed` command adds its sources and output."""

    group_size: int | None = setting(
        None,
        "images per group of a split or flat folder",
        "--group-size",
        "-B",
        at_least=1,
        at_most=MAX_GROUP_SIZE,
        default_is="the run's B",
    )


@dataclass(frozen=True)
class SampleArguments(Settings):
    """What `Run.sample` draws; the `sample` command adds where its files go."""

    num_groups: int | None = setting(
        None,
        "groups to draw, one row each",
        at_least=1,
        at_most=MAX_GROUPS,
        default_is="4 from the prior, 1 per set of --beta-from",
        old_flags=("--groups",),
    )
    group_size: int = setting(8, "B: images per group", "--group-size", "-B", at_least=1, at_most=MAX_GROUP_SIZE)
    beta_from: str | None = setting(
        None,
        "fix beta to E q(beta|X) of this folder's set(s): one set per sub-folder",
        default_is="beta ~ p(beta)",
        metavar="FOLDER",
    )
    # None continues the global random stream (Run.sample's default); the command draws from 0.
    seed: int | None = seed_setting("random seed of the draws")


class Posteriors(NamedTuple):
    """The guide's summaries of groups x (G, B, C, H, W): z_loc, z_scale (G, B, z_dim), pi (G, B, K),
    beta_loc, beta_scale (G, beta_dim); None for what the model does not have."""

    z_loc: torch.Tensor
    z_scale: torch.Tensor
    pi: torch.Tensor | None
    beta_loc: torch.Tensor | None
    beta_scale: torch.Tensor | None


@torch.no_grad()
def posteriors(guide, x: torch.Tensor) -> Posteriors:
    """q(z | x), q(d | z) at z = E q(z | x), and q(beta | X) where there is a beta."""
    local = guide.local_posterior(x)
    has_beta = guide.has_global_latent  # model-kind branch 1 of 3: the one place that asks for a beta
    beta = guide.global_posterior(x) if has_beta else (None, None)  # callers read None where there is none
    return Posteriors(*local, *beta)


class GroupCode(NamedTuple):
    """A group's code, loc and scale (G, D), and what it is (`description`)."""

    loc: torch.Tensor
    scale: torch.Tensor
    description: str


@torch.no_grad()
def group_code(guide, x: torch.Tensor) -> GroupCode:
    """q(beta | X) (eq. 8-9) of each group x (G, B, C, H, W); for a model without a beta, the mean
    of its members' codes z_i ~ q(z_i | x_i), independent: N(mean_i mu_i, sum_i sigma_i^2 / B^2)."""
    p = posteriors(guide, x)
    if p.beta_loc is not None:
        return GroupCode(p.beta_loc, p.beta_scale, "E q(beta|X)")
    B = p.z_loc.shape[-2]
    return GroupCode(p.z_loc.mean(-2), p.z_scale.pow(2).sum(-2).sqrt() / B, "group mean of E q(z|x)")


def require_global_latent(run, consequence: str, fix: str = "pass a UG-VAE or ML-VAE run") -> None:
    """Refuse, by name, a command that needs a beta on a run whose model has none."""
    if not run.model.has_global_latent:  # model-kind branch 2 of 3: refusals of what needs a beta
        raise RunError(f"the {run.model_name} run {run.run_dir} has no global latent beta, so {consequence}; {fix}")


@dataclass
class Embeddings:
    """What :meth:`Run.embed` returns, and ``ugvae embed`` writes to embeddings.npz (NumPy arrays).

    Attributes
    ----------
    beta_loc, beta_scale : numpy.ndarray or None
        (G, beta_dim): q(beta | X) of each group; None for a model without a global latent.
    group_id, group_source, group_size : numpy.ndarray
        (G,): each group's number, where it came from (its sub-folder, or an index range), and
        its number of images.
    z_loc, z_scale : numpy.ndarray
        (N, z_dim): q(z | x) of each image.
    pi : numpy.ndarray or None
        (N, K): q(d | z) at z_loc; None for a model without clusters.
    sample_group, sample_name, sample_index : numpy.ndarray
        (N,): the group_id of each image's group, its file (relative to the folder) or
        ``split[index]``, and its dataset index (-1 for a file).
    notice : str or None
        What the reader skipped, when it skipped anything.
    """

    group_id: np.ndarray
    group_source: np.ndarray
    group_size: np.ndarray
    z_loc: np.ndarray
    z_scale: np.ndarray
    sample_group: np.ndarray
    sample_name: np.ndarray
    sample_index: np.ndarray
    pi: np.ndarray | None = None
    beta_loc: np.ndarray | None = None
    beta_scale: np.ndarray | None = None
    notice: str | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays of embeddings.npz (those the model has)."""
        return {k: v for k, v in vars(self).items() if isinstance(v, np.ndarray)}


def image_groups(run, images, group_size: int | None = None) -> ImageGroups:
    """`images` (a folder, or a float tensor of one or several groups) as ImageGroups of the run."""
    if isinstance(images, (str, os.PathLike)):
        if not os.fspath(images):
            raise ConfigError("`images` is an empty path; pass a folder of images, or a tensor")
        return folder_groups(images, run.model_cfg.x_shape, group_size)
    images = run_images(run, images)
    if images.dtype != torch.uint8:
        images = (images * 255).round().to(torch.uint8)
    G, B = images.shape[:2]
    members = list(torch.arange(G * B).view(G, B))
    names = [f"images[{g}, {b}]" for g in range(G) for b in range(B)]
    return ImageGroups(images.flatten(0, 1), members, [f"images[{g}]" for g in range(G)], names, [-1] * (G * B))


def run_images(run, images) -> torch.Tensor:
    """`images` as groups (G, B, C, H, W) of the run's image shape, checked: uint8 pixels, or floats
    in [0, 1] (a DataError naming the fix otherwise); one group may come as (B, C, H, W)."""
    if not isinstance(images, torch.Tensor):
        raise DataError(f"images must be a folder or a tensor, got {type(images).__name__}")
    if images.dim() == 4:
        images = images.unsqueeze(0)
    shape = tuple(images.shape[2:]) if images.dim() == 5 else None
    if shape != run.model_cfg.x_shape or images.numel() == 0:
        sizes = ", ".join(str(side) for side in run.model_cfg.x_shape)
        raise DataError(
            f"images must be shaped (G, B, {sizes}) or (B, {sizes}) with G, B >= 1, got {tuple(images.shape)}; "
            "resize them to the run's image size"
        )
    if images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise DataError(f"images must be floats in [0, 1] or uint8 pixels, got {images.dtype}")
    lo, hi = torch.aminmax(images)
    if not (lo >= 0 and hi <= 1):  # also false for NaN
        raise DataError(
            f"images must hold values in [0, 1], got min {lo.item():g} and max {hi.item():g}; "
            "divide 0..255 pixels by 255 and remove NaN"
        )
    return images


def split_groups(run, split: str, group_size: int, data_dir: str | None = None) -> ImageGroups:
    """The run's own dataset split, cut in order into groups of `group_size` (the last may be smaller)."""
    cfg = run.train_cfg
    data = load_dataset(cfg.dataset, split, data_dir or cfg.data_dir, cfg.image_size, download=False)
    members = consecutive(len(data), group_size)
    sources = [f"{split}[{int(m[0])}:{int(m[-1]) + 1}]" for m in members]
    return ImageGroups(
        data.images, members, sources, [f"{split}[{i}]" for i in range(len(data))], list(range(len(data)))
    )


def embed(run, images, group_size: int | None = None) -> Embeddings:
    EmbedArguments(group_size)
    groups = image_groups(run, images, group_size or run.train_cfg.group_size)
    if groups.notice:
        logger.warning(groups.notice)
    warn_if_beta_inactive(run, EMBED_CONSEQUENCE)
    return embed_groups(run.model, run.guide, groups, run.device)


EMBED_CONSEQUENCE = "every group's beta_loc is about the same and tells little about the group"
SAMPLE_CONSEQUENCE = (
    "the rows drawn with the beta of a set look like the rows drawn from p(beta), not like the set; "
    "train on groups that share something (`groups` labels:ALPHA) for beta to carry it"
)


def warn_if_beta_inactive(run, consequence: str) -> None:
    """One warning when the run's last diagnostics found beta inactive, saying what that means here."""
    if run.run_dir is not None and (notice := beta_inactive_notice(run.run_dir, consequence)):
        logger.warning(notice)


@torch.no_grad()
def embed_groups(model, guide, groups: ImageGroups, device="cpu") -> Embeddings:
    """The Embeddings of every group of `groups`."""
    n = len(groups.images)
    z_loc, z_scale, pi = [None] * n, [None] * n, [None] * n
    beta_loc, beta_scale = [None] * len(groups.members), [None] * len(groups.members)
    # Groups of one size go through the guide together; sizes differ only between sub-folders.
    by_size: dict[int, list[int]] = {}
    for g, m in enumerate(groups.members):
        by_size.setdefault(len(m), []).append(g)
    chunks = [ids[i : i + GROUPS_PER_PASS] for ids in by_size.values() for i in range(0, len(ids), GROUPS_PER_PASS)]
    for chunk in progress(chunks, desc="embedding", unit="pass"):
        idx = torch.stack([groups.members[g] for g in chunk])
        p = posteriors(guide, to_unit_float(groups.images[idx].to(device)))
        for row, g in enumerate(chunk):
            for col, i in enumerate(groups.members[g].tolist()):
                z_loc[i], z_scale[i] = p.z_loc[row, col].cpu(), p.z_scale[row, col].cpu()
                pi[i] = None if p.pi is None else p.pi[row, col].cpu()
            if p.beta_loc is not None:
                beta_loc[g], beta_scale[g] = p.beta_loc[row].cpu(), p.beta_scale[row].cpu()
    sample_group = np.empty(n, dtype=np.int64)
    for g, m in enumerate(groups.members):
        sample_group[m.numpy()] = g
    return Embeddings(
        group_id=np.arange(len(groups.members)),
        group_source=np.array(groups.sources),
        group_size=np.array([len(m) for m in groups.members]),
        z_loc=torch.stack(z_loc).numpy(),
        z_scale=torch.stack(z_scale).numpy(),
        sample_group=sample_group,
        sample_name=np.array(groups.names),
        sample_index=np.array(groups.indices, dtype=np.int64),
        pi=stacked(pi),
        beta_loc=stacked(beta_loc),
        beta_scale=stacked(beta_scale),
        notice=groups.notice,
    )


def stacked(rows: list) -> np.ndarray | None:
    """Rows of one array, or None where the model has no such latent (every row None)."""
    return None if rows[0] is None else torch.stack(rows).numpy()


@dataclass
class Samples:
    """What :meth:`Run.sample` returns, and ``ugvae sample`` writes to samples.npz.

    Attributes
    ----------
    images : torch.Tensor
        (N, B, C, H, W) in [0, 1]: each image the decoder's mean.
    beta : torch.Tensor
        (N, beta_dim): the beta each group shares.
    z : torch.Tensor
        (N, B, z_dim).
    d : torch.Tensor or None
        (N, B) clusters; None for a model without clusters.
    sources : list of str
        Per group, where its beta came from: ``"p(beta)"`` or the set's name.
    """

    images: torch.Tensor
    beta: torch.Tensor
    z: torch.Tensor
    d: torch.Tensor | None
    sources: list[str]

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays of samples.npz."""
        out = {k: getattr(self, k).cpu().numpy() for k in ("images", "beta", "z", "d") if getattr(self, k) is not None}
        return {**out, "group_source": np.array(self.sources)}


@torch.no_grad()
def sample_groups(model, num_groups: int, group_size: int, beta: torch.Tensor | None = None) -> Samples:
    """`num_groups` groups of `group_size` from the generative program; `beta` (num_groups,
    beta_dim) fixes each group's global latent, None draws each from p(beta)."""
    if num_groups < 1 or group_size < 1:
        raise DataError(f"`num_groups` and `group_size` must be >= 1, got {num_groups} and {group_size}")
    trace = prior_trace(model, num_groups, group_size, beta)
    nodes = trace.nodes
    d = nodes["d"]["value"] if "d" in nodes else None
    return Samples(
        nodes["x"]["fn"].mean, nodes["beta"]["value"][:, 0], nodes["z"]["value"], d, ["p(beta)"] * num_groups
    )


def prior_trace(model, num_groups: int, group_size: int, beta: torch.Tensor | None = None):
    """The generative program run with no data, under `poutine.trace`: every site of `num_groups`
    groups of `group_size`; `beta` (num_groups, beta_dim) fixes each group's global latent. The x
    site's distribution holds the decoder's mean images (its `.mean`, (G, B, C, H, W))."""
    program = model
    if beta is not None:
        # The beta site is (G, 1, beta_dim): one value per group, broadcast over its samples.
        program = poutine.condition(model, {"beta": beta.reshape(num_groups, 1, -1)})
    return poutine.trace(program).get_trace(None, num_groups=num_groups, group_size=group_size)


def sample(run, num_groups: int | None = None, group_size: int = 8, beta_from=None, seed: int | None = None) -> Samples:
    """Groups from p(beta), or `num_groups` (default 1) groups per set of `beta_from` (a folder whose
    sub-folders are sets, a folder that is one set, or images), each from its set's E q(beta | X)."""
    is_path = isinstance(beta_from, (str, os.PathLike))
    SampleArguments(num_groups, group_size, os.fspath(beta_from) if is_path else None, seed)
    model = run.model
    require_global_latent(run, "the images of a group would share nothing")
    if seed is not None:
        pyro.set_rng_seed(seed)
    if beta_from is None:
        check_pixels(run, num_groups or 4, group_size)
        return sample_groups(model, num_groups or 4, group_size)
    groups = set_groups(run, beta_from) if is_path else image_groups(run, beta_from)
    per_set = num_groups or 1
    check_pixels(run, len(groups.members) * per_set, group_size, f" ({plural(len(groups.members), 'set')})")
    warn_if_beta_inactive(run, SAMPLE_CONSEQUENCE)
    betas = [
        run.guide.global_posterior(to_unit_float(groups.images[m].to(run.device)).unsqueeze(0)).loc[0]
        for m in groups.members
    ]
    beta = torch.stack(betas).repeat_interleave(per_set, 0)
    drawn = sample_groups(model, len(beta), group_size, beta)
    drawn.sources = [source for source in groups.sources for _ in range(per_set)]
    return drawn


def check_pixels(run, num_groups: int, group_size: int, sets: str = "") -> None:
    """Refuse, before any draw, more than MAX_SAMPLED_PIXELS pixels in one call."""
    pixels = num_groups * group_size * run.model_cfg.x_dim
    if pixels > MAX_SAMPLED_PIXELS:
        raise ConfigError(
            f"{num_groups} groups{sets} x `group_size` {group_size} ask for {pixels:.3g} pixels, more than the "
            f"{MAX_SAMPLED_PIXELS:.3g} one call draws; lower `num_groups` or `group_size`"
        )


def set_groups(run, folder) -> ImageGroups:
    """A folder of sets (one per sub-folder), or a flat folder that is one set."""
    groups = folder_groups(folder, run.model_cfg.x_shape, field="beta_from")
    if groups.notice:
        logger.warning(groups.notice)
    if len(groups.members) == 1:
        groups.sources = [Path(folder).expanduser().resolve().name]
    return groups


@torch.no_grad()
def reconstruct(model, guide, x: torch.Tensor) -> torch.Tensor:
    """Mean reconstructions of groups x (G, B, C, H, W) from the posterior means."""
    p = posteriors(guide, x)
    return model.decode(p.z_loc, None if p.beta_loc is None else p.beta_loc.unsqueeze(-2))
