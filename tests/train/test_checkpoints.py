"""Checkpoints are atomic: a kill while one is written, or a damaged file, never costs a loadable one."""

import os
import random
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from model import ModelConfig
from train import RunError, TrainConfig, load_run, train
from train.checkpoints import (
    CHECKPOINT_KEYS,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from train.rundir import new_run_dir

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Writes checkpoints 1..3, then SIGKILLs itself half-way through writing checkpoint 4.
DIE_WHILE_WRITING = textwrap.dedent("""
    import io, os, signal, sys
    import torch
    from train import checkpoints as runs

    def payload(step):
        ckpt = {key: None for key in runs.CHECKPOINT_KEYS}
        return {**ckpt, "step": step, "model": {"w": torch.full((200_000,), float(step))}}

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
    return {**{key: None for key in CHECKPOINT_KEYS}, "step": step, "model": {"w": torch.full((10,), float(step))}}


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

    monkeypatch.setattr("train.checkpoints.torch.save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(str(tmp_path), 2, fake_payload(2), keep=3)
    assert os.listdir(tmp_path / "checkpoints") == ["step-000000001.pt"]


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, capsys):
    for step in (1, 2):
        save_checkpoint(str(tmp_path), step, fake_payload(step), keep=3)
    newest = list_checkpoints(str(tmp_path))[-1]
    with open(newest, "r+b") as f:
        f.truncate(os.path.getsize(newest) // 3)
    with pytest.raises(RunError, match="cannot be read.*delete it"):
        load_checkpoint(newest)
    capsys.readouterr()
    assert latest_checkpoint(str(tmp_path))["step"] == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "step-000000002.pt (cannot be read" in err


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
    run_dir = train(
        train_cfg, str(tmp_path), ModelConfig(x_shape=(1, 28, 28), z_dim=2, beta_dim=2, K=3, hidden=8), quiet=True
    )
    model, _, config = load_run(run_dir)
    last = load_checkpoint(list_checkpoints(run_dir)[-1])
    assert config["step"] == last["step"] == 5
    assert all(torch.equal(v, last["model"][k]) for k, v in model.state_dict().items())
