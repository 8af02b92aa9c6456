"""Embed images with a trained run: q(beta | X) of each group and q(z | x), q(d | z) of each image.

This is how a trained UG-VAE is used on data of one's own: every group gets the mean and
scale of its global posterior (the product of per-sample Gaussians, so a group may hold any
number of images), every image its local code. Sources:

    --split train|test    the run's dataset, cut in order into groups of --group-size
                          (default: the run's B); the last group may be smaller
    --folder PATH         each sub-folder is one group of any size; a flat folder is cut
                          into groups of --group-size, in file-name order

Folder images are centre-cropped and resized to the run's image size (data/folder.py) and
converted to its channels; a notice says when any image had another size.

Writes, to a new RUN_DIR/embed/<source>[-n]/ (or --out, which must not hold files):
    embeddings.npz   per group: beta_loc, beta_scale (G, beta_dim), group_id, group_source,
                     group_size; per image: z_loc, z_scale (N, z_dim), pi (N, K) where the
                     model has clusters, sample_group (the group_id of its group),
                     sample_name (file path relative to the folder, or "split[index]"),
                     sample_index (dataset index, or -1 for a file)
    beta.csv         one row per group: group_id, source, size, beta_loc_*, beta_scale_*
For a model without a global latent (VAE, GMVAE) beta is absent: only the local codes are
written, and the console says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data import ImageGroups, consecutive, folder_groups, load_dataset, to_unit_float
from ..train import RunError, load_run
from ..train.config import resolve_device
from ..train.rundir import new_output_dir

GROUPS_PER_PASS = 64  # equal-sized groups embedded in one call


def split_groups(run, split: str, group_size: int, data_dir: str | None = None) -> ImageGroups:
    cfg = run.train_cfg
    data = load_dataset(cfg.dataset, split, data_dir or cfg.data_dir, cfg.image_size)
    members = consecutive(len(data), group_size)
    sources = [f"{split}[{int(m[0])}:{int(m[-1]) + 1}]" for m in members]
    return ImageGroups(
        data.images, members, sources, [f"{split}[{i}]" for i in range(len(data))], list(range(len(data)))
    )


@torch.no_grad()
def embed_groups(model, guide, groups: ImageGroups, device="cpu") -> dict[str, np.ndarray]:
    """The arrays of embeddings.npz (see the module docstring) for every group."""
    z_loc, z_scale, pi = [None] * len(groups.images), [None] * len(groups.images), [None] * len(groups.images)
    beta_loc, beta_scale = [None] * len(groups.members), [None] * len(groups.members)
    # Groups of one size go through the guide together; sizes differ only between sub-folders.
    by_size: dict[int, list[int]] = {}
    for g, m in enumerate(groups.members):
        by_size.setdefault(len(m), []).append(g)
    for ids in by_size.values():
        for chunk in [ids[i : i + GROUPS_PER_PASS] for i in range(0, len(ids), GROUPS_PER_PASS)]:
            idx = torch.stack([groups.members[g] for g in chunk])
            x = to_unit_float(groups.images[idx].to(device))
            local = guide.local_posterior(x)
            for row, g in enumerate(chunk):
                for col, i in enumerate(groups.members[g].tolist()):
                    z_loc[i], z_scale[i] = local.z_loc[row, col].cpu(), local.z_scale[row, col].cpu()
                    pi[i] = None if local.pi is None else local.pi[row, col].cpu()
            if guide.has_global_latent:
                post = guide.global_posterior(x)
                for row, g in enumerate(chunk):
                    beta_loc[g], beta_scale[g] = post.loc[row].cpu(), post.scale[row].cpu()
    sample_group = np.empty(len(groups.images), dtype=np.int64)
    for g, m in enumerate(groups.members):
        sample_group[m.numpy()] = g
    out = {
        "group_id": np.arange(len(groups.members)),
        "group_source": np.array(groups.sources),
        "group_size": np.array([len(m) for m in groups.members]),
        "z_loc": torch.stack(z_loc).numpy(),
        "z_scale": torch.stack(z_scale).numpy(),
        "sample_group": sample_group,
        "sample_name": np.array(groups.names),
        "sample_index": np.array(groups.indices, dtype=np.int64),
    }
    if guide.has_mixture:
        out["pi"] = torch.stack(pi).numpy()
    if guide.has_global_latent:
        out["beta_loc"], out["beta_scale"] = torch.stack(beta_loc).numpy(), torch.stack(beta_scale).numpy()
    return out


def beta_csv(arrays: dict[str, np.ndarray]) -> str:
    dim = arrays["beta_loc"].shape[1]
    head = (
        ["group_id", "source", "size"] + [f"beta_loc_{j}" for j in range(dim)] + [f"beta_scale_{j}" for j in range(dim)]
    )
    lines = [",".join(head)]
    for g in arrays["group_id"]:
        source = str(arrays["group_source"][g]).replace('"', '""')
        numbers = [f"{v:.6g}" for v in (*arrays["beta_loc"][g], *arrays["beta_scale"][g])]
        lines.append(",".join([str(g), f'"{source}"', str(arrays["group_size"][g]), *numbers]))
    return "\n".join(lines) + "\n"


def claim_output_dir(path: str) -> str:
    """--out: created if missing, refused if it already holds files (nothing is overwritten)."""
    if os.path.isdir(path) and os.listdir(path):
        raise RunError(f"--out {path} already holds files and outputs are never overwritten; pick another --out")
    os.makedirs(path, exist_ok=True)
    return path


@dataclass
class EmbedResult:
    out_dir: str
    files: list[str]
    groups: int
    images: int
    has_beta: bool
    notice: str | None


def embed_run(
    run_dir: str,
    folder: str | None = None,
    split: str | None = None,
    group_size: int | None = None,
    out: str | None = None,
    device: str = "auto",
    data_dir: str | None = None,
) -> EmbedResult:
    """Embed `folder` (sub-folders as groups) or the run's `split`; write the files of the module docstring."""
    if (folder is None) == (split is None):
        raise ValueError("embed needs one source: --folder PATH or --split train|test")
    device = resolve_device(device)
    run = load_run(run_dir, str(device))
    B = group_size or run.train_cfg.group_size
    if folder is not None:
        groups, name = folder_groups(folder, run.model_cfg.x_shape, B), Path(folder).expanduser().resolve().name
    else:
        groups, name = split_groups(run, split, B, data_dir), split
    arrays = embed_groups(run.model, run.guide, groups, device)
    out_dir = claim_output_dir(out) if out else new_output_dir(os.path.join(run_dir, "embed"), name)
    files = [os.path.join(out_dir, "embeddings.npz")]
    np.savez(files[0], **arrays)
    if "beta_loc" in arrays:
        files.append(os.path.join(out_dir, "beta.csv"))
        with open(files[1], "w") as f:
            f.write(beta_csv(arrays))
    return EmbedResult(out_dir, files, len(groups.members), len(groups.images), "beta_loc" in arrays, groups.notice)


def add_arguments(parser):
    parser.add_argument("--run", required=True, metavar="RUN_DIR", help="a trained run")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--folder", metavar="PATH", help="images to embed: each sub-folder is one group; a flat folder is cut"
    )
    source.add_argument("--split", choices=("train", "test"), help="the run's own dataset split")
    parser.add_argument(
        "--group-size",
        "-B",
        type=int,
        default=None,
        help="images per group of a split or flat folder; None: the run's B",
    )
    parser.add_argument("--out", metavar="DIR", default=None, help="output folder; None: a new RUN_DIR/embed/SOURCE")
    parser.add_argument("--data-dir", default=None, help="where the run's dataset is found; None: the run's")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")


def run(args) -> int:
    result = embed_run(args.run, args.folder, args.split, args.group_size, args.out, args.device, args.data_dir)
    if result.notice:
        print(result.notice)
    print(f"embedded {result.images} images in {result.groups} groups")
    if not result.has_beta:
        print("this model has no global latent: beta is absent, only the local codes z (and pi) are written")
    for path in result.files:
        print(f"wrote {path}")
    return 0
