"""ugvae: UG-VAE (Unsupervised Global VAE) as a Pyro probabilistic program.

    import ugvae
    run = ugvae.fit(dataset="mnist", epochs=50)        # train a new run (fields of TrainConfig/ModelConfig)
    run = ugvae.fit(train_data=x, test_data=x_test)     # or on images in memory, (N, C, H, W)
    run = ugvae.load_run("runs/mnist-ugvae-...")        # or load a trained one
    run.embed("my-sets/")                               # q(beta | X) per set, q(z | x) per image
    run.sample(beta_from="my-sets/")                    # more images like each set
    run.reconstruct(x), run.evaluate()                  # reconstructions; test ELBO, IWAE, clustering
    run.model, run.guide                                # the Pyro model and guide, for poutine
    run.history                                         # metrics.csv as a pandas DataFrame

Names are imported on first use, so `import ugvae` (and the `ugvae --help` command) stays
quick: torch and pyro come with the first name that needs them. This module itself imports
nothing of the package, so that a tool may load it from a checkout under any folder name.
"""

from __future__ import annotations

import importlib

# public name -> module (relative to this package) that defines it
_API = {
    "__version__": ".version",
    "fit": ".train",
    "resume": ".train",
    "load_run": ".trained",
    "Run": ".trained",
    "TrainConfig": ".trained",
    "LaunchConfig": ".trained",
    "ImageTensors": ".data",
    "ModelConfig": ".model",
    "UGVAEModel": ".model",
    "MODELS": ".model",
    "UGVAEGuide": ".guide",
    "GUIDES": ".guide",
    "build": ".guide",
    "UGVAEError": ".errors",
}

# subpackages reached as attributes (`ugvae.guide.register`) without importing them first
_SUBPACKAGES = {"model", "guide", "data", "trained", "train", "experiments"}

__all__ = list(_API)


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    if name not in _API:
        raise AttributeError(f"module 'ugvae' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_API))
