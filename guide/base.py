"""What every guide offers the rest of the package, and what `check_guide` (guide/check.py) checks.

A guide is a Pyro program `forward(x)` over the latent sites of its model, with the model's
names, plates and shapes (the table in `model/ugvae.py`):

    sites     every latent site of the model (z, and where the model has them d and beta), each
              under its own name; no observed site
    plates    `groups` at dim -2, `samples` at dim -1, the model's: beta in `groups` only (one per
              group), z and d in both. To enter `samples` twice, build the plate object once,
              `samples = pyro.plate("samples", B, dim=-1)`, and enter it twice (`with samples:`);
              a second `pyro.plate("samples", ...)` is a second site of that name, which Pyro refuses
    d         enumerated in parallel, `infer={"enumerate": "parallel"}`, so that the ELBO sums over
              its K values exactly (eq. 10-11); its q(d | .) may read z's value and beta may read
              pi(z), but nothing outside the samples plate may read d's value

and the posterior summaries that experiments and `embed` read:

    local_posterior(x)  -> LocalPosterior(z_loc, z_scale, pi)    q(z_i | x_i), and q(d_i | z_i) at z_loc
    global_posterior(x) -> GlobalPosterior(loc, scale)           q(beta | X), with Z at E q(Z | X)

x is (G, B, C, H, W) floats in [0, 1]; z_loc and z_scale are (G, B, z_dim), pi (G, B, K) or None
for a guide without clusters, loc and scale (G, beta_dim). Class-level facts say which parts
exist, so callers ask `guide.has_global_latent` rather than probe for methods, and two more say
where a guide belongs:

    model_name          the registry name of its model; a guide from an entry point must declare it
    proven_sync_free    set by the author, on the class itself, once `check_guide(cls, cfg,
                        elbo=True)` passed: train with the sync-free ELBO (train/elbo.py), not
                        TraceEnum_ELBO. A subclass is another program and does not inherit it.

`__init__(cfg)` may read values, such as a statistic of data: the memory check counts a guide's
parameters on the meta device, and builds a guide whose `__init__` fails there once on the CPU.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch
from pyro.nn import PyroModule

from ..model.config import ModelConfig
from ..model.networks import GaussianHead, ImageFeatures


class LocalPosterior(NamedTuple):
    """q(z_i | x_i) and q(d_i | z_i) at z_loc: ``z_loc``, ``z_scale`` (G, B, z_dim) and ``pi``
    (G, B, K), or None for a guide without clusters."""

    z_loc: torch.Tensor
    z_scale: torch.Tensor
    pi: torch.Tensor | None


class GlobalPosterior(NamedTuple):
    """q(beta | X) of each group, with Z at E q(Z | X): ``loc`` and ``scale``, each (G, beta_dim)."""

    loc: torch.Tensor
    scale: torch.Tensor


def check_images(x: torch.Tensor) -> None:
    """Check that `x` is groups of images, (G, B, C, H, W) floats in [0, 1].

    Parameters
    ----------
    x : torch.Tensor
        What a guide was given.

    Raises
    ------
    ValueError
        Naming the fix: ``x.float() / 255`` for uint8 pixels, ``x.unsqueeze(0)`` for one group.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        kind = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"images must be a float tensor in [0, 1], got {kind}; convert uint8 with x.float() / 255")
    if x.dim() != 5:
        raise ValueError(
            f"images must have shape (G, B, C, H, W), got {tuple(x.shape)}; add a group dim with x.unsqueeze(0)"
        )
    lo, hi = torch.aminmax(x)
    if not (lo >= 0 and hi <= 1):  # also false for NaN
        raise ValueError(
            f"images must hold values in [0, 1], got min {lo.item():g} and max {hi.item():g}; "
            "divide 0..255 pixels by 255 and remove NaN"
        )


class Guide(PyroModule):
    """Base of every guide: q(z_i | x_i) of eq. 6, which all of them share, and the posterior
    summaries that experiments and ``embed`` read.

    A guide is a Pyro program ``forward(x)`` over its model's latent sites, with the model's names,
    plates and shapes; :func:`check_guide` checks that contract and names each fault. Subclass it
    (or a shipped guide), override ``forward`` and ``_local_posterior`` / ``_global_posterior``,
    and pass the class to :func:`ugvae.fit` or :func:`register`.

    Parameters
    ----------
    cfg : ModelConfig
        Sizes. ``__init__`` may read values (a statistic of data): the memory check builds a guide
        that fails on the meta device once on the CPU.

    Attributes
    ----------
    has_global_latent : bool
        Whether it has q(beta | X) (class-level; then ``global_posterior`` works).
    has_mixture : bool
        Whether it has q(d | z) (class-level).
    model_name : str or None
        The registry name of its model; a guide from an entry point must declare it.
    proven_sync_free : bool
        Set on the class itself once ``check_guide(cls, cfg, elbo=True)`` passed: it then trains
        with the sync-free ELBO instead of TraceEnum_ELBO. A subclass does not inherit it.
    """

    has_global_latent: ClassVar[bool] = False
    has_mixture: ClassVar[bool] = False
    model_name: ClassVar[str | None] = None
    proven_sync_free: ClassVar[bool] = False

    @classmethod
    def declares_proven_sync_free(cls) -> bool:
        """Whether this very class (not a parent) declares `proven_sync_free`."""
        return cls.__dict__.get("proven_sync_free", False) is True

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.features = ImageFeatures(cfg)
        self.local_encoder = GaussianHead(self.features.out_dim, cfg.z_dim)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Image features ``h`` (G, B, F) and the loc and scale of q(z | x), each (G, B, z_dim)."""
        h = self.features(x)
        return (h, *self.local_encoder(h))

    @torch.no_grad()
    def local_posterior(self, x: torch.Tensor) -> LocalPosterior:
        """q(z | x) of every image, and q(d | z) at its mean where the guide has clusters.

        Parameters
        ----------
        x : torch.Tensor
            Groups (G, B, C, H, W), floats in [0, 1].

        Returns
        -------
        LocalPosterior

        Raises
        ------
        ValueError
            `x` of the wrong shape, dtype or range.
        """
        check_images(x)
        return LocalPosterior(*self._local_posterior(x))

    @torch.no_grad()
    def global_posterior(self, x: torch.Tensor) -> GlobalPosterior:
        """q(beta | X) of every group, with Z at E q(Z | X).

        Parameters
        ----------
        x : torch.Tensor
            Groups (G, B, C, H, W), floats in [0, 1]; a group may hold any number of images.

        Returns
        -------
        GlobalPosterior

        Raises
        ------
        ValueError
            A guide without a global latent, or `x` of the wrong shape, dtype or range.
        """
        if not self.has_global_latent:
            raise ValueError(f"{type(self).__name__} has no global latent; use local_posterior")
        check_images(x)
        return GlobalPosterior(*self._global_posterior(x))

    def _local_posterior(self, x: torch.Tensor) -> tuple:
        _, z_loc, z_scale = self.encode(x)
        return z_loc, z_scale, None

    def _global_posterior(self, x: torch.Tensor) -> tuple:
        raise NotImplementedError
