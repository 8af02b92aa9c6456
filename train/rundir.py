"""Run directories and `load_run`.

A run directory holds `config.json` (model and training configs, the model and guide names),
`checkpoints/` (see `train/checkpoints.py`), `metrics.csv`, `summary.json` and the figures and
experiments drawn from it. Runs are never overwritten: a new run always gets a new directory.
config.json names the run by a random `run_id`, which every checkpoint repeats, so that a
checkpoint copied in from another run is never taken for one of this run (runs made before
run ids have none, and take checkpoints without one).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import uuid
from dataclasses import dataclass

from ..errors import RunError
from ..files import write_json
from ..guide import Guide, build, default_guide
from ..model import ModelConfig
from .checkpoints import check_compatible, latest_checkpoint
from .config import TrainConfig, resolve_device


def new_output_dir(parent: str, name: str) -> str:
    """A fresh `parent/name`, or `parent/name-2`, ...: an earlier output is never overwritten."""
    base, n = os.path.join(parent, name), 1
    path = base
    while True:
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            n += 1
            path = f"{base}-{n}"


def new_run_dir(runs_dir: str, dataset: str, model: str) -> str:
    """A fresh `runs_dir/<dataset>-<model>-<timestamp>[-n]`; never an existing one."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9_.+-]", "_", dataset.replace("folder:", "").strip("/"))
    return new_output_dir(runs_dir, f"{safe}-{model}-{stamp}")


def claim_run_dir(path: str) -> str:
    """Create the run directory `path`, refusing one that exists so that no run is overwritten."""
    try:
        os.makedirs(path)
    except FileExistsError:
        raise RunError(
            f"run directory {path} already exists and runs are never overwritten; pick another "
            f"--run-dir, or continue that run with --resume {path}"
        ) from None
    return path


def save_config(run_dir: str, model_cfg: ModelConfig, train_cfg: TrainConfig, extra: dict | None = None) -> str:
    """Write config.json of a new run; returns the run id it gives the run."""
    guide_name = train_cfg.guide or default_guide(train_cfg.model)
    run_id = uuid.uuid4().hex
    payload = {
        "run_id": run_id,
        "model": model_cfg.to_dict(),
        "train": train_cfg.to_dict(),
        "model_name": train_cfg.model,
        "guide_name": guide_name,
        **(extra or {}),
    }
    write_json(os.path.join(run_dir, "config.json"), payload)
    return run_id


def load_config(run_dir: str) -> tuple[ModelConfig, TrainConfig, dict]:
    """(model config, training config, the whole config.json) of a run directory."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        raise RunError(f"{run_dir} is not a run directory (no config.json); pass a directory made by `run.py train`")
    try:
        with open(path) as f:
            payload = json.load(f)
        if not isinstance(payload.get("run_id", ""), str):
            raise ValueError(f"run_id must be a string, got {payload['run_id']!r}")
        return ModelConfig.from_dict(payload["model"]), TrainConfig.from_dict(payload["train"]), payload
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError, ValueError) as e:
        raise RunError(f"{path} is corrupt ({e}); restore it or start a new run") from None


def read_config_file(path: str) -> tuple[ModelConfig, TrainConfig]:
    """(model config, training config) from a config.json, or from the run directory holding one."""
    run_dir = path if os.path.isdir(path) else os.path.dirname(path) or "."
    if not os.path.isdir(path) and os.path.basename(path) != "config.json":
        raise RunError(f"{path} is not a run's config.json; pass RUN_DIR/config.json")
    model_cfg, train_cfg, _ = load_config(run_dir)
    return model_cfg, train_cfg


@dataclass
class LoadedRun:
    """A trained run: model and guide (eval mode, newest good checkpoint), their configs, its step.

    It unpacks as `model, guide, run = load_run(...)`, and `run["train"]`, `run["model"]`,
    `run["step"]`, `run["run_dir"]` still answer as the dict that load_run used to return.
    """

    model: object
    guide: Guide
    model_cfg: ModelConfig
    train_cfg: TrainConfig
    step: int
    run_dir: str

    @property
    def guide_name(self) -> str:
        return self.train_cfg.guide or default_guide(self.train_cfg.model)

    def __iter__(self):
        return iter((self.model, self.guide, self))

    def __getitem__(self, key: str):
        legacy = {"model": self.model_cfg, "train": self.train_cfg, "step": self.step, "run_dir": self.run_dir}
        return legacy[key]


def load_run(run_dir: str, device: str = "cpu") -> LoadedRun:
    """The run in `run_dir`, with weights from its newest good checkpoint, on `device`."""
    model_cfg, train_cfg, saved = load_config(run_dir)
    guide_name = train_cfg.guide or default_guide(train_cfg.model)
    device = resolve_device(device)
    model, guide = build(model_cfg, train_cfg.model, guide_name)
    ckpt = latest_checkpoint(run_dir, saved.get("run_id"))
    if ckpt is None:
        raise RunError(f"{run_dir} holds no readable checkpoint; train it first or resume it with --resume")
    check_compatible(ckpt, model_cfg, train_cfg.model, guide_name)
    model.load_state_dict(ckpt["model"])
    guide.load_state_dict(ckpt["guide"])
    model.to(device).eval()
    guide.to(device).eval()
    return LoadedRun(model, guide, model_cfg, train_cfg, ckpt["step"], run_dir)
