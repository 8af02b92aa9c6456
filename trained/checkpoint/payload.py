"""What a checkpoint holds, `Checkpoint`, and how it is laid out in a file of format 4.

A checkpoint holds everything a training step depends on, so that a resumed run repeats the
losses of an uninterrupted one exactly: the book's counters and the losses not yet logged
(train/book.py), the sampler's cluster assignments (data/sampling.py), the model's, guide's and
optimiser's state, the RNG states of torch, CUDA, numpy and Python, and the run it belongs to
(its config and run id).

In the file (trained/checkpoint/tensorfile.py), every tensor is a safetensors entry and every
other field a JSON text in the metadata, under the names below; `encode` and `decode` are the
one place that maps one to the other.

    tensors                             metadata (JSON)
    model.NAME, guide.NAME              format "ugvae-checkpoint", version "4" (plain text)
    optimizer.PARAM.KEY  (Adam moments) run_id, step, epoch, step_in_epoch, steps_per_epoch,
    rng.torch, rng.cuda.I               train_seconds, epoch_loss [sum, count], last_result,
    rng.numpy.keys  (MT19937, uint32)   train_samples, config (the run's config.json),
    window  (losses not yet logged)     optimizer {param_groups, state: non-tensor entries},
    assignments  (one cluster a sample) rng {numpy: pos, has_gauss, cached_gaussian;
                                             python: version, state, gauss_next; cuda: count}
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import numpy as np
import torch

FORMAT = "ugvae-checkpoint"
VERSION = 4  # 4: safetensors and JSON; 3: pickled, RNG states as tensors, run_id; 2: version key; 1: none
# The metadata keys, each a JSON text but `format` and `version`.
FIELDS = (
    "format",
    "version",
    "run_id",
    "step",
    "epoch",
    "step_in_epoch",
    "steps_per_epoch",
    "train_seconds",
    "epoch_loss",
    "last_result",
    "train_samples",
    "config",
    "optimizer",
    "rng",
)
# What a resume reads beyond the weights: tensors whose names start with these.
TRAINING_TENSORS = ("optimizer.", "rng.", "window", "assignments")


@dataclass(frozen=True)
class Checkpoint:
    """A run's state at `step`. Loaded for the weights only (`load_run`, `evaluate`), the fields
    a resume alone needs are None: `window`, `assignments`, `optimizer`, `rng`."""

    run_id: str
    step: int
    epoch: int
    step_in_epoch: int
    steps_per_epoch: int | None  # None in files upgraded from a format that did not keep it
    train_seconds: float
    epoch_loss: tuple[float, int]  # the sum and count of the losses logged in this epoch
    last_result: dict  # the numbers of the last finished epoch
    train_samples: int | None
    config: dict  # the config.json of the run when it was written
    model: dict[str, torch.Tensor]
    guide: dict[str, torch.Tensor]
    window: torch.Tensor | None = None
    assignments: torch.Tensor | None = None
    optimizer: dict | None = None  # a torch.optim state_dict
    rng: dict | None = None  # `rng_state()`

    def book_state(self) -> dict:
        """The counters and window in the layout of `RunBook.load_state_dict` (train/book.py)."""
        return {
            "step": self.step,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "train_seconds": self.train_seconds,
            "last_result": self.last_result,
            "window": self.window,
            "epoch_loss": self.epoch_loss,
        }


def rng_state() -> dict:
    """The RNG states of torch, CUDA (every device), numpy and Python."""
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.copy()),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore `rng_state()`."""
    torch.set_rng_state(state["torch"].cpu())
    numpy = state["numpy"]
    keys = numpy["keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, numpy["pos"], numpy["has_gauss"], numpy["cached_gaussian"]))
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss_next"]))
    if state.get("cuda") and torch.cuda.is_available():
        # A run moved to a machine with fewer GPUs restores the generators it still has.
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), index)


def _json(value) -> str:
    # NaN and inf stay what they are (a test metric may be either); validation decides where they may be.
    return json.dumps(value, separators=(",", ":"))


def encode(checkpoint: Checkpoint) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of the file that holds `checkpoint`, which must hold every field."""
    c = checkpoint
    tensors = {f"model.{k}": v for k, v in c.model.items()}
    tensors.update({f"guide.{k}": v for k, v in c.guide.items()})
    tensors["window"] = c.window
    if c.assignments is not None:
        tensors["assignments"] = c.assignments
    optimizer = {"param_groups": c.optimizer["param_groups"], "state": {}}
    for param, entry in c.optimizer["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{param}.{key}"] = value
            else:  # a number kept by an optimiser other than Adam
                optimizer["state"].setdefault(str(param), {})[key] = value
    rng = c.rng
    tensors["rng.torch"] = rng["torch"]
    tensors["rng.numpy.keys"] = rng["numpy"]["keys"]
    for index, cuda_state in enumerate(rng.get("cuda", [])):
        tensors[f"rng.cuda.{index}"] = cuda_state
    rng_fields = {
        "numpy": {k: rng["numpy"][k] for k in ("pos", "has_gauss", "cached_gaussian")},
        "python": rng["python"],
        "cuda": len(rng.get("cuda", [])),
    }
    values = {
        "run_id": c.run_id,
        "step": c.step,
        "epoch": c.epoch,
        "step_in_epoch": c.step_in_epoch,
        "steps_per_epoch": c.steps_per_epoch,
        "train_seconds": c.train_seconds,
        "epoch_loss": list(c.epoch_loss),
        "last_result": c.last_result,
        "train_samples": c.train_samples,
        "config": c.config,
        "optimizer": optimizer,
        "rng": rng_fields,
    }
    metadata = {"format": FORMAT, "version": str(VERSION), **{k: _json(v) for k, v in values.items()}}
    assert tuple(metadata) == FIELDS
    return tensors, metadata


def decode(fields: dict, tensors: dict[str, torch.Tensor]) -> Checkpoint:
    """The Checkpoint of validated metadata `fields` and the `tensors` read (see `Checkpoint`)."""

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {name[len(prefix) :]: t for name, t in tensors.items() if name.startswith(prefix)}

    optimizer = rng = None
    if "rng.torch" in tensors:  # read for a resume
        state = {int(param): dict(entry) for param, entry in fields["optimizer"]["state"].items()}
        for name, tensor in part("optimizer.").items():
            param, key = name.split(".", 1)
            state.setdefault(int(param), {})[key] = tensor
        optimizer = {"state": state, "param_groups": fields["optimizer"]["param_groups"]}
        saved = fields["rng"]
        rng = {
            "torch": tensors["rng.torch"],
            "numpy": {"keys": tensors["rng.numpy.keys"], **saved["numpy"]},
            "python": saved["python"],
            "cuda": [tensors[f"rng.cuda.{i}"] for i in range(saved["cuda"])],
        }
    return Checkpoint(
        run_id=fields["run_id"],
        step=fields["step"],
        epoch=fields["epoch"],
        step_in_epoch=fields["step_in_epoch"],
        steps_per_epoch=fields["steps_per_epoch"],
        train_seconds=fields["train_seconds"],
        epoch_loss=(fields["epoch_loss"][0], fields["epoch_loss"][1]),
        last_result=fields["last_result"],
        train_samples=fields["train_samples"],
        config=fields["config"],
        model=part("model."),
        guide=part("guide."),
        window=tensors.get("window"),
        assignments=tensors.get("assignments"),
        optimizer=optimizer,
        rng=rng,
    )
