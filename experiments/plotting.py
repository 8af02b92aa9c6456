"""The one image-grid helper and figure saving shared by every experiment.

Figures and JSON go through the atomic writer (files.py), so a kill or a full disk mid-write
leaves no torn file; every experiment writes them into a folder of its own that appears whole
(trained/outputs.py `OutputFolder`).
"""

from __future__ import annotations

import os
import textwrap

import matplotlib

matplotlib.use("Agg")  # figures are files; no display is assumed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from ..files import atomic_write, write_json  # noqa: E402


def image_grid(images: torch.Tensor, nrow: int, pad: int = 1) -> torch.Tensor:
    """(N, C, H, W) images in [0, 1] -> one (C, H', W') tile image, `nrow` images per row."""
    return make_grid(images.detach().cpu().clamp(0, 1), nrow=nrow, padding=pad, pad_value=1.0)


def show_grid(ax, images: torch.Tensor, nrow: int, title: str | None = None, row_labels: list[str] | None = None):
    grid = image_grid(images, nrow)
    ax.imshow(grid.permute(1, 2, 0).numpy() if grid.shape[0] == 3 else grid[0].numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([]), ax.set_yticks([])
    if row_labels:
        side = images.shape[-2] + 1  # one pixel of padding between tiles
        ax.set_yticks([1 + side * r + side / 2 for r in range(len(row_labels))], row_labels, fontsize=8)
        ax.tick_params(axis="y", length=0)
    if title:
        ax.set_title(fitted(title, ax.figure.get_figwidth()), fontsize=9)


def fitted(text: str, width_inches: float) -> str:
    """`text` wrapped to lines that fit a figure `width_inches` wide at a 9 pt font."""
    return textwrap.fill(text, max(20, int(width_inches * 14)))


def save_grid(
    path: str,
    images: torch.Tensor,
    nrow: int,
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    row_labels: list[str] | None = None,
):
    rows = (images.shape[0] + nrow - 1) // nrow
    label_room = 0.08 * max((len(label) for label in row_labels), default=0) if row_labels else 0.0
    fig, ax = plt.subplots(figsize=(max(3.0, 0.45 * nrow + 1) + label_room, max(3.0, 0.45 * rows + 1)))
    show_grid(ax, images, nrow, title, row_labels)
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    save_figure(fig, path)


def save_figure(fig, path: str):
    fig.tight_layout()
    try:
        # The format follows the name, as savefig to a path would (the temporary name has none).
        atomic_write(path, lambda f: fig.savefig(f, dpi=120, format=os.path.splitext(path)[1][1:] or "png"))
    finally:
        plt.close(fig)


def save_json(path: str, payload: dict):
    write_json(path, payload)
