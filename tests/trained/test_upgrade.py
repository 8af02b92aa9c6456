"""`ugvae upgrade RUN` (trained/checkpoint/upgrade.py): pickled checkpoints of formats 1-3 become
format 4 once, exactly, with the old files kept out of the way; hostile pickles are in
tests/security/test_crafted_pickles.py."""

import hashlib
import json
import os
import random
import shutil

import numpy as np
import pytest
import torch

from tests.helpers import ROOT
from tests.security.craft import checkpoint_path, save_pickled
from ugvae import run
from ugvae.errors import RunError
from ugvae.trained import Run, load_run, upgrade_run
from ugvae.trained.checkpoint import list_checkpoints, older_checkpoints, set_rng_state
from ugvae.trained.metrics import read_metrics

FIXTURE_V1 = os.path.join(ROOT, "tests", "fixtures", "run-v1")
# sha256 of the model and guide weights as load_run of commit 3037304 (checkpoint format 1,
# numpy RNG state pickled, no version key) returned them for tests/fixtures/run-v1.
FIXTURE_V1_WEIGHTS = "17a98f0b214217a9c8adb1d17fbabc696fce0a5f05ea4f51c96bf79ee120a1bd"


def weights_digest(model, guide) -> str:
    digest = hashlib.sha256()
    for prefix, module in (("model", model), ("guide", guide)):
        for key, value in sorted(module.state_dict().items()):
            digest.update(f"{prefix}.{key}".encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def as_pickled(checkpoint, version: int, run_id=None) -> dict:
    """The dict formats 1-3 pickled for `checkpoint` (format 1: numpy's and Python's RNG as tuples)."""
    payload = {
        "step": checkpoint.step,
        "epoch": checkpoint.epoch,
        "step_in_epoch": checkpoint.step_in_epoch,
        "train_seconds": checkpoint.train_seconds,
        "last_result": checkpoint.last_result,
        "window": checkpoint.window,
        "epoch_loss": checkpoint.epoch_loss,
        "model": checkpoint.model,
        "guide": checkpoint.guide,
        "optimizer": checkpoint.optimizer,
        "config": checkpoint.config,
    }
    if version == 1:
        payload["rng"] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    else:
        rng = checkpoint.rng
        numpy = {**rng["numpy"], "name": "MT19937", "keys": rng["numpy"]["keys"].to(torch.int64)}
        payload.update(version=3, run_id=run_id, train_samples=40, group_assignments=None)
        payload["rng"] = {"torch": rng["torch"], "numpy": numpy, "python": rng["python"]}
    return payload


@pytest.fixture
def pickled_copy(small_run, tmp_path):
    """A copy of `small_run` whose checkpoints are those of format 3 it would have had (run ids kept)."""
    run_dir = shutil.copytree(small_run, str(tmp_path / "run"))
    opened = Run.open(run_dir)
    checkpoint = opened.latest_checkpoint(training=True)
    for path in list_checkpoints(run_dir):
        os.remove(path)
    save_pickled(as_pickled(checkpoint, 3, opened.run_id), checkpoint_path(run_dir, checkpoint.step, ".pt"))
    return run_dir


def test_the_format_1_fixture_upgrades_then_loads_evaluates_and_resumes(tmp_path, capsys, one_thread):
    run_dir = shutil.copytree(FIXTURE_V1, str(tmp_path / "v1"))
    assert run.main(["upgrade", run_dir]) == 0
    out = capsys.readouterr().out
    assert "wrote 1 checkpoint of the current format" in out and "the run's id is now" in out
    assert os.listdir(os.path.join(run_dir, "pickled-checkpoints")) == ["step-000000008.pt"]  # kept, out of the way
    assert os.listdir(os.path.join(run_dir, "checkpoints")) == ["step-000000008.safetensors"]
    loaded = load_run(run_dir)
    assert loaded.step == 8 and weights_digest(loaded.model, loaded.guide) == FIXTURE_V1_WEIGHTS
    config = json.load(open(os.path.join(run_dir, "config.json")))
    assert loaded.run_id == config["run_id"] == loaded.read_checkpoint(list_checkpoints(run_dir)[0]).run_id
    assert run.main(["evaluate", "--run", run_dir, "--samples", "2"]) == 0
    config["train"]["epochs"] = 2  # one more epoch than it was trained for
    open(os.path.join(run_dir, "config.json"), "w").write(json.dumps(config))
    assert run.main(["--resume", run_dir, "--quiet"]) == 0
    assert [r["step"] for r in read_metrics(os.path.join(run_dir, "metrics.csv"))] == [8, 8, 10, 16, 16]
    assert load_run(run_dir).step == 16
    assert run.main(["upgrade", run_dir]) == 0  # once: nothing is left to do
    assert "no checkpoint of the older format; nothing to do" in capsys.readouterr().out


def test_numpy_and_python_rng_states_of_format_1_convert_exactly(small_run, tmp_path):
    run_dir = shutil.copytree(small_run, str(tmp_path / "run"))
    checkpoint = Run.open(run_dir).latest_checkpoint(training=True)
    np.random.seed(3), random.seed(3), torch.manual_seed(3)
    payload = as_pickled(checkpoint, 1)
    expected = (np.random.rand(3), random.random(), torch.rand(2))
    for path in list_checkpoints(run_dir):
        os.remove(path)
    save_pickled(payload, checkpoint_path(run_dir, checkpoint.step, ".pt"))
    config = json.load(open(os.path.join(run_dir, "config.json")))
    del config["run_id"]  # a run of format 1 was made before run ids
    open(os.path.join(run_dir, "config.json"), "w").write(json.dumps(config))
    upgraded = upgrade_run(run_dir)
    assert upgraded.written == [checkpoint_path(run_dir, 5)] and upgraded.adopted_id  # a new one
    restored = Run.open(run_dir).latest_checkpoint(training=True)
    np.random.seed(9), random.seed(9), torch.manual_seed(9)
    set_rng_state(restored.rng)
    again = (np.random.rand(3), random.random(), torch.rand(2))
    assert np.array_equal(expected[0], again[0]) and expected[1] == again[1] and torch.equal(expected[2], again[2])
    assert all(torch.equal(restored.model[k], v) for k, v in checkpoint.model.items())
    assert restored.optimizer["state"].keys() == checkpoint.optimizer["state"].keys()


def test_a_run_without_an_id_adopts_the_one_its_checkpoints_carry(pickled_copy):
    """Bricking resume: config.json lost its run id; the upgrade takes the checkpoints' id, not a new one."""
    path = os.path.join(pickled_copy, "config.json")
    config = json.load(open(path))
    theirs = config.pop("run_id")
    open(path, "w").write(json.dumps(config))
    assert upgrade_run(pickled_copy).adopted_id == theirs
    assert json.load(open(path))["run_id"] == theirs and load_run(pickled_copy).step == 5


def test_a_checkpoint_of_another_run_is_set_aside_not_upgraded(pickled_copy):
    path = os.path.join(pickled_copy, "config.json")
    config = json.load(open(path))
    open(path, "w").write(json.dumps({**config, "run_id": "another"}))
    before = open(path).read()
    with pytest.raises(RunError, match="could be upgraded: step-000000005.pt \\(belongs to run .*, not to run another"):
        upgrade_run(pickled_copy)
    assert os.listdir(os.path.join(pickled_copy, "checkpoints")) == ["step-000000005.pt.unreadable"]
    assert open(path).read() == before


def test_numpy_arrays_in_a_file_of_format_3_are_refused(pickled_copy):
    """Only formats 1 and 2 pickled numpy arrays: a format-3 file holding one is crafted."""
    path = older_checkpoints(pickled_copy)[0]
    payload = torch.load(path, weights_only=True)
    payload["rng"]["numpy"] = np.random.get_state()
    save_pickled(payload, path)
    with pytest.raises(RunError, match="holds numpy arrays, which only formats 1 and 2 pickled"):
        upgrade_run(pickled_copy)


def test_an_interrupted_upgrade_finishes_without_writing_twice(pickled_copy):
    """Killed after the new file was written and before the old one was put away: run again."""
    old = older_checkpoints(pickled_copy)[0]
    kept = shutil.copy(old, str(old) + ".copy")
    upgrade_run(pickled_copy)
    os.rename(kept, old)  # the old file back in place, beside its converted copy
    new = list_checkpoints(pickled_copy)[0]
    written = os.stat(new).st_mtime_ns
    upgrade_run(pickled_copy)
    assert os.stat(new).st_mtime_ns == written and not older_checkpoints(pickled_copy)
    assert sorted(os.listdir(os.path.join(pickled_copy, "pickled-checkpoints"))) == [
        "step-000000005.pt",
        "step-000000005.pt-2",
    ]
