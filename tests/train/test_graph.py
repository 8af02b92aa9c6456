"""--graph: the whole training step replayed as a CUDA graph follows the eager step and resumes exactly."""

import pyro
import pytest
import torch

from ugvae import run
from ugvae.model import ModelConfig
from ugvae.train import new_trainer
from ugvae.train.graph import CapturedStep, GraphNeedsCUDA
from ugvae.train.loop import Trainer
from ugvae.trained import TrainConfig

FIX = "use --device cuda, or drop --graph"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
MODEL = ModelConfig(x_shape=(1, 28, 28), z_dim=2, beta_dim=2, K=3, hidden=16)


def test_a_captured_step_off_a_gpu_is_refused_with_the_fix():
    with pytest.raises(GraphNeedsCUDA, match=FIX):
        CapturedStep(lambda idx: idx.sum(), "cpu")
    with pytest.raises(ValueError, match="set `device` to cuda, or drop `graph`"):
        TrainConfig(graph=True, device="cpu")
    with pytest.raises(ValueError, match="drop `validate`"):
        TrainConfig(graph=True, device="cuda", validate=True)


def test_the_cli_refuses_graph_on_cpu(capsys, tmp_path):
    argv = ["--dataset", "synthetic:40", "-B", "8", "--epochs", "1", "--graph", "--quiet", "--runs-dir", str(tmp_path)]
    assert run.main(argv) == 2
    assert FIX in capsys.readouterr().err


def test_validation_defaults_off_on_cuda_only():
    assert TrainConfig().validation_on("cpu") and not TrainConfig().validation_on("cuda")
    assert TrainConfig(validate=True).validation_on("cuda") and not TrainConfig(validate=False).validation_on("cpu")


def train_steps(cfg: TrainConfig, n: int) -> tuple[Trainer, torch.Tensor]:
    trainer = new_trainer(cfg, MODEL)
    batches = iter(trainer.session.sampler.epoch(0))
    return trainer, torch.stack(
        [trainer.session.step(lambda: trainer.run_step(next(batches))).clone() for _ in range(n)]
    )


def weights(trainer) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in trainer.loss_fn.parameters()])


@needs_cuda
def test_captured_training_steps_equal_eager_steps():
    cfg = TrainConfig(dataset="synthetic:400", epochs=1, group_size=8, groups_per_step=2, device="cuda", lr=1e-2)
    eager, eager_losses = train_steps(cfg, 20)
    captured, captured_losses = train_steps(TrainConfig(**{**cfg.to_dict(), "graph": True}), 20)
    assert isinstance(captured.run_step, CapturedStep) and captured.run_step.graph is not None
    assert torch.allclose(captured_losses, eager_losses, rtol=1e-6, atol=1e-6)
    assert torch.allclose(weights(captured), weights(eager), rtol=1e-6, atol=1e-6)


@needs_cuda
def test_a_captured_run_resumes_where_it_stopped(tmp_path):
    """Stop after a checkpoint, resume into a fresh trainer (new buffers, capturable Adam), match the straight run.

    The straight run replays steps 7-12 where the resumed one warms up eagerly, so the match is to rounding."""
    cfg = TrainConfig(
        dataset="synthetic:400", epochs=1, group_size=8, groups_per_step=2, device="cuda", graph=True, lr=1e-2
    )
    straight, straight_losses = train_steps(cfg, 12)
    pyro.clear_param_store()
    first = new_trainer(cfg, MODEL)
    run = first.start(run_dir=str(tmp_path / "run"))
    batches = iter(first.session.sampler.epoch(0))
    for _ in range(6):
        first.session.step(lambda: first.run_step(next(batches)))
    first.session.checkpoint()
    resumed = new_trainer(cfg, MODEL)
    resumed.session.run = run
    resumed.restore(run.latest_checkpoint(training=True))
    book = resumed.session.book
    batches = iter(resumed.session.sampler.epoch(book.epoch, start_step=book.step_in_epoch))
    resumed_losses = torch.stack(
        [resumed.session.step(lambda: resumed.run_step(next(batches))).clone() for _ in range(6)]
    )
    assert torch.allclose(resumed_losses, straight_losses[6:], rtol=1e-6, atol=1e-7)
    assert torch.allclose(weights(resumed), weights(straight), rtol=1e-6, atol=1e-7)


@needs_cuda
def test_capture_refuses_pyro_validation():
    step = CapturedStep(lambda idx: idx.sum(), "cuda")
    with pyro.validation_enabled(True), pytest.raises(ValueError, match="--no-validate"):
        step(torch.zeros(2, dtype=torch.long, device="cuda"))
