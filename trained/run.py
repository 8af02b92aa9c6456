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
        """The run in `run_dir`, from its config.json; weights load on first use of `model`/`guide`."""
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
        self.device = resolve_device(device)
        if self._trained is not None:
            self._trained[0].to(self.device), self._trained[1].to(self.device)
        return self

    def load_weights(self, checkpoint: Checkpoint | None = None) -> Run:
        """Load `checkpoint` (default: the newest good one that fits) into a fresh model and guide."""
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
        return self._weights()[0]

    @property
    def guide(self) -> Guide:
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

    def evaluate(
        self,
        samples: int = 100,
        seed: int = 0,
        images_per_pass: int = 8192,
        data_dir: str | None = None,
        test_data=None,
    ):
        """Test ELBO, IWAE bound, clustering and beta diagnostics on the run's test split, or on
        `test_data` (in-memory images as `fit` takes them; what a run trained on tensors needs): a dict."""
        from .evaluation import evaluate

        return evaluate(self, samples, seed, images_per_pass, data_dir, test_data)


def load_run(run_dir: str | os.PathLike, device: str = "cpu") -> Run:
    """The trained run in `run_dir` on `device`, its weights from its newest good checkpoint."""
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
