"""`grouped:BASE`: a dataset whose fixed groups share hidden continuous factors.

The images of BASE (any dataset name, e.g. grouped:mnist) are partitioned at random into
groups of GROUP_SIZE. Every group g draws its own factors, applied to all its members:

    angle_g ~ U[-45, 45] degrees     rotation about the image centre
    gain_g  ~ U[0.4, 1.0]            contrast: every pixel is multiplied by it

so the digits (or whatever BASE holds) vary within a group and the factors only across
groups. These are the known group factors of a benchmark: a global latent that learns what
members of a group share should recover them. They are kept per image in
`ImageSet.factors` (names in `factor_names`, group of each image in `ImageSet.groups`) for
evaluation only; no model reads them. The train and test splits draw different factors
(seeds 0 and 1), and `factor_groups` draws further held-out groups with fresh factors.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import DataError
from .imageset import ImageSet, check_fits
from .sampling import draw_groups

GROUP_SIZE = 32
FACTOR_NAMES = ["angle", "gain"]
FACTOR_RANGES = {"angle": (-45.0, 45.0), "gain": (0.4, 1.0)}
SPLIT_SEEDS = {"train": 0, "test": 1}


def load(split: str, data_dir: Path, image_size: int | None, option: str | None = None, load_base=None) -> ImageSet:
    """`load_base(name)` loads BASE; the registry passes it in (data/registry.py)."""
    if not option:
        raise DataError("dataset 'grouped' needs a base dataset; write it as grouped:mnist")
    if option.partition(":")[0] == "grouped":
        raise DataError("grouped:grouped:... nests groups in groups; write grouped:BASE once")
    base = load_base(option)
    generator = torch.Generator().manual_seed(SPLIT_SEEDS[split])
    num_groups = len(base) // GROUP_SIZE
    if num_groups < 1:
        raise DataError(f"{base.name} has {len(base)} images, fewer than one group of {GROUP_SIZE}")
    members = draw_groups(torch.arange(len(base)), num_groups, GROUP_SIZE, generator)
    return factor_groups(base, members, generator)


def factor_groups(base: ImageSet, members: torch.Tensor, generator: torch.Generator) -> ImageSet:
    """Groups of base images `members` (G, B), each transformed by factors drawn for it."""
    G, B = members.shape
    c, h, w = base.x_shape
    # Besides the result: the picked images, their float copy, the rotated copy and the sampling grid.
    check_fits(G * B, (c, h, w), f"grouped:{base.name}", extra=G * B * (9 * c * h * w + 8 * h * w))
    factors = torch.stack(
        [lo + (hi - lo) * torch.rand(G, generator=generator) for lo, hi in FACTOR_RANGES.values()], dim=-1
    )
    images = apply_factors(base.images[members.flatten()], factors.repeat_interleave(B, dim=0))
    return ImageSet(
        images=images,
        name=f"grouped:{base.name}",
        labels=None if base.labels is None else base.labels[members.flatten()],
        class_names=base.class_names,
        groups=torch.arange(G).repeat_interleave(B),
        factors=factors.repeat_interleave(B, dim=0),
        factor_names=list(FACTOR_NAMES),
        notice=base.notice,
        source=f"{base.source}, in groups of {B} with factors drawn per group",
    )


def apply_factors(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, C, H, W) rotated by factors[:, 0] degrees and scaled in contrast by factors[:, 1]."""
    angle = factors[:, 0] * (math.pi / 180.0)
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    rotated = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return rotated.mul_(factors[:, 1, None, None, None]).round_().clamp_(0, 255).to(torch.uint8)
