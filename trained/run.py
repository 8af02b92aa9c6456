"""One run and its one owner, `Run`: configs, names, identity, launch options and directory.

A command builds its Run once: from values for a new run (`Run(model_cfg, train_cfg)`, then
`claim` makes its directory and writes config.json), or from a run directory (`Run.open`, which
reads config.json once). Everything else asks the Run:

    run_dir      the directory; a new run never takes an existing one
    model_cfg    sizes of p and q (model/config.py)
    train_cfg    how the run is trained (trained/config.py)
    model_name   registry names; the guide's default is resolved here, once
    guide_name
    guide_source where the guide comes from (shipped, an entry point, registered at run time;
                 guide/registry.py), found when the Run is made or opened
    run_id       a random id that every checkpoint repeats (trained/checkpoint/)
    launch       Lightning's launch options and world size, or None for a run on one device

The directory holds config.json (the above), checkpoints/ (trained/checkpoint/), metrics.csv
(trained/metrics.py; `run.history` reads it as a pandas DataFrame), summary.json, and .lock
(trained/lock.py: one writer at a time). A trained run answers for its model: `run.model` and
`run.guide` hold the weights of its newest good checkpoint (eval mode, on `run.device`), and
`embed`, `sample`, `reconstruct` and `evaluate` apply them to new data (trained/inference.py,
trained/evaluation.py).

A run's guide need not ship with ugvae: config.json records its name and where it came from, and
opening the run finds it by name among the shipped, the registered and the installed guides,
never by importing what config.json names; a guide found nowhere is one line saying how to
provide it (GuideUnavailable).

Runs made before run ids have none in config.json: they take the id their checkpoints carry
(`adopt_id`), which `ugvae upgrade` gives the checkpoints of such a run, and config.json records
it only once a checkpoint that carries it has loaded, so that a command that fails changes nothing.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import ConfigError, DataError, RunError
from ..files import read_json, write_json
from ..guide import Guide, GuideSource, build, default_guide, guide_source
from ..guide.registry import run_guide_source
from ..model import ModelConfig
from ..settings import shown
from .checkpoint import Checkpoint, expect, latest, load
from .config import LaunchConfig, TrainConfig, resolve_device
from .lock import run_lock
from .outputs import claim_dir, new_output_dir, sweep_temporaries

CONFIG_FILE = "config.json"


@dataclass
class Run:
    """One run: its configs, names, identity and directory, and, once trained, its model.

    Get one from :func:`ugvae.fit`, :func:`ugvae.load_run` or :meth:`Run.open`; a Run is rarely
    made by hand. A trained run's :attr:`model` and :attr:`guide` are the Pyro model and guide
    with the weights of its newest good checkpoint, in eval mode on :attr:`device`.

    Attributes
    ----------
    model_cfg : ModelConfig
        The sizes of p and q.
    train_cfg : TrainConfig
        How the run is (being) trained.
    run_dir : str or None
        The run's directory; None for a new run until it is claimed.
    run_id : str or None
        A random id that every checkpoint of the run repeats.
    launch : LaunchConfig or None
        The Lightning options the run was trained with; None for one device.
    world_size : int or None
        The processes of a Lightning run.
    device : torch.device
        Where :attr:`model` and :attr:`guide` live; change it with :meth:`to`.
    guide_name : str
        The guide's registry name (the model's default resolved).
    guide_source : GuideSource
        Where the guide comes from: shipped, an entry point, or registered at run time.
    """

    model_cfg: ModelConfig
    train_cfg: TrainConfig
    run_dir: str | None = None  # None until `claim` for a new run
    run_id: str | None = None
    launch: LaunchConfig | None = None
    world_size: int | None = None  # processes a Lightning run trained on
    # A run made before run ids that an older ugvae gave one: its pickled checkpoints without an
    # id are its own (trained/checkpoint/upgrade.py).
    owns_unnamed_checkpoints: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    guide_source: GuideSource | None = None  # where the guide comes from; None: looked up by name here

    def __post_init__(self):
        self.guide_name = self.train_cfg.guide or default_guide(self.train_cfg.model)
        if self.guide_source is None:
            self.guide_source = guide_source(self.model_name, self.guide_name)
        self._trained: tuple | None = None  # (model, guide, step) once loaded

    @property
    def model_name(self) -> str:
        return self.train_cfg.model

    # -- config.json ------------------------------------------------------------------
    @classmethod
    def open(cls, run_dir: str | os.PathLike, device: str = "cpu") -> Run:
        """The run in `run_dir`, from its config.json; its weights load on first use of `model` or `guide`.

        Parameters
        ----------
        run_dir : str or os.PathLike
            A run directory (one holding config.json).
        device : str, default "cpu"
            Where the model will run: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.

        Raises
        ------
        RunError
            Not a run directory, or a config.json that cannot be read; the message says how to fix it.
        GuideUnavailable
            The run's guide is neither shipped, nor registered in this process, nor provided by an
            installed package; the message names both ways to provide it.
        ConfigError
            A device this machine lacks.
        """
        run_dir = os.fspath(run_dir) if isinstance(run_dir, os.PathLike) else run_dir
        if not isinstance(run_dir, str) or not run_dir:
            raise ConfigError(f"`run_dir` must be the path of a run directory, got {shown(run_dir)}")
        device = resolve_device(device)  # a device this machine lacks is no fault of config.json
        path = os.path.join(run_dir, CONFIG_FILE)
        if not os.path.lexists(path):
            raise RunError(
                f"{run_dir} is not a run directory (it has no config.json); pass a directory made by training"
            )
        try:
            saved = read_json(path, what="config")  # a regular file of bounded size and depth, or a DataError
            if not isinstance(saved, dict):
                raise ValueError(f"it holds a {type(saved).__name__}, not an object")
            run_id = saved.get("run_id")
            if run_id is not None and not isinstance(run_id, str):
                raise ValueError(f"`run_id` must be a string, got {run_id!r}")
            launch, world_size = None, None
            if "lightning" in saved:
                launch = LaunchConfig.from_dict(saved["lightning"])
                world_size = saved["lightning"].get("world_size")
            model_cfg = ModelConfig.from_dict(saved["model"])
            train_cfg = TrainConfig.from_dict(saved["train"])
            recorded = GuideSource.from_dict(saved["guide_source"]) if "guide_source" in saved else None
        except DataError as e:
            raise RunError(f"{e}; restore it from a copy or start a new run") from None
        except (KeyError, TypeError, ValueError) as e:
            what = f"it lacks {e}" if isinstance(e, KeyError) else str(e) or type(e).__name__
            raise RunError(f"{path} is corrupt ({what}); restore it from a copy or start a new run") from None
        guide_name = train_cfg.guide or default_guide(train_cfg.model)
        return cls(
            model_cfg=model_cfg,
            train_cfg=train_cfg,
            run_dir=run_dir,
            run_id=run_id,
            launch=launch,
            world_size=world_size,
            owns_unnamed_checkpoints=saved.get("owns_unnamed_checkpoints", False) is True,
            device=device,
            guide_source=run_guide_source(train_cfg.model, guide_name, recorded, run_dir),
        )

    def config_payload(self) -> dict:
        payload = {
            "run_id": self.run_id,
            "model": self.model_cfg.to_dict(),
            "train": self.train_cfg.to_dict(),
            "model_name": self.model_name,
            "guide_name": self.guide_name,
            "guide_source": self.guide_source.to_dict(),
        }
        if self.launch is not None:
            payload["lightning"] = {**self.launch.to_dict(), "world_size": self.world_size}
        if self.owns_unnamed_checkpoints:
            payload["owns_unnamed_checkpoints"] = True
        return payload

    def save_config(self) -> None:
        write_json(self.path(CONFIG_FILE), self.config_payload())

    def claim(self, runs_dir: str = "runs", run_dir: str | None = None) -> Run:
        """Make this new run's directory (`run_dir`, which must not exist, or a fresh one under
        `runs_dir`), give the run its id and write config.json."""
        self.run_dir = claim_dir(run_dir) if run_dir else new_run_dir(runs_dir, self.train_cfg.dataset, self.model_name)
        self.run_id = uuid.uuid4().hex
        self.save_config()
        return self

    def adopt_id(self, run_id: str | None = None) -> bool:
        """Give a run made before run ids its id: `run_id` (the one its checkpoints carry), else a
        new one; whether it had none. The caller writes config.json (`save_config`)."""
        if self.run_id is not None:
            return False
        self.run_id = run_id or uuid.uuid4().hex
        return True

    # -- the directory ----------------------------------------------------------------
    def path(self, *parts: str) -> str:
        if self.run_dir is None:
            raise RunError("this run has no directory yet; claim one first")
        return os.path.join(self.run_dir, *parts)

    @contextlib.contextmanager
    def lock(self, new: bool = False, elsewhere: str | None = None):
        """Hold RUN/.lock while the block writes into the run (trained/lock.py); what killed writers
        left in it goes first (trained/outputs.py). `elsewhere`: the field that sends the command's
        output out of the run, named in the refusal of a read-only run."""
        with run_lock(self.run_dir, new=new, elsewhere=elsewhere):
            if new or os.path.isfile(self.path(CONFIG_FILE)):  # only a run's own folder is swept
                sweep_temporaries(self.run_dir)
            yield

    def latest_checkpoint(self, model=None, guide=None, *, training: bool = False, train_samples=None):
        """The newest checkpoint of this run that fits `model` and `guide` (by default fresh ones)
        and passes every check (trained/checkpoint/), or None when it has none. With `training`,
        what a resume needs too (optimiser, RNG, counters against `train_samples` images)."""
        if model is None:
            model, guide = build(self.model_cfg, self.model_name, self.guide_name)
        return latest(self.run_dir, expect(self, model, guide, training=training, train_samples=train_samples))

    def read_checkpoint(self, path: str) -> Checkpoint:
        """The checkpoint file `path`, checked to be one of this run's and to fit its model and guide."""
        model, guide = build(self.model_cfg, self.model_name, self.guide_name)
        return load(path, expect(self, model, guide))

    # -- the trained model -----------------------------------------------------------
    def to(self, device: str | torch.device) -> Run:
        """Move the model and guide to another device; returns the run.

        Parameters
        ----------
        device : str or torch.device
            ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.

        Raises
        ------
        ConfigError
            A device this machine lacks.
        """
        self.device = resolve_device(device)
        if self._trained is not None:
            self._trained[0].to(self.device), self._trained[1].to(self.device)
        return self

    def load_weights(self, checkpoint: Checkpoint | None = None) -> Run:
        """Load `checkpoint` into a fresh model and guide; returns the run.

        Parameters
        ----------
        checkpoint : Checkpoint, optional
            One of this run's checkpoints (:meth:`read_checkpoint`). Default: the newest that
            passes every check; a damaged or foreign file is skipped with a notice.

        Raises
        ------
        RunError
            The run holds no readable checkpoint.
        """
        model, guide = build(self.model_cfg, self.model_name, self.guide_name)
        if checkpoint is None:
            checkpoint = self.latest_checkpoint(model, guide)
            if checkpoint is None:
                raise RunError(f"{self.run_dir} holds no readable checkpoint; train it first, or resume it")
        model.load_state_dict(checkpoint.model)
        guide.load_state_dict(checkpoint.guide)
        model.to(self.device).eval(), guide.to(self.device).eval()
        self._trained = (model, guide, checkpoint.step)
        return self

    def _weights(self) -> tuple:
        if self._trained is None:
            self.load_weights()
        return self._trained

    @property
    def model(self) -> torch.nn.Module:
        """The Pyro model (a :class:`~ugvae.model.GenerativeModel`) with the run's weights, in eval mode."""
        return self._weights()[0]

    @property
    def guide(self) -> Guide:
        """The Pyro guide (a :class:`~ugvae.guide.Guide`) with the run's weights, in eval mode."""
        return self._weights()[1]

    @property
    def step(self) -> int:
        """The training step of the weights in `model` and `guide`."""
        return self._weights()[2]

    @property
    def history(self):
        """metrics.csv as a pandas DataFrame (pandas is not installed with ugvae): a row per logged
        window of steps (`kind` "step": its train ELBO) and per epoch ("epoch": its train and test
        ELBO, cluster usage and beta diagnostics), in the order logged (trained/metrics.py)."""
        from .metrics import history

        return history(self.path("metrics.csv"))

    # -- what a trained run computes --------------------------------------------------
    def embed(self, images, group_size: int | None = None):
        """q(beta | X) of every group and q(z | x), q(d | z) of every image (eq. 6-9).

        q(beta | X) is a product of per-image Gaussians, so a group may hold any number of images.
        Logs a notice once when the run's last diagnostics found beta inactive: then every group's
        beta_loc is about the same.

        Parameters
        ----------
        images : str, os.PathLike or torch.Tensor
            A folder, each sub-folder one group of any size (a flat folder is cut into groups of
            `group_size`); or floats in [0, 1] shaped (G, B, C, H, W), or (B, C, H, W) for one group.
            Images are centre-cropped and resized to the run's image shape.
        group_size : int, optional
            Images per group of a flat folder, at least 1. Default: the run's B.

        Returns
        -------
        Embeddings
            Per group ``beta_loc``, ``beta_scale`` (G, beta_dim), ``group_source``; per image
            ``z_loc``, ``z_scale`` (N, z_dim), ``pi`` (N, K); NumPy arrays. A model without beta or
            clusters leaves those None.

        Raises
        ------
        DataError
            A folder without images, an image that cannot be read, or a tensor of the wrong shape,
            dtype or range; the message says which.
        ConfigError
            `group_size` out of bounds.
        """
        from .inference import embed

        return embed(self, images, group_size)

    def sample(self, num_groups: int | None = None, group_size: int = 8, beta_from=None, seed: int | None = None):
        """New groups of images, each sharing one beta, from the generative program (eq. 1-4).

        Each group draws beta ~ p(beta), or fixes it to E q(beta | X) of a set ("more images like
        this set"); then d and z per image, and each image is the decoder's mean. Logs a notice
        once when the run's last diagnostics found beta inactive: then a set's beta says little
        about the set, and its rows look like any other.

        Parameters
        ----------
        num_groups : int, optional
            Groups to draw, 1 to 65536: from the prior, or for each set of `beta_from`. Default: 4
            from the prior, 1 per set.
        group_size : int, default 8
            Images per group, at least 1.
        beta_from : str, os.PathLike or torch.Tensor, optional
            Sets whose beta to use: a folder (one set per sub-folder; a flat folder is one set) or
            floats in [0, 1] shaped (G, B, C, H, W). Default: beta ~ p(beta).
        seed : int, optional
            Seed of the draw, 0 to 2**32 - 1. Default: the global random stream continues.

        Returns
        -------
        Samples
            ``images`` (groups, B, C, H, W) in [0, 1], ``beta``, ``z``, ``d``, and ``sources``, the
            origin of each group's beta.

        Raises
        ------
        RunError
            The run's model has no global latent (a VAE or GMVAE).
        ConfigError
            A count or seed out of bounds, or more pixels than one call may draw.
        DataError
            `beta_from` cannot be read as image sets.
        """
        from .inference import sample

        return sample(self, num_groups, group_size, beta_from, seed)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's mean at the posterior means of z and beta.

        Parameters
        ----------
        x : torch.Tensor
            Groups of images shaped (G, B, C, H, W) of the run's image shape, or (B, C, H, W) for
            one group: floats in [0, 1] or uint8 pixels.

        Returns
        -------
        torch.Tensor
            The reconstructions, floats in [0, 1] shaped (G, B, C, H, W).

        Raises
        ------
        DataError
            `x` of the wrong shape, dtype or range; the message names the fix.
        """
        from ..data import to_unit_float
        from .inference import reconstruct, run_images

        x = run_images(self, x)
        x = to_unit_float(x) if x.dtype == torch.uint8 else x
        return reconstruct(self.model, self.guide, x.to(self.device, torch.float32))

    def evaluate(
        self,
        samples: int = 100,
        seed: int = 0,
        images_per_pass: int = 8192,
        data_dir: str | None = None,
        test_data=None,
    ):
        """Test ELBO, IWAE bound, clustering and beta diagnostics on the run's test split.

        The same numbers as ``ugvae evaluate`` (which also writes them to eval.json).

        Parameters
        ----------
        samples : int, default 100
            Importance samples S of the IWAE bound (d is summed exactly); more tighten it.
        seed : int, default 0
            Seed of the importance samples.
        images_per_pass : int, default 8192
            Images per forward pass times S, to bound memory.
        data_dir : str, optional
            Where the dataset is found. Default: the run's.
        test_data : tensor, array or ImageTensors, optional
            Images to evaluate on instead of the run's test split, as :func:`ugvae.fit` takes
            them (what a run trained on in-memory tensors needs).

        Returns
        -------
        dict
            ``test_elbo``, ``iwae``, ``iwae_se``, ``clustering_accuracy``, ``clusters_used``, the
            beta diagnostics (``beta_active_dims``, ``beta_mi``, ...) and what they were computed on.

        Raises
        ------
        ConfigError
            A value out of bounds.
        DataError
            The run's dataset cannot be read.
        """
        from .evaluation import evaluate

        return evaluate(self, samples, seed, images_per_pass, data_dir, test_data)


def load_run(run_dir: str | os.PathLike, device: str = "cpu") -> Run:
    """The trained run in `run_dir`, its weights loaded from its newest good checkpoint.

    Opening a run reads config.json and one checkpoint; it imports no training code, and never
    imports a module because config.json names it.

    Parameters
    ----------
    run_dir : str or os.PathLike
        A run directory, made by :func:`fit` or ``ugvae train``.
    device : str, default "cpu"
        Where the model runs: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.

    Returns
    -------
    Run
        With :attr:`Run.model` and :attr:`Run.guide` loaded, in eval mode.

    Raises
    ------
    RunError
        Not a run directory, a corrupt config.json, or no readable checkpoint; each message says
        what to do. Checkpoints of versions before 0.3 are pickles, read only by ``ugvae upgrade``.
    GuideUnavailable
        The run's guide is not available in this process; the message says how to provide it.

    Examples
    --------
    >>> run = ugvae.load_run("runs/mnist-ugvae-20261201-120000")  # doctest: +SKIP
    >>> run.embed("my-sets").beta_loc.shape  # doctest: +SKIP
    (2, 10)
    """
    return Run.open(run_dir, device).load_weights()


# -- fresh directories ----------------------------------------------------------------
def new_run_dir(runs_dir: str, dataset: str, model: str) -> str:
    """A fresh `runs_dir/<dataset>-<model>-<timestamp>[-n]`; never an existing one."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9_.+-]", "_", dataset.replace("folder:", "").strip("/"))
    # The end of a long folder path names it best; a name stays well under NAME_MAX (255 bytes).
    return new_output_dir(runs_dir, f"{safe[-120:]}-{model}-{stamp}")


def read_config_file(path: str | os.PathLike) -> Run:
    """The Run of a config.json, or of the run directory holding one (a template for a new run)."""
    path = Path(path)
    if path.is_dir():
        return Run.open(path)
    if path.name != CONFIG_FILE:
        raise ConfigError(f"{path} is not a run's config.json; pass RUN_DIR/config.json")
    return Run.open(path.parent)
