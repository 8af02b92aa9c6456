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

Writes to a new RUN/embed/<source>[-n]/ (or `out`, which must not hold files; with `out`
elsewhere the run itself is only read), whole or absent (trained/outputs.py):
    embeddings.npz   the arrays of `Embeddings` (trained/inference.py)
    beta.csv         one row per group: group_id, group_source, group_size, beta_loc_*, beta_scale_*
For a model without a global latent (VAE, GMVAE) beta is absent: only the local codes are written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...files import atomic_write, atomic_write_text
from ...progress import plural
from ...settings import setting
from ...trained import Run
from ...trained.inference import (
    EMBED_CONSEQUENCE,
    EmbedArguments,
    Embeddings,
    embed_groups,
    split_groups,
    warn_if_beta_inactive,
)
from ...trained.outputs import OutputFolder


@dataclass(frozen=True)
class EmbedSettings(EmbedArguments):
    """`Run.embed`'s arguments (trained/inference.py), the source of the images and where the files go."""

    folder: str | None = setting(
        None,
        "images to embed: each sub-folder is one group of any size, a flat folder is cut into groups of B",
        default_is="none: embed a --split",
        metavar="DIR",
    )
    split: str | None = setting(
        None, "the run's own dataset split", choices=("train", "test"), default_is="none: embed a --folder"
    )
    out: str | None = setting(None, "output folder", default_is="a new RUN/embed/SOURCE", metavar="DIR")
    data_dir: str | None = setting(None, "where the run's dataset is found", default_is="the run's own")

    def cross_field_problems(self) -> list[str]:
        if (self.folder is None) == (self.split is None):
            return ["embed needs one source: a `folder` or a `split` (train or test)"]
        return []


@dataclass
class EmbedResult:
    out_dir: str
    files: list[str]
    embeddings: Embeddings


def embed_run(run: Run, settings: EmbedSettings) -> EmbedResult:
    """Embed a folder of image sets, or a split of the run's data, and write the embeddings.

    Writes ``embeddings.npz`` (the arrays of :class:`~ugvae.trained.inference.Embeddings`) and
    ``beta.csv`` (a row per group) to a new ``RUN/embed/<source>[-n]/``, or to ``settings.out``,
    whole or absent. A model without a global latent writes its local codes only.

    Parameters
    ----------
    run : Run
        A trained run (:func:`ugvae.load_run`).
    settings : EmbedSettings
        ``folder`` (each sub-folder one group of any size) or ``split``; ``group_size``; ``out``.

    Returns
    -------
    EmbedResult
        The embeddings, and the folder and files written.

    Raises
    ------
    DataError
        A folder without images, or an image that cannot be read.
    ConfigError
        An ``out`` that holds files.
    """
    name = Path(settings.folder).expanduser().resolve().name if settings.folder is not None else settings.split
    folder = OutputFolder(run.path("embed"), name, out=settings.out, run_dir=run.run_dir)
    if settings.folder is not None:
        embeddings = run.embed(settings.folder, settings.group_size)
    else:
        group_size = settings.group_size or run.train_cfg.group_size
        groups = split_groups(run, settings.split, group_size, settings.data_dir)
        warn_if_beta_inactive(run, EMBED_CONSEQUENCE)
        embeddings = embed_groups(run.model, run.guide, groups, run.device)
    with folder:
        save_npz(folder.file("embeddings.npz"), embeddings.arrays())
        if embeddings.beta_loc is not None:
            atomic_write_text(folder.file("beta.csv"), beta_csv(embeddings))
    return EmbedResult(folder.path, folder.files, embeddings)


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
