"""Time a checkpoint's write, with rotation over the kept ones, and its loads (trained/checkpoint/).

For the tiny model of the tests and the paper's MNIST model (ModelConfig's defaults), with an
Adam state of one step: the file's size; the median time of `CheckpointFolder.write` once `keep`
checkpoints are kept (each write validates, writes atomically with fsync, and rotates); of a load
for the weights (what `load_run` and `evaluate` read) and for a resume; and the ratio of the write
to a torch.save of the same state into memory, the serialisation alone.

    python -m bench.checkpoint_io --keep 3 --repeats 15
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time

import torch

from ugvae.guide import build
from ugvae.model import ModelConfig
from ugvae.trained import Run, TrainConfig
from ugvae.trained.checkpoint import Checkpoint, CheckpointFolder, expect, latest, rng_state

MODELS = {
    "tiny": ModelConfig(x_shape=(1, 28, 28), z_dim=2, beta_dim=2, K=3, hidden=8),
    "mnist": ModelConfig(),
}


def trained_state(model_cfg: ModelConfig):
    """A run in a fresh folder, its modules, and a Checkpoint of them after one Adam step."""
    run = Run(model_cfg, TrainConfig(dataset="synthetic:40")).claim(run_dir=tempfile.mkdtemp() + "/run")
    model, guide = build(model_cfg, run.model_name, run.guide_name)
    parameters = list(torch.nn.ModuleList([model, guide]).parameters())
    optimizer = torch.optim.Adam(parameters, lr=1e-3)
    for p in parameters:
        p.grad = torch.randn_like(p) * 1e-3
    optimizer.step()

    def at(step: int) -> Checkpoint:
        return Checkpoint(
            run_id=run.run_id,
            step=step,
            epoch=0,
            step_in_epoch=step,
            steps_per_epoch=10**6,
            train_seconds=1.0,
            epoch_loss=(-1.0, step),
            last_result={},
            train_samples=40,
            config=run.config_payload(),
            model=model.state_dict(),
            guide=guide.state_dict(),
            window=torch.zeros(0),
            optimizer=optimizer.state_dict(),
            rng=rng_state(),
        )

    return run, model, guide, at


def median_ms(times: list[float]) -> float:
    return 1e3 * statistics.median(times)


def measure(name: str, model_cfg: ModelConfig, keep: int, repeats: int) -> None:
    run, model, guide, at = trained_state(model_cfg)
    fits = expect(run, model, guide, training=True, train_samples=40)
    folder = CheckpointFolder(run.run_dir, fits, keep)
    writes = []
    for step in range(1, keep + repeats + 1):
        started = time.perf_counter()
        path = folder.write(at(step))
        writes.append(time.perf_counter() - started)
    writes = writes[keep:]  # with `keep` checkpoints kept before each
    serialise = []
    for _ in range(repeats):
        started = time.perf_counter()
        torch.save(
            {"model": model.state_dict(), "guide": guide.state_dict(), "optimizer": at(1).optimizer}, io.BytesIO()
        )
        serialise.append(time.perf_counter() - started)
    loads = {}
    for what, training in (("weights", False), ("resume", True)):
        wanted = expect(run, model, guide, training=training, train_samples=40)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            latest(run.run_dir, wanted)
            times.append(time.perf_counter() - started)
        loads[what] = median_ms(times)
    size = sum(t.numel() * t.element_size() for t in [*model.state_dict().values(), *guide.state_dict().values()])
    print(
        f"{name:>6}: weights {size / 1e6:.2f} MB, file {os.path.getsize(path) / 1e6:.2f} MB; "
        f"write with {keep} kept {median_ms(writes):.1f} ms ({median_ms(writes) / median_ms(serialise):.1f}x a "
        f"torch.save into memory); load for the weights {loads['weights']:.1f} ms, "
        f"for a resume {loads['resume']:.1f} ms"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", type=int, default=3, help="checkpoints kept (rotation reads their headers)")
    parser.add_argument("--repeats", type=int, default=15, help="timed writes and loads per model")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for name, model_cfg in MODELS.items():
        measure(name, model_cfg, args.keep, args.repeats)


if __name__ == "__main__":
    main()
