"""Structured training groups in a run: clusters:ALPHA resumes exactly; folder sub-folders as groups."""

import os
import shutil
import signal
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from tests.helpers import TINY_RUN, logged, signal_training
from ugvae import run
from ugvae.model import ModelConfig
from ugvae.train import fit, resume
from ugvae.trained import Run, TrainConfig
from ugvae.trained.checkpoint import list_checkpoints

CLUSTER_RUN = [*TINY_RUN, "--groups", "clusters:0.3", "--group-warmup", "1"]


def test_cluster_groups_start_after_warmup_and_resume_mid_epoch_exactly(tmp_path, one_thread):
    train_cfg = TrainConfig(
        dataset="synthetic:120",
        epochs=3,
        group_size=8,
        log_every=3,
        checkpoint_every=5,
        keep_checkpoints=20,
        groups="clusters:0.3",
        group_warmup=1,
    )
    model_cfg = ModelConfig(x_shape=(1, 28, 28), z_dim=2, beta_dim=2, K=3, hidden=16)
    full = fit(train_cfg, model_cfg, runs_dir=str(tmp_path / "runs")).run_dir
    assignments = Run.open(full).latest_checkpoint(training=True).assignments
    assert assignments is not None and assignments.shape == (120,)
    cut = shutil.copytree(full, str(tmp_path / "cut"))
    for path in list_checkpoints(cut):  # epoch 2 (cluster groups), 5 steps into it
        if not path.endswith("step-000000035.safetensors"):
            os.remove(path)
    resume(cut)
    assert logged(cut) == logged(full)
    random_groups = fit(replace(train_cfg, groups="random"), model_cfg, runs_dir=str(tmp_path / "random")).run_dir
    first_epoch = [r for r in logged(full) if int(r["step"]) <= 15]
    assert first_epoch == [r for r in logged(random_groups) if int(r["step"]) <= 15]  # warmup: random groups
    assert logged(full) != logged(random_groups)


@pytest.mark.slow
def test_sigkilled_cluster_run_resumes_with_the_same_losses(tmp_path, one_thread):
    killed, reference = str(tmp_path / "killed"), str(tmp_path / "reference")
    returncode, err = signal_training(CLUSTER_RUN, killed, min_step=35)  # past the warmup epoch of 25 steps
    assert returncode == -signal.SIGKILL, f"the run was not killed mid-run: {err[-500:]}"
    assert run.main(["--resume", killed]) == 0
    assert run.main([*CLUSTER_RUN, "--run-dir", reference]) == 0
    assert logged(killed) == logged(reference)


def test_folder_subfolders_train_as_pure_groups(tmp_path, one_thread):
    rng = np.random.default_rng(0)
    for kind in ("cats", "dogs", "owls"):
        os.makedirs(tmp_path / "imgs" / kind)
        for i in range(30):
            pixels = rng.integers(0, 255, (8, 8), dtype=np.uint8)
            Image.fromarray(pixels, "L").save(tmp_path / "imgs" / kind / f"{i}.png")
    argv = ["--dataset", f"folder:{tmp_path / 'imgs'}", "--image-size", "8", "--groups", "labels:0", "-B", "4"]
    argv += ["--hidden", "8", "--z-dim", "2", "--beta-dim", "2", "--K", "3", "--epochs", "1", "--quiet"]
    assert run.main([*argv, "--run-dir", str(tmp_path / "run")]) == 0
    assert Run.open(str(tmp_path / "run")).latest_checkpoint().step == 81 // 4


def test_beta_shares_of_a_mixture_train_and_are_saved(tmp_path, one_thread):
    argv = ["--dataset", "synthetic:200+synthetic:100", "--mix", "beta:0.5", "-B", "8", "--epochs", "1"]
    argv += ["--hidden", "8", "--z-dim", "2", "--beta-dim", "2", "--K", "3", "--quiet"]
    assert run.main([*argv, "--run-dir", str(tmp_path / "run")]) == 0
    assert Run.open(str(tmp_path / "run")).latest_checkpoint().config["train"]["mix"] == "beta:0.5"
    assert run.main([*argv[:3], "beta:0", *argv[4:], "--run-dir", str(tmp_path / "bad")]) == 2
