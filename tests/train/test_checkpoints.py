"""Checkpoints are atomic: a kill while one is written, or a damaged file, never costs a loadable one."""

import errno
import hashlib
import io
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from tests.conftest import fill
from tests.security.craft import valid_payload
from ugvae import run
from ugvae.errors import RunError
from ugvae.files import DiskFull, write_json
from ugvae.model import ModelConfig
from ugvae.train import fit
from ugvae.trained import TrainConfig, load_run
from ugvae.trained.checkpoints import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    upgrade_checkpoints,
)
from ugvae.trained.metrics import read_metrics
from ugvae.trained.run import new_run_dir

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Writes checkpoints 1..3, then SIGKILLs itself half-way through writing checkpoint 4.
DIE_WHILE_WRITING = textwrap.dedent("""
    import io, os, signal, sys
    import torch
    from _checkout import use_checkout
    use_checkout()
    from ugvae.trained import checkpoints as runs
    from tests.security.craft import valid_payload

    def payload(step):
        return valid_payload(step, weights=200_000)

    for step in (1, 2, 3):
        runs.save_checkpoint(sys.argv[1], step, payload(step), keep=5)

    real_save = torch.save

    def save_half_then_die(obj, f):
        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = save_half_then_die
    runs.save_checkpoint(sys.argv[1], 4, payload(4), keep=5)
""")


def fake_payload(step):
    return valid_payload(step)


@pytest.mark.slow
def test_sigkill_while_writing_leaves_the_previous_checkpoint_loadable(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", DIE_WHILE_WRITING, str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    folder = tmp_path / "checkpoints"
    torn = [name for name in os.listdir(folder) if ".tmp-" in name]
    assert len(torn) == 1 and (folder / torn[0]).stat().st_size > 0  # it did die mid-write
    assert [os.path.basename(p) for p in list_checkpoints(str(tmp_path))] == [
        "step-000000001.pt",
        "step-000000002.pt",
        "step-000000003.pt",
    ]
    for path in list_checkpoints(str(tmp_path)):
        load_checkpoint(path)
    assert latest_checkpoint(str(tmp_path))["step"] == 3
    # The next writer clears the torn file, which would otherwise hold a whole checkpoint's space.
    save_checkpoint(str(tmp_path), 4, fake_payload(4), keep=5)
    assert not [name for name in os.listdir(folder) if ".tmp-" in name]


def test_an_exception_while_writing_removes_the_temporary_file(tmp_path, monkeypatch):
    save_checkpoint(str(tmp_path), 1, fake_payload(1), keep=3)

    def interrupted(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr("ugvae.trained.checkpoints.torch.save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(str(tmp_path), 2, fake_payload(2), keep=3)
    assert os.listdir(tmp_path / "checkpoints") == ["step-000000001.pt"]


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, caplog):
    for step in (1, 2):
        save_checkpoint(str(tmp_path), step, fake_payload(step), keep=3)
    newest = list_checkpoints(str(tmp_path))[-1]
    with open(newest, "r+b") as f:
        f.truncate(os.path.getsize(newest) // 3)
    with pytest.raises(RunError, match="cannot be read.*delete it"):
        load_checkpoint(newest)
    caplog.clear()
    assert latest_checkpoint(str(tmp_path))["step"] == 1
    assert len(caplog.records) == 1 and "step-000000002.pt (cannot be read" in caplog.text


def test_a_foreign_file_is_not_taken_for_a_checkpoint(tmp_path):
    os.makedirs(tmp_path / "checkpoints")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "checkpoints" / "step-000000005.pt")
    with pytest.raises(RunError, match="not a checkpoint of this package"):
        load_checkpoint(str(tmp_path / "checkpoints" / "step-000000005.pt"))


def test_only_the_newest_k_checkpoints_are_kept(tmp_path):
    for step in range(1, 7):
        save_checkpoint(str(tmp_path), step, fake_payload(step), keep=2)
    assert [load_checkpoint(p)["step"] for p in list_checkpoints(str(tmp_path))] == [5, 6]


def test_rng_states_round_trip():
    state = rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(5), np.random.rand(5), random.random()
    set_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]
    if torch.cuda.is_available():
        assert "cuda" in state


def test_new_runs_never_reuse_a_directory(tmp_path):
    dirs = {new_run_dir(str(tmp_path), "folder:/data/x+y", "ugvae") for _ in range(3)}  # same second
    assert len(dirs) == 3 and all(os.path.isdir(d) for d in dirs)


def test_load_run_of_a_trained_run_restores_the_last_checkpoint(tmp_path, one_thread):
    train_cfg = TrainConfig(dataset="synthetic:40", epochs=1, group_size=8, checkpoint_every=2, keep_checkpoints=5)
    run_dir = fit(
        train_cfg, ModelConfig(x_shape=(1, 28, 28), z_dim=2, beta_dim=2, K=3, hidden=8), runs_dir=str(tmp_path)
    ).run_dir
    trained = load_run(run_dir)
    model = trained.model
    last = load_checkpoint(list_checkpoints(run_dir)[-1])
    assert trained.step == last["step"] == 5
    assert all(torch.equal(v, last["model"][k]) for k, v in model.state_dict().items())


# -- safe loading, identity, rotation by validity, full disks (issue 15) -----------------------

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


class CreatesMarker:
    """Unpickling this runs a shell command: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def copy_of(run_dir, tmp_path) -> str:
    return shutil.copytree(run_dir, str(tmp_path / "copy"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_crafted_pickle_never_runs_and_the_run_falls_back(small_run, tmp_path, capsys, caplog, writer):
    run_dir, marker = copy_of(small_run, tmp_path), tmp_path / "marker"
    evil = os.path.join(run_dir, "checkpoints", "step-000000099.pt")
    payload = {**fake_payload(99), "model": CreatesMarker(marker)}
    with open(evil, "wb") as f:
        torch.save(payload, f) if writer == "torch.save" else pickle.dump(payload, f)
    caplog.clear()
    assert load_run(run_dir).step == 5 and not marker.exists()
    assert len(caplog.records) == 1
    why = "holds objects other than tensors" if writer == "torch.save" else "it is no zip archive"
    assert f"step-000000099.pt (cannot be read ({why}" in caplog.text

    assert run.main(["evaluate", "--run", run_dir, "--samples", "2"]) == 0
    assert not marker.exists()
    assert json.load(open(os.path.join(run_dir, "eval.json")))["step"] == 5
    assert capsys.readouterr().err.count("\n") == 1

    assert run.main(["evaluate", "--checkpoint", evil, "--samples", "2"]) == 2
    err = capsys.readouterr().err
    assert not marker.exists() and err.count("\n") == 1 and "step-000000099.pt cannot be read" in err


def test_checkpoints_hold_only_plain_values(small_run):
    path = list_checkpoints(small_run)[-1]
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    ckpt = load_checkpoint(path)
    assert ckpt["run_id"] == json.load(open(os.path.join(small_run, "config.json")))["run_id"]


def test_rng_states_survive_a_save_and_a_weights_only_load(tmp_path):
    state = rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random(), np.random.randn(), random.gauss(0, 1))
    torch.save(state, tmp_path / "rng.pt")
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (torch.rand(3), np.random.rand(3), random.random(), np.random.randn(), random.gauss(0, 1))
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2:] == again[2:]


def test_a_checkpoint_of_the_previous_format_loads_with_the_same_weights():
    config = load_run(FIXTURE_V1)
    model, guide = config.model, config.guide
    assert config.step == 8 and weights_digest(model, guide) == FIXTURE_V1_WEIGHTS
    assert load_checkpoint(list_checkpoints(FIXTURE_V1)[-1]).get("version") is None


def test_a_run_of_the_previous_format_resumes(tmp_path, one_thread):
    run_dir = copy_of(FIXTURE_V1, tmp_path)
    config_path = os.path.join(run_dir, "config.json")
    config = json.load(open(config_path))
    config["train"]["epochs"] = 2  # one more epoch than it was trained for
    open(config_path, "w").write(json.dumps(config))
    assert run.main(["--resume", run_dir, "--quiet"]) == 0
    assert [r["step"] for r in read_metrics(os.path.join(run_dir, "metrics.csv"))] == [8, 8, 10, 16, 16]
    newest = load_checkpoint(list_checkpoints(run_dir)[-1])
    # The run got an id of its own, once, and kept its checkpoints without one as its own.
    config = json.load(open(config_path))
    assert config["run_id"] and config["owns_unnamed_checkpoints"] is True
    assert newest["step"] == 16 and newest["version"] == 3 and newest["run_id"] == config["run_id"]


def test_upgrading_a_format_1_run_rewrites_its_checkpoints_once(tmp_path):
    run_dir = copy_of(FIXTURE_V1, tmp_path)
    path = list_checkpoints(run_dir)[-1]
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path)  # numpy's array constructors
    assert upgrade_checkpoints(run_dir, run_id="abc") == [path]
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    upgraded = load_checkpoint(path, run_id="abc")
    assert upgraded["version"] == 3 and upgraded["run_id"] == "abc"
    assert upgrade_checkpoints(run_dir, run_id="abc") == []  # once
    config = json.load(open(os.path.join(run_dir, "config.json")))
    write_json(os.path.join(run_dir, "config.json"), {**config, "run_id": "abc"})
    loaded = load_run(run_dir)
    assert loaded.step == 8 and weights_digest(loaded.model, loaded.guide) == FIXTURE_V1_WEIGHTS


def test_a_newer_format_is_refused_naming_the_version(tmp_path):
    save_checkpoint(str(tmp_path), 1, {**fake_payload(1), "version": 99}, keep=3)
    with pytest.raises(RunError, match="format version 99, newer than the 3 .* update ugvae"):
        load_checkpoint(list_checkpoints(str(tmp_path))[-1])


def test_rotation_keeps_good_checkpoints_past_an_empty_newest_file(tmp_path, caplog):
    for step in (1, 2):
        save_checkpoint(str(tmp_path), step, fake_payload(step), keep=2)
    open(tmp_path / "checkpoints" / "step-000000003.pt", "wb").close()  # a disk that filled up
    save_checkpoint(str(tmp_path), 4, fake_payload(4), keep=2)
    assert [load_checkpoint(p)["step"] for p in list_checkpoints(str(tmp_path))] == [2, 4]
    assert (tmp_path / "checkpoints" / "step-000000003.pt.unreadable").exists()  # set aside, not deleted
    assert "set aside" in caplog.text


def test_a_checkpoint_copied_in_from_another_run_is_refused(small_run, tmp_path, capsys, caplog, one_thread):
    # The same config, trained longer: its step-10 checkpoint would pass every config check.
    cfg = TrainConfig(dataset="synthetic:40", epochs=2, group_size=8, checkpoint_every=2, keep_checkpoints=5)
    model_cfg = ModelConfig(x_shape=(1, 28, 28), z_dim=2, beta_dim=2, K=3, hidden=8)
    other = fit(cfg, model_cfg, runs_dir=str(tmp_path / "runs")).run_dir
    run_dir = copy_of(small_run, tmp_path)
    foreign = shutil.copy(list_checkpoints(other)[-1], os.path.join(run_dir, "checkpoints"))
    assert load_run(run_dir).step == 5
    assert "step-000000010.pt (belongs to run" in caplog.text
    assert run.main(["evaluate", "--checkpoint", foreign, "--samples", "2"]) == 2
    err = capsys.readouterr().err
    assert "copied in from another run is never used" in err and err.count("\n") == 1
    # Renamed to pose as another step, it is refused too.
    os.rename(foreign, os.path.join(run_dir, "checkpoints", "step-000000005.pt"))
    with pytest.raises(RunError, match="holds step 10, not the step its name says"):
        load_checkpoint(os.path.join(run_dir, "checkpoints", "step-000000005.pt"))


def test_a_full_disk_while_saving_keeps_the_older_checkpoints(tmp_path, monkeypatch):
    save_checkpoint(str(tmp_path), 1, fake_payload(1), keep=1)
    real_save = torch.save

    def disk_fills(obj, f):
        real_save(obj, io.BytesIO())
        f.write(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("ugvae.trained.checkpoints.torch.save", disk_fills)
    with pytest.raises(DiskFull, match=r"no space left on the device to write .*step-000000002.pt .* bytes are free"):
        save_checkpoint(str(tmp_path), 2, fake_payload(2), keep=1)
    assert os.listdir(tmp_path / "checkpoints") == ["step-000000001.pt"]
    assert load_checkpoint(list_checkpoints(str(tmp_path))[0])["step"] == 1


def test_disk_full_names_the_bytes_needed(tmp_path, monkeypatch):
    def full_disk_fsync(fd):  # the disk fills when the data is flushed (delayed allocation, NFS)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk_fsync)
    with pytest.raises(DiskFull, match=r"summary.json \(it needs 12 bytes"):
        write_json(str(tmp_path / "summary.json"), {"a": 1})
    assert os.listdir(tmp_path) == []


def test_a_disk_that_fills_during_a_checkpoint_and_an_evaluation_keeps_older_files(small_run, tiny_disk, capsys):
    run_dir = shutil.copytree(small_run, str(tiny_disk / "run"))
    assert run.main(["evaluate", "--run", run_dir, "--samples", "2"]) == 0
    eval_before = open(os.path.join(run_dir, "eval.json")).read()
    fill(tiny_disk)
    capsys.readouterr()
    assert run.main(["evaluate", "--run", run_dir, "--samples", "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no space left on the device to write" in err and "eval.json" in err
    assert open(os.path.join(run_dir, "eval.json")).read() == eval_before
    # A resumed run with another epoch to go cannot write its checkpoint or its log.
    config = json.load(open(os.path.join(run_dir, "config.json")))
    config["train"]["epochs"] = 3
    os.remove(os.path.join(tiny_disk, "filler"))
    write_json(os.path.join(run_dir, "config.json"), config)
    fill(tiny_disk)
    before = {p: open(p, "rb").read() for p in list_checkpoints(run_dir)}
    assert run.main(["--resume", run_dir, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no space left on the device to write" in err
    assert {p: open(p, "rb").read() for p in list_checkpoints(run_dir)} == before
    assert not [n for n in os.listdir(os.path.join(run_dir, "checkpoints")) if ".tmp-" in n]
    for path in before:
        load_checkpoint(path)


def test_a_run_whose_checkpoints_all_fail_says_so_in_one_line(small_run, tmp_path, capsys):
    run_dir = copy_of(small_run, tmp_path)
    for path in list_checkpoints(run_dir):
        open(path, "wb").close()
    assert run.main(["evaluate", "--run", run_dir, "--samples", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no checkpoint of" in err and "step-000000002.pt (cannot be read" in err
