"""What every generative model offers the rest of the package, beyond being a Pyro program over the
sites of `model/ugvae.py` (x, z, and where the model has them d and beta).

    decode(z, beta=None)          -> (..., C, H, W)          E p(x | z, beta), the decoder's mean image (eq. 2)
    prior_components(beta=None)   -> Components(loc, scale)  p(z | d = k, beta) = N(loc_k, diag scale_k^2) (eq. 3),
                                                             each (..., K, z_dim)
    cluster_logits(beta=None)     -> (..., K)                p(d | beta) = Cat(softmax(logits)) (eq. 4)

z is (..., z_dim) and beta (..., beta_dim) with batch dims that broadcast; `...` of the two prior
methods is beta's batch shape, or () for a model without a global latent, which takes no beta
(None) and refuses one, as a model with a global latent refuses to go without. A model without a
mixture has a mixture of one: K = 1, p(z | beta) = N(0, I), so callers never ask which kind of
prior they hold. The Pyro program samples from exactly these (tests/model/test_contract.py).

Facts, so that callers ask for sizes rather than probe for attributes:

    latent_sizes        site -> size of every latent the program samples, top down: beta
                        (beta_dim) where there is a global latent, d (its K values) where there
                        is a mixture, z (z_dim)
    num_components      K of the prior's mixture (1 without a mixture)
    has_global_latent   class-level booleans of the same facts (guide/base.py declares them too)
    has_mixture
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch
from pyro.nn import PyroModule

from .config import ModelConfig
from .likelihood import pixel_mean


class Components(NamedTuple):
    """The prior's mixture components: ``loc`` and ``scale``, each (..., K, z_dim)."""

    loc: torch.Tensor
    scale: torch.Tensor


def group_shape(x: torch.Tensor | None, num_groups: int, group_size: int | None) -> tuple[int, int]:
    """(G, B) from data, or from the sizes asked for when generating."""
    if x is None:
        if group_size is None:
            raise ValueError("generating needs group_size (B) when x is None")
        return num_groups, group_size
    if x.dim() != 5:
        raise ValueError(
            f"x must have shape (G, B, C, H, W), got {tuple(x.shape)}; "
            "add a group dim with x.unsqueeze(0) for one group"
        )
    return x.shape[0], x.shape[1]


class GenerativeModel(PyroModule):
    """Base of every generative model: a Pyro program over the sites of :class:`UGVAEModel` and the
    contract that experiments read (``decode``, ``prior_components``, ``cluster_logits``).

    Parameters
    ----------
    cfg : ModelConfig
        Sizes of the networks.

    Attributes
    ----------
    has_global_latent : bool
        Whether the program samples a global latent ``beta`` per group (class-level).
    has_mixture : bool
        Whether it samples a cluster ``d`` per image (class-level).
    extensions : frozenset of str
        The extension fields of :class:`ModelConfig` it reads; one set away from its default for a
        model that would ignore it is refused (:func:`check_extensions`).
    """

    has_global_latent: ClassVar[bool] = False
    has_mixture: ClassVar[bool] = False
    # forward(..., leave_one_out=True): beta per member, for the leave-one-out bound (train/elbo.py)
    has_leave_one_out: ClassVar[bool] = False
    # The fields of model/config.py's EXTENSIONS that this model reads; the others it would ignore.
    extensions: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg

    @property
    def has_cluster_weights(self) -> bool:
        """Whether p(d | beta) depends on beta (UG-VAE with cluster_weights="global")."""
        return False

    @property
    def latent_sizes(self) -> dict[str, int]:
        """Site -> size of every latent, top down: beta (beta_dim), d (K values), z (z_dim)."""
        sizes = {"beta": self.cfg.beta_dim} if self.has_global_latent else {}
        if self.has_mixture:
            sizes["d"] = self.cfg.K
        return {**sizes, "z": self.cfg.z_dim}

    @property
    def num_components(self) -> int:
        """K of the prior's mixture; 1 for a model without a mixture."""
        return self.cfg.K if self.has_mixture else 1

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- the contract ----------------------------------------------------------------
    def decode(self, z: torch.Tensor, beta: torch.Tensor | None = None) -> torch.Tensor:
        """The mean image E p(x | z, beta) of eq. 2.

        Parameters
        ----------
        z : torch.Tensor
            Local latents (..., z_dim).
        beta : torch.Tensor, optional
            Global latents (..., beta_dim), broadcasting with z; required by a model with a global
            latent, refused by one without.

        Returns
        -------
        torch.Tensor
            Images (..., C, H, W) in [0, 1].

        Raises
        ------
        ValueError
            `beta` missing for a model with a global latent, or given to one without.
        """
        self._check_beta(beta, "decode")
        return pixel_mean(self.logits(z, beta))

    def prior_components(self, beta: torch.Tensor | None = None) -> Components:
        """The components p(z | d = k, beta) = N(loc_k, diag scale_k^2) of eq. 3, for every k.

        Parameters
        ----------
        beta : torch.Tensor, optional
            (..., beta_dim); None for a model without a global latent.

        Returns
        -------
        Components
            ``loc`` and ``scale``, each (..., K, z_dim); K = 1 and N(0, I) without a mixture.
        """
        self._check_beta(beta, "prior_components")
        return self._prior_components(beta)

    def cluster_logits(self, beta: torch.Tensor | None = None) -> torch.Tensor:
        """The logits of p(d | beta) of eq. 4 (zeros: uniform weights, unless ``cluster_weights="global"``).

        Parameters
        ----------
        beta : torch.Tensor, optional
            (..., beta_dim); None for a model without a global latent.

        Returns
        -------
        torch.Tensor
            Logits (..., K).
        """
        self._check_beta(beta, "cluster_logits")
        return self._cluster_logits(beta)

    # -- what a model implements -------------------------------------------------------
    def logits(self, z: torch.Tensor, beta: torch.Tensor | None) -> torch.Tensor:
        """The decoder's output for z and beta (None without a global latent): eq. 2's network."""
        raise NotImplementedError

    def _prior_components(self, beta: torch.Tensor | None) -> Components:
        """Without a mixture: one standard normal component, the same for every beta."""
        batch = () if beta is None else beta.shape[:-1]
        loc = torch.zeros(self.cfg.z_dim, device=self.device).expand(*batch, 1, self.cfg.z_dim)
        return Components(loc, torch.ones_like(loc))

    def _cluster_logits(self, beta: torch.Tensor | None) -> torch.Tensor:
        """Uniform weights, eq. 4: zeros whatever beta is."""
        batch = () if beta is None else beta.shape[:-1]
        return torch.zeros(self.num_components, device=self.device).expand(*batch, self.num_components)

    def _check_beta(self, beta: torch.Tensor | None, method: str) -> None:
        if self.has_global_latent and beta is None:
            raise ValueError(f"{type(self).__name__} has a global latent: {method} needs beta (..., beta_dim)")
        if not self.has_global_latent and beta is not None:
            raise ValueError(f"{type(self).__name__} has no global latent: {method} takes no beta; pass None")
