"""The tiny-run helpers live in tests/conftest.py; experiment tests import them from here too, and
the helpers that kill an experiment half-way through its files."""

import os

from tests.conftest import tiny_train

__all__ = ["fail_at_figure", "files_under", "tiny_train"]


def fail_at_figure(monkeypatch, k: int) -> None:
    """The k-th figure an experiment saves is written, then the command dies there, as if killed."""
    from ugvae.experiments import plotting

    real, written = plotting.atomic_write, []

    def write(path, writer):
        real(path, writer)
        written.append(path)
        if len(written) == k:
            raise RuntimeError("killed mid-write")

    monkeypatch.setattr(plotting, "atomic_write", write)


def files_under(folder) -> dict[str, int]:
    """Every file under `folder`, with its modification time: what a reader of it would find."""
    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            found[os.path.relpath(path, folder)] = os.stat(path).st_mtime_ns
    return found
