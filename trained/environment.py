"""What a run really used: RUN/environment.json, one record per training session.

config.json says what was asked for ("mnist", device "auto"); this says what it resolved to:

    versions     python, torch, pyro-ppl, numpy, ugvae; the git commit of the checkout it ran from
    device       the torch device trained on, its name, and torch's thread count
    data         per split the dataset's source (files, a download, the offline fallback, a
                 folder, in-memory tensors), its number of images and image shape, the notices
                 shown about it, and for tensors the sha256 of the argument they came from
                 (`content_hash`), which a resume checks

A resumed or extended run appends its session, so a run trained on two machines says so.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

import torch

from ..files import read_json, write_json

ENVIRONMENT_FILE = "environment.json"
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def versions() -> dict:
    import numpy
    import pyro

    from ..version import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro-ppl": pyro.__version__,
        "numpy": numpy.__version__,
        "ugvae": __version__,
        "git_commit": git_commit(),
    }


def git_commit() -> str | None:
    """The commit of the checkout ugvae runs from (`+changes` when it has uncommitted ones); None
    when it is installed from a wheel or git is missing."""
    if not (PACKAGE_ROOT / ".git").exists():
        return None
    try:
        run = lambda *args: subprocess.run(  # noqa: E731
            ["git", "-C", str(PACKAGE_ROOT), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        commit = run("rev-parse", "HEAD")
        return commit + ("+changes" if run("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return None


def device_record(device: torch.device) -> dict:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = cpu_name()
    return {"device": str(device), "device_name": name, "threads": torch.get_num_threads()}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def data_record(image_set) -> dict:
    """The provenance of one split (an ImageSet)."""
    record = {
        "dataset": image_set.name,
        "source": image_set.source,
        "images": len(image_set),
        "image_shape": list(image_set.x_shape),
        "notices": [image_set.notice] if image_set.notice else [],
    }
    if image_set.content_hash is not None:
        record["content_hash"] = image_set.content_hash
    return record


def session_record(device: torch.device, train_set, test_set, from_step: int) -> dict:
    return {
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "from_step": from_step,
        **versions(),
        **device_record(device),
        "data": {"train": data_record(train_set), "test": data_record(test_set)},
    }


def record_session(run_dir: str, record: dict) -> None:
    """Append a session to RUN/environment.json (written atomically)."""
    sessions = read_sessions(run_dir)
    write_json(os.path.join(run_dir, ENVIRONMENT_FILE), {"sessions": [*sessions, record]})


def read_sessions(run_dir: str) -> list[dict]:
    """The sessions of environment.json; [] for a run made before it existed, or a damaged file."""
    try:
        sessions = read_json(os.path.join(run_dir, ENVIRONMENT_FILE)).get("sessions")
    except (OSError, ValueError, AttributeError):  # missing, or damaged (DataError is a ValueError)
        return []
    return [s for s in sessions if isinstance(s, dict)] if isinstance(sessions, list) else []


def data_summary(run_dir: str) -> str | None:
    """`source (N train / M test)` of the run's last session, or None where nothing is recorded."""
    sessions = read_sessions(run_dir)
    data = sessions[-1].get("data") if sessions else None
    if not isinstance(data, dict) or not all(isinstance(data.get(s), dict) for s in ("train", "test")):
        return None
    train, test = data["train"], data["test"]
    return f"{train.get('source') or train.get('dataset')} ({train.get('images')} train / {test.get('images')} test)"


def content_hashes(run_dir: str) -> tuple[str | None, str | None]:
    """(train, test): the sha256 of the in-memory tensors each split of the run's last session came
    from (the same for a test split held out of `train_data`); None where nothing is recorded."""
    sessions = read_sessions(run_dir)
    data = sessions[-1].get("data") if sessions else None
    splits = [data.get(split) if isinstance(data, dict) else None for split in ("train", "test")]
    hashes = [split.get("content_hash") if isinstance(split, dict) else None for split in splits]
    train, test = (h if isinstance(h, str) else None for h in hashes)
    return train, test
