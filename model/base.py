"""What every generative model offers besides being a Pyro program over the sites of `model/ugvae.py`.

Class-level facts say which latents exist, so callers ask `model.has_global_latent` rather than
probe for attributes; `decode(z[, beta])` gives the mean image of latents (..., z_dim) and, with
a global latent, (..., beta_dim).
"""

from __future__ import annotations

from typing import ClassVar

from pyro.nn import PyroModule


class GenerativeModel(PyroModule):
    has_global_latent: ClassVar[bool] = False
    has_mixture: ClassVar[bool] = False
    # forward(..., leave_one_out=True): beta per member, for the leave-one-out bound (train/elbo.py)
    has_leave_one_out: ClassVar[bool] = False
    # The fields of model/config.py's EXTENSIONS that this model reads; the others it would ignore.
    extensions: ClassVar[frozenset[str]] = frozenset()

    @property
    def has_cluster_weights(self) -> bool:
        """Whether p(d | beta) depends on beta (UG-VAE with cluster_weights="global")."""
        return False
