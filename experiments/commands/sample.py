"""The `sample` command: new groups of images from a trained run, each sharing one beta, as files.

The groups come from the generative program (`Run.sample`, trained/inference.py): beta ~ p(beta)
once per group, or beta = E q(beta | X) of a set of images, "more images like this set". With
`beta_from` a folder whose sub-folders are sets, every set gets its own rows, labelled with its
name (as `embed` reads the same folder: one group per sub-folder); a flat folder is one set.

Writes to a new RUN/samples/<prior|folder>[-n]/ (or `out`, which must not hold files; with
`out` elsewhere the run itself is only read), whole or absent (trained/outputs.py):
    samples.png   a row per group, B images per row, each row labelled with its beta's source
    samples.npz   the arrays of `Samples`: images (N, B, C, H, W) in [0, 1], beta (N, beta_dim),
                  z (N, B, z_dim), d (N, B) where the model has clusters, group_source (N,)
Only models with a global latent (UG-VAE, ML-VAE) have a beta to share; others get an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ...progress import plural
from ...settings import setting
from ...trained import Run
from ...trained.inference import SampleArguments, Samples
from ...trained.outputs import OutputFolder
from .embed import save_npz


@dataclass(frozen=True)
class SampleSettings(SampleArguments):
    """`Run.sample`'s arguments (trained/inference.py) and where the files go."""

    out: str | None = setting(None, "output folder", default_is="a new RUN/samples/NAME", metavar="DIR")


@dataclass
class SampleResult:
    out_dir: str
    files: list[str]
    samples: Samples


def sample_run(run: Run, settings: SampleSettings) -> SampleResult:
    """Draw new groups, each sharing one beta, and write them as a figure and arrays.

    Writes ``samples.png`` (a row per group, labelled with where its beta came from) and
    ``samples.npz`` (the arrays of :class:`~ugvae.trained.inference.Samples`) to a new
    ``RUN/samples/<prior|folder>[-n]/``, or to ``settings.out``, whole or absent.

    Parameters
    ----------
    run : Run
        A trained run (:func:`ugvae.load_run`).
    settings : SampleSettings
        ``num_groups``, ``group_size``, ``beta_from`` (a folder of sets), ``seed``, ``out``.

    Returns
    -------
    SampleResult
        The samples, and the folder and files written.

    Raises
    ------
    RunError
        The run's model has no global latent (VAE, GMVAE).
    DataError
        ``beta_from`` cannot be read as image sets.
    """
    from ..plotting import save_grid  # matplotlib: only when a figure is drawn

    name = "prior" if settings.beta_from is None else os.path.basename(os.path.normpath(settings.beta_from))
    folder = OutputFolder(run.path("samples"), name, out=settings.out, run_dir=run.run_dir)
    drawn = run.sample(settings.num_groups, settings.group_size, settings.beta_from, settings.seed)
    images = drawn.images
    with folder:
        save_grid(
            folder.file("samples.png"),
            images.reshape((-1,) + images.shape[2:]),
            nrow=settings.group_size,
            title="rows: groups, each sharing one beta",
            row_labels=[f"beta of {s}" if s != "p(beta)" else "beta ~ p(beta)" for s in drawn.sources],
        )
        save_npz(folder.file("samples.npz"), drawn.arrays())
    return SampleResult(folder.path, folder.files, drawn)


def report(result: SampleResult) -> str:
    images = result.samples.images
    sources = sorted(set(result.samples.sources))
    line = f"drew {plural(len(images), 'group')} of {images.shape[1]}, beta from " + ", ".join(sources)
    return "\n".join([line] + [f"wrote {path}" for path in result.files])
