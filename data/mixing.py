"""Concatenation of several ImageSets into one mixed-domain set that records where each image came from."""

from __future__ import annotations

import math

import torch

from ..errors import DataError
from .imageset import ImageSet, check_fits, shape_text, to_channels


def mix(sets: list[ImageSet]) -> ImageSet:
    """Domain k is sets[k]; labels are offset so classes of different sets never share a number."""
    sizes = {s.x_shape[1:] for s in sets}
    if len(sizes) > 1:
        # Only reachable without image_size, because load_dataset resizes every part to it first.
        a, b = next((a, b) for a in sets for b in sets if a.x_shape[1:] != b.x_shape[1:])
        side = max(max(s.x_shape[1:]) for s in sets)
        raise DataError(
            f"cannot mix {a.name} ({shape_text(a.x_shape)}) with {b.name} ({shape_text(b.x_shape)}): "
            f"set `image_size` to {side} to resize both"
        )
    # Grayscale -> RGB loses nothing, so channel counts are reconciled without asking.
    channels = max(s.x_shape[0] for s in sets)
    # The joined copy is made while the parts are held; grayscale parts made RGB are copies too.
    grown = sum(len(s) for s in sets if s.x_shape[0] != channels)
    shape = (channels, *sets[0].x_shape[1:])
    check_fits(sum(len(s) for s in sets), shape, "mixing " + "+".join(s.name for s in sets), grown * math.prod(shape))
    images = torch.cat([to_channels(s.images, channels) for s in sets])
    domains = torch.cat([torch.full((len(s),), k, dtype=torch.long) for k, s in enumerate(sets)])

    labels, class_names = None, []
    if all(s.labels is not None for s in sets):
        offsets = torch.tensor([0] + [len(s.class_names) for s in sets]).cumsum(0).tolist()
        labels = torch.cat([s.labels + offsets[k] for k, s in enumerate(sets)])
        class_names = [f"{s.name}:{c}" for s in sets for c in s.class_names]

    attributes, attribute_names = None, []
    if all(s.attributes is not None and s.attribute_names == sets[0].attribute_names for s in sets):
        attributes, attribute_names = torch.cat([s.attributes for s in sets]), list(sets[0].attribute_names)

    notices = [s.notice for s in sets if s.notice]
    return ImageSet(
        images=images,
        name="+".join(s.name for s in sets),
        labels=labels,
        class_names=class_names,
        attributes=attributes,
        attribute_names=attribute_names,
        domains=domains,
        domain_names=[s.name for s in sets],
        notice=" ".join(notices) or None,
        source=" + ".join(f"{s.name}: {s.source}" for s in sets),
    )
