"""Quiet, bounded attempts to download a torchvision dataset; failure returns None instead of raising."""

from __future__ import annotations

import contextlib
import io
import socket
from pathlib import Path

import torch

# Offline, DNS fails at once; the timeout only bounds a network that accepts and then stalls.
SOCKET_TIMEOUT_S = 5.0


@contextlib.contextmanager
def quiet_network(timeout: float = SOCKET_TIMEOUT_S):
    """Silence torchvision's per-mirror messages and bound every socket wait, restoring both afterwards."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        socket.setdefaulttimeout(previous)


def download_mnist_like(dataset_class, root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor] | None:
    """uint8 images (N, 1, 28, 28) and long labels of an MNIST-style torchvision set, or None if it cannot be had."""
    try:
        with quiet_network():
            dataset = dataset_class(str(root), train=train, download=True)
    except Exception:  # torchvision raises RuntimeError, URLError, OSError... all mean "not available"
        return None
    return dataset.data.unsqueeze(1).to(torch.uint8), dataset.targets.long()
