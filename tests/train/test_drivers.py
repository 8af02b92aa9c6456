"""The two drivers agree: the same options through the single-device loop and through Lightning,
on one CPU process, give the same config, metrics, checkpoints and losses; validation, graph and
extension behave alike."""

import json
import os

import pytest
import torch

pytest.importorskip("lightning")

from tests.helpers import logged
from ugvae.errors import ConfigError, TrainingDiverged  # noqa: E402
from ugvae.model import ModelConfig  # noqa: E402
from ugvae.train import fit, resume  # noqa: E402
from ugvae.trained import LaunchConfig, Run, TrainConfig, load_run  # noqa: E402
from ugvae.trained.checkpoint import list_checkpoints  # noqa: E402

pytestmark = pytest.mark.slow  # Lightning's start-up costs a few seconds per run

MODEL = ModelConfig(x_shape=(1, 8, 8), z_dim=2, beta_dim=2, K=3, hidden=16)
ONE_CPU = LaunchConfig(strategy="auto", devices=1, accelerator="cpu")


def tiny(**changes) -> TrainConfig:
    fields = dict(dataset="synthetic:96", image_size=8, epochs=2, group_size=4, groups_per_step=2, lr=1e-2)
    return TrainConfig(**{**fields, "log_every": 1, "checkpoint_every": 5, "keep_checkpoints": 20, **changes})


def test_one_process_under_lightning_trains_exactly_as_the_single_device_loop(tmp_path, one_thread):
    single = fit(tiny(), MODEL, runs_dir=str(tmp_path / "single")).run_dir
    light = fit(tiny(), MODEL, runs_dir=str(tmp_path / "lightning"), launch=ONE_CPU).run_dir

    configs = [json.load(open(os.path.join(d, "config.json"))) for d in (single, light)]
    assert configs[1].pop("lightning") == {**ONE_CPU.to_dict(), "world_size": 1}
    assert configs[0].pop("run_id") != configs[1].pop("run_id")
    assert configs[0] == configs[1]

    # The same columns and rows: every logged step and every epoch's test numbers, to the last digit.
    assert logged(single) == logged(light) and len(logged(single)) == 2 * 12 + 2

    steps = [[os.path.basename(p) for p in list_checkpoints(d)] for d in (single, light)]
    assert steps[0] == steps[1]
    a, b = (Run.open(d).latest_checkpoint(training=True) for d in (single, light))
    assert (a.step, a.epoch, a.steps_per_epoch, a.epoch_loss) == (b.step, b.epoch, b.steps_per_epoch, b.epoch_loss)
    for part in ("model", "guide"):
        assert all(torch.equal(getattr(a, part)[k], getattr(b, part)[k]) for k in getattr(a, part))
    assert {k: v for k, v in a.config.items() if k not in ("run_id", "lightning")} == {
        k: v for k, v in b.config.items() if k not in ("run_id", "lightning")
    }


def test_lightning_extends_a_run_with_more_epochs(tmp_path, one_thread):
    run = fit(tiny(epochs=1), MODEL, runs_dir=str(tmp_path), launch=ONE_CPU)
    extended = resume(run.run_dir, epochs=2)
    assert extended.train_cfg.epochs == 2 and json.load(open(run.path("config.json")))["train"]["epochs"] == 2
    assert load_run(run.run_dir).step == 2 * 12
    epochs = [int(r["epoch"]) for r in logged(run.run_dir) if r["test_elbo"]]
    assert epochs == [0, 1]


def test_validation_names_the_invalid_parameter_under_both_drivers(tmp_path, one_thread):
    cfg = tiny(lr=100.0, epochs=3, checkpoint_every=1, validate=True)
    for launch in (None, ONE_CPU):
        with pytest.raises(TrainingDiverged, match=r"at step \d+: the \w+ of a \w+ distribution became invalid"):
            fit(cfg, MODEL, runs_dir=str(tmp_path / str(launch is None)), launch=launch)


def test_a_captured_step_is_refused_by_name_under_lightning(tmp_path):
    with pytest.raises(ConfigError, match="`graph`"):
        fit(tiny(graph=True, device="auto"), MODEL, runs_dir=str(tmp_path), launch=ONE_CPU)
    assert os.listdir(tmp_path) == []  # refused before any run directory was made
