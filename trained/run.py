"""One run and its one owner, `Run`: configs, names, identity, launch options and directory.

A command builds its Run once: from values for a new run (`Run(model_cfg, train_cfg)`, then
`claim` makes its directory and writes config.json), or from a run directory (`Run.open`, which
reads config.json once). Everything else asks the Run:

    run_dir      the directory; a new run never takes an existing one
    model_cfg    sizes of p and q (model/config.py)
    train_cfg    how the run is trained (trained/config.py)
    model_name   registry names; the guide's default is resolved here, once
    guide_name
    run_id       a random id that every checkpoint repeats (trained/checkpoints.py)
    launch       Lightning's launch options and world size, or None for a run on one device

The directory holds config.json (the above), checkpoints/ (trained/checkpoints.py), metrics.csv
(trained/metrics.py), summary.json, and .lock (trained/lock.py: one writer at a time). A trained run
answers for its model: `run.model` and `run.guide` hold the weights of its newest good
checkpoint (eval mode, on `run.device`), and `embed`, `sample`, `reconstruct` and `evaluate`
apply them to new data (trained/inference.py, trained/evaluation.py).

Runs made before run ids have none in config.json. The first command that writes into such a
run gives it one (config.json is rewritten atomically) and marks that its older checkpoints,
which name no run, are its own.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..errors import ConfigError, DataError, RunError
from ..files import make_dirs, read_json, write_json
from ..guide import Guide, build, default_guide, guide_class
from ..model import ModelConfig
from .checkpoint_schema import Expected, expected_state
from .checkpoints import check_compatible, latest_checkpoint, load_checkpoint
from .config import LaunchConfig, TrainConfig, resolve_device
from .lock import run_lock

CONFIG_FILE = "config.json"


@dataclass
class Run:
    model_cfg: ModelConfig
    train_cfg: TrainConfig
    run_dir: str | None = None  # None until `claim` for a new run
    run_id: str | None = None
    launch: LaunchConfig | None = None
    world_size: int | None = None  # processes a Lightning run trained on
    # A run made before run ids, given one later: its checkpoints without an id are its own.
    owns_unnamed_checkpoints: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __post_init__(self):
        guide_class(self.train_cfg.model, self.train_cfg.guide)  # an unknown name fails here, once
        self.guide_name = self.train_cfg.guide or default_guide(self.train_cfg.model)
        self._trained: tuple | None = None  # (model, guide, step) once loaded

    @property
    def model_name(self) -> str:
        return self.train_cfg.model

    # -- config.json ------------------------------------------------------------------
    @classmethod
    def open(cls, run_dir: str | os.PathLike, device: str = "cpu") -> Run:
        """The run in `run_dir`, from its config.json; weights load on first use of `model`/`guide`."""
        run_dir = os.fspath(run_dir)
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
            return cls(
                model_cfg=ModelConfig.from_dict(saved["model"]),
                train_cfg=TrainConfig.from_dict(saved["train"]),
                run_dir=run_dir,
                run_id=run_id,
                launch=launch,
                world_size=world_size,
                owns_unnamed_checkpoints=saved.get("owns_unnamed_checkpoints", False) is True,
                device=resolve_device(device),
            )
        except DataError as e:
            raise RunError(f"{e}; restore it from a copy or start a new run") from None
        except (KeyError, TypeError, ValueError) as e:
            what = f"it lacks {e}" if isinstance(e, KeyError) else str(e) or type(e).__name__
            raise RunError(f"{path} is corrupt ({what}); restore it from a copy or start a new run") from None

    def config_payload(self) -> dict:
        payload = {
            "run_id": self.run_id,
            "model": self.model_cfg.to_dict(),
            "train": self.train_cfg.to_dict(),
            "model_name": self.model_name,
            "guide_name": self.guide_name,
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

    def ensure_id(self) -> None:
        """Give a run made before run ids its id, once; its checkpoints without one stay its own."""
        if self.run_id is None:
            self.run_id, self.owns_unnamed_checkpoints = uuid.uuid4().hex, True
            self.save_config()

    def extend(self, epochs: int) -> None:
        """Train to `epochs` epochs in all from now on; config.json records the new total."""
        self.train_cfg = replace(self.train_cfg, epochs=epochs)
        self.save_config()

    # -- the directory ----------------------------------------------------------------
    def path(self, *parts: str) -> str:
        if self.run_dir is None:
            raise RunError("this run has no directory yet; claim one first")
        return os.path.join(self.run_dir, *parts)

    def lock(self, new: bool = False, elsewhere: str | None = None):
        """Hold RUN/.lock while the block writes into the run (trained/lock.py); `elsewhere`: the
        field that sends the command's output out of the run, for the refusal of a read-only run."""
        return run_lock(self.run_dir, new=new, elsewhere=elsewhere)

    def latest_checkpoint(self, map_location="cpu", expect: Expected | None = None) -> dict | None:
        """The newest checkpoint of this run that passes every check (trained/checkpoints.py), with
        `expect` (`expected_state`) the shapes of the live modules too; None when it has none."""
        return latest_checkpoint(self.run_dir, self.run_id, map_location, self.owns_unnamed_checkpoints, expect)

    def read_checkpoint(self, path: str, map_location="cpu") -> dict:
        """The checkpoint file `path`, checked to be one of this run's and to fit its model and guide."""
        model, guide = build(self.model_cfg, self.model_name, self.guide_name)
        expect = expected_state(model, guide, config=self.config_key())
        return load_checkpoint(path, map_location, self.run_id, self.owns_unnamed_checkpoints, expect)

    def config_key(self, training: bool = False) -> tuple:
        """What a checkpoint of this run was made with (trained/checkpoints.py `config_differences`);
        `training` adds the fields that fix the stream of training groups, which a resume needs."""
        return (self.model_cfg, self.model_name, self.guide_name) + ((self.train_cfg,) if training else ())

    # -- the trained model -----------------------------------------------------------
    def to(self, device: str | torch.device) -> Run:
        self.device = resolve_device(str(device))
        if self._trained is not None:
            self._trained[0].to(self.device), self._trained[1].to(self.device)
        return self

    def load_weights(self, checkpoint: dict | None = None) -> Run:
        """Load `checkpoint` (default: the newest good one that fits) into a fresh model and guide."""
        model, guide = build(self.model_cfg, self.model_name, self.guide_name)
        if checkpoint is None:
            checkpoint = self.latest_checkpoint(expect=expected_state(model, guide, config=self.config_key()))
            if checkpoint is None:
                raise RunError(f"{self.run_dir} holds no readable checkpoint; train it first, or resume it")
        check_compatible(checkpoint, self.model_cfg, self.model_name, self.guide_name)
        model.load_state_dict(checkpoint["model"])
        guide.load_state_dict(checkpoint["guide"])
        model.to(self.device).eval(), guide.to(self.device).eval()
        self._trained = (model, guide, checkpoint["step"])
        return self

    def _weights(self) -> tuple:
        if self._trained is None:
            self.load_weights()
        return self._trained

    @property
    def model(self) -> torch.nn.Module:
        return self._weights()[0]

    @property
    def guide(self) -> Guide:
        return self._weights()[1]

    @property
    def step(self) -> int:
        """The training step of the weights in `model` and `guide`."""
        return self._weights()[2]

    # -- what a trained run computes --------------------------------------------------
    def embed(self, images, group_size: int | None = None):
        """q(beta | X) of every group and q(z | x), q(d | z) of every image: an `Embeddings`.

        `images`: a folder (each sub-folder one group of any size; a flat folder cut into groups
        of `group_size`) or floats in [0, 1] shaped (G, B, C, H, W) or (B, C, H, W) for one group.
        """
        from .inference import embed

        return embed(self, images, group_size)

    def sample(self, num_groups: int | None = None, group_size: int = 8, beta_from=None, seed: int | None = None):
        """New groups, each sharing one beta: `num_groups` (default 4) from p(beta), or `num_groups`
        (default 1) for each set of `beta_from`, from that set's E q(beta | X). A `Samples`."""
        from .inference import sample

        return sample(self, num_groups, group_size, beta_from, seed)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean reconstructions of groups x (G, B, C, H, W) from the posterior means."""
        from .inference import reconstruct

        return reconstruct(self.model, self.guide, x)

    def evaluate(self, samples: int = 100, seed: int = 0, images_per_pass: int = 8192, data_dir: str | None = None):
        """Test ELBO, IWAE bound, clustering and beta diagnostics on the run's test split (a dict)."""
        from .evaluation import evaluate

        return evaluate(self, samples, seed, images_per_pass, data_dir)


def load_run(run_dir: str | os.PathLike, device: str = "cpu") -> Run:
    """The trained run in `run_dir` on `device`, its weights from its newest good checkpoint."""
    return Run.open(run_dir, device).load_weights()


# -- fresh directories ----------------------------------------------------------------
def check_output_parent(parent: str) -> None:
    """Refuse, before any work, a `parent` of outputs that is no folder (a file, or a link to one)."""
    if os.path.lexists(parent) and not os.path.isdir(parent):
        raise RunError(f"{parent} is a file where a folder of outputs belongs; move it aside")


def new_output_dir(parent: str, name: str) -> str:
    """A fresh `parent/name`, or `parent/name-2`, ...: an earlier output is never overwritten."""
    check_output_parent(parent)
    base, n = os.path.join(parent, name), 1
    path = base
    while True:
        try:
            make_dirs(path, exist_ok=False)
            return path
        except FileExistsError:
            n += 1
            path = f"{base}-{n}"


def new_run_dir(runs_dir: str, dataset: str, model: str) -> str:
    """A fresh `runs_dir/<dataset>-<model>-<timestamp>[-n]`; never an existing one."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9_.+-]", "_", dataset.replace("folder:", "").strip("/"))
    # The end of a long folder path names it best; a name stays well under NAME_MAX (255 bytes).
    return new_output_dir(runs_dir, f"{safe[-120:]}-{model}-{stamp}")


def claim_dir(path: str) -> str:
    """Create the directory `path`, refusing one that exists so that no run is overwritten."""
    try:
        make_dirs(path, exist_ok=False)
    except FileExistsError:
        raise RunError(
            f"run directory {path} already exists and runs are never overwritten; pick another `run_dir`, "
            "or continue that run with `resume`"
        ) from None
    return path


def read_config_file(path: str | os.PathLike) -> Run:
    """The Run of a config.json, or of the run directory holding one (a template for a new run)."""
    path = Path(path)
    if path.is_dir():
        return Run.open(path)
    if path.name != CONFIG_FILE:
        raise ConfigError(f"{path} is not a run's config.json; pass RUN_DIR/config.json")
    return Run.open(path.parent)


@contextlib.contextmanager
def removed_if_empty(run_dir: str):
    """Remove `run_dir` again when the block fails while it is still empty: bad input leaves no run behind."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            os.rmdir(run_dir)
        raise
