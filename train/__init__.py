"""Training runs: `fit` starts one, `resume` continues one.

fit, resume  (fit.py) pick the driver and hold the run's lock
Session      what both drivers share (session.py), with a RunBook of counters (book.py) and hooks
             at each epoch's end (hooks.py); the drivers: loop.py (one device), lightning.py (DDP)
elbo         the sync-free enumerated ELBO (elbo.py); graph.py captures a step as a CUDA graph

The run itself, its directory and checkpoints live in ugvae.trained.
"""

from .elbo import elbo_module
from .fit import fit, new_trainer, resume

__all__ = ["fit", "elbo_module", "new_trainer", "resume"]
