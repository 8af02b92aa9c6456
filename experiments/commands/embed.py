"""The `embed` command: q(beta | X) of each group and q(z | x), q(d | z) of each image, as files.

This is how a trained UG-VAE is used on data of one's own (`Run.embed`, trained/inference.py):
every group gets the mean and scale of its global posterior (the product of per-sample
Gaussians, so a group may hold any number of images), every image its local code. Sources:

    split    the run's dataset, train or test, cut in order into groups of `group_size`
             (default: the run's B); the last group may be smaller
    folder   each sub-folder is one group of any size; a flat folder is cut into groups of
             `group_size`, in file-name order

Folder images are centre-cropped and resized to the run's image size (data/folder.py) and
converted to its channels; a notice says when any image had another size or colour.

Writes, atomically, to a new RUN/embed/<source>[-n]/ (or `out`, which must not hold files;
with `out` elsewhere the run itself is only read):
    embeddings.npz   the arrays of `Embeddings` (trained/inference.py)
    beta.csv         one row per group: group_id, group_source, group_size, beta_loc_*, beta_scale_*
For a model without a global latent (VAE, GMVAE) beta is absent: only the local codes are written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import ConfigError, RunError
from ...files import atomic_write, atomic_write_text, make_dirs
from ...progress import plural
from ...settings import setting
from ...trained import Run
from ...trained.inference import Embeddings, embed_groups, split_groups
from ...trained.run import new_output_dir


@dataclass
class EmbedSettings:
    folder: str | None = setting(None, "images to embed: each sub-folder is one group; a flat folder is cut")
    split: str | None = setting(None, "the run's own dataset split", choices=("train", "test"))
    group_size: int | None = setting(
        None, "images per group of a split or flat folder; None: the run's B", "-B", "--group-size"
    )
    out: str | None = setting(None, "output folder; None: a new RUN/embed/SOURCE", metavar="DIR")
    data_dir: str | None = setting(None, "where the run's dataset is found; None: the run's")


@dataclass
class EmbedResult:
    out_dir: str
    files: list[str]
    embeddings: Embeddings


def embed_run(run: Run, settings: EmbedSettings) -> EmbedResult:
    """Embed `settings.folder` or the run's `settings.split`; write the files of the module docstring."""
    if (settings.folder is None) == (settings.split is None):
        raise ConfigError("embed needs one source: a `folder` or a `split` (train or test)")
    if settings.group_size is not None and settings.group_size < 1:
        raise ConfigError(f"`group_size` must be >= 1, got {settings.group_size}")
    if settings.out:
        check_output_dir(settings.out)
    if settings.folder is not None:
        embeddings = run.embed(settings.folder, settings.group_size)
        name = Path(settings.folder).expanduser().resolve().name
    else:
        group_size = settings.group_size or run.train_cfg.group_size
        groups = split_groups(run, settings.split, group_size, settings.data_dir)
        embeddings, name = embed_groups(run.model, run.guide, groups, run.device), settings.split
    out_dir = claim_output_dir(settings.out) if settings.out else new_output_dir(run.path("embed"), name)
    files = [os.path.join(out_dir, "embeddings.npz")]
    save_npz(files[0], embeddings.arrays())
    if embeddings.beta_loc is not None:
        files.append(os.path.join(out_dir, "beta.csv"))
        atomic_write_text(files[1], beta_csv(embeddings))
    return EmbedResult(out_dir, files, embeddings)


def report(result: EmbedResult) -> str:
    e = result.embeddings
    lines = [f"embedded {plural(len(e.z_loc), 'image')} in {plural(len(e.group_id), 'group')}"]
    if e.beta_loc is None:
        lines.append("this model has no global latent: beta is absent, only the local codes z (and pi) are written")
    return "\n".join(lines + [f"wrote {path}" for path in result.files])


def save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    atomic_write(path, lambda f: np.savez(f, **arrays))


def beta_csv(e: Embeddings) -> str:
    dim = e.beta_loc.shape[1]
    head = ["group_id", "group_source", "group_size"]
    head += [f"beta_loc_{j}" for j in range(dim)] + [f"beta_scale_{j}" for j in range(dim)]
    lines = [",".join(head)]
    for g in e.group_id:
        source = str(e.group_source[g]).replace('"', '""')
        numbers = [f"{v:.6g}" for v in (*e.beta_loc[g], *e.beta_scale[g])]
        lines.append(",".join([str(g), f'"{source}"', str(e.group_size[g]), *numbers]))
    return "\n".join(lines) + "\n"


def check_output_dir(path: str) -> None:
    """Refuse an `out` folder that already holds files, before any work: nothing is overwritten."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise RunError(f"`out` {path} is a file, not a folder; pick another `out`")
    if os.path.isdir(path) and os.listdir(path):
        raise RunError(f"`out` {path} already holds files and outputs are never overwritten; pick another `out`")


def claim_output_dir(path: str) -> str:
    """`out`: created if missing, refused if it already holds files (nothing is overwritten)."""
    check_output_dir(path)
    make_dirs(path)  # a read-only or too long `out`: one line (files.py)
    return path
