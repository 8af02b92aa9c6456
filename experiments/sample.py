"""New groups of images from a trained run: each group shares one beta, as in the generative model.

The model is run as a Pyro program with no data, `model(None, num_groups=N, group_size=B)`
under `poutine.trace`: beta ~ p(beta) once per group, then per image d and z (and the mixture
component given beta), and each image is the decoder's mean for (z, beta). `--beta-from
FOLDER` fixes beta, through `poutine.condition`, to the posterior mean E q(beta | X) of that
folder's images (all of them, as one group): "more images like this set".

Writes, to a new RUN_DIR/samples/<prior|folder>[-n]/ (or --out, which must not hold files):
    samples.png   a row per group, B images per row
    samples.npz   images (N, B, C, H, W) in [0, 1], beta (N, beta_dim), z (N, B, z_dim), and
                  d (N, B) where the model has clusters
Only models with a global latent (UG-VAE, ML-VAE) have a beta to share; others get an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pyro
import torch
from pyro import poutine

from ..data import folder_groups, to_unit_float
from ..train import RunError, load_run
from ..train.config import resolve_device
from ..train.rundir import new_output_dir
from .embed import claim_output_dir


@torch.no_grad()
def sample_groups(model, num_groups: int, group_size: int, beta: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """images (N, B, C, H, W), beta (N, beta_dim), z (N, B, z_dim) and, with clusters, d (N, B).

    `beta` (beta_dim,) fixes the global latent of every group; None draws each from p(beta).
    """
    if num_groups < 1 or group_size < 1:
        raise ValueError(f"--groups and --group-size must be >= 1, got {num_groups} and {group_size}")
    if not model.has_global_latent:
        raise RunError(
            f"{type(model).__name__} has no global latent, so its samples share nothing within a group; "
            "sample from a UG-VAE or ML-VAE run"
        )
    program = model
    if beta is not None:
        # The beta site is (N, 1, beta_dim): one value per group, broadcast over its samples.
        program = poutine.condition(model, {"beta": beta.reshape(1, 1, -1).expand(num_groups, 1, -1)})
    trace = poutine.trace(program).get_trace(None, num_groups=num_groups, group_size=group_size)
    z, beta_site = trace.nodes["z"]["value"], trace.nodes["beta"]["value"]
    out = {"images": model.decode(z, beta_site), "beta": beta_site[:, 0], "z": z}
    if "d" in trace.nodes:
        out["d"] = trace.nodes["d"]["value"]
    return out


@dataclass
class SampleResult:
    out_dir: str
    files: list[str]
    beta_source: str


def sample_run(
    run_dir: str,
    num_groups: int = 4,
    group_size: int = 8,
    beta_from: str | None = None,
    out: str | None = None,
    seed: int = 0,
    device: str = "auto",
) -> SampleResult:
    """Draw the groups of the module docstring from the run in `run_dir` and write its files."""
    from .plotting import save_grid  # matplotlib: only when a figure is drawn

    device = resolve_device(device)
    run = load_run(run_dir, str(device))
    if not run.model.has_global_latent:
        sample_groups(run.model, num_groups, group_size)  # raises the error that names the fix
    beta, source, name = None, "beta ~ p(beta), one per group", "prior"
    if beta_from is not None:
        groups = folder_groups(beta_from, run.model_cfg.x_shape)
        x = to_unit_float(groups.images).unsqueeze(0).to(device)
        beta = run.guide.global_posterior(x).loc[0]
        name = os.path.basename(os.path.normpath(os.path.abspath(beta_from)))
        source = f"beta = E q(beta | X) of the {len(groups.images)} images in {beta_from}"
    pyro.set_rng_seed(seed)
    drawn = sample_groups(run.model, num_groups, group_size, beta)
    out_dir = claim_output_dir(out) if out else new_output_dir(os.path.join(run_dir, "samples"), name)
    png, npz = os.path.join(out_dir, "samples.png"), os.path.join(out_dir, "samples.npz")
    images = drawn["images"]
    save_grid(png, images.reshape((-1,) + images.shape[2:]), nrow=group_size, title=f"rows: groups; {source}")
    np.savez(npz, **{k: v.cpu().numpy() for k, v in drawn.items()})
    return SampleResult(out_dir, [png, npz], source)


def add_arguments(parser):
    parser.add_argument("--run", required=True, metavar="RUN_DIR", help="a trained UG-VAE or ML-VAE run")
    parser.add_argument("--groups", type=int, default=4, help="N: groups to draw, one row of the figure each")
    parser.add_argument("--group-size", "-B", type=int, default=8, help="B: images per group")
    parser.add_argument(
        "--beta-from", metavar="FOLDER", default=None, help="fix beta to the posterior mean of this folder's images"
    )
    parser.add_argument("--out", metavar="DIR", default=None, help="output folder; None: a new RUN_DIR/samples/NAME")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the draws")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")


def run(args) -> int:
    result = sample_run(args.run, args.groups, args.group_size, args.beta_from, args.out, args.seed, args.device)
    print(f"drew {args.groups} groups of {args.group_size}: {result.beta_source}")
    for path in result.files:
        print(f"wrote {path}")
    return 0
