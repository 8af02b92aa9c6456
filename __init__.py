"""ugvae: UG-VAE (Unsupervised Global VAE) as a Pyro probabilistic program.

    import ugvae
    run = ugvae.load_run("runs/mnist-ugvae-...")     # a trained run

Names are imported on first use, so `import ugvae` (and the `ugvae --help` command) stays
quick: torch and pyro come with the first name that needs them.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

# public name -> module (relative to this package) that defines it
_API = {
    "ModelConfig": ".model",
    "UGVAEModel": ".model",
    "MODELS": ".model",
    "UGVAEGuide": ".guide",
    "GUIDES": ".guide",
    "build": ".guide",
    "TrainConfig": ".train",
    "LaunchConfig": ".train",
    "load_run": ".train",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'ugvae' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_API))
