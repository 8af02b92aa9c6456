"""The counters of a training session and the losses not yet logged: `RunBook`.

Both drivers keep one. A step adds its loss (a device tensor) with `record`; the driver asks
`log_due`, `checkpoint_due`, `epoch_done` and, at an epoch's end, `evaluation_due` and
`epoch_checkpoint_due`, and reads the pending window with `read_window`: that read is the one
host-device sync of a window of steps. Under DDP every process keeps a book and the window is
summed over processes (`reduce`), so every process sees the same numbers.
`state_dict` is what a checkpoint keeps of the book (trained/checkpoint/payload.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


class RunBook:
    def __init__(
        self,
        epochs: int,
        steps_per_epoch: int,
        samples_per_step: int,
        log_every: int,
        checkpoint_every: int,
        eval_every: int = 1,
    ):
        self.epochs, self.steps_per_epoch, self.samples_per_step = epochs, steps_per_epoch, samples_per_step
        self.log_every, self.checkpoint_every, self.eval_every = log_every, checkpoint_every, eval_every
        self.step = self.epoch = self.step_in_epoch = 0
        self.train_seconds = 0.0
        self.last_result: dict = {}  # the numbers of the last finished epoch
        self.pending: list[torch.Tensor] = []  # losses of steps not yet logged, on the device
        self.epoch_loss_sum, self.epoch_loss_steps = 0.0, 0
        self._clock: float | None = None

    @property
    def finished(self) -> bool:
        return self.epoch >= self.epochs

    @property
    def epoch_done(self) -> bool:
        return self.step_in_epoch >= self.steps_per_epoch

    @property
    def log_due(self) -> bool:
        return self.step % self.log_every == 0 or self.epoch_done

    @property
    def checkpoint_due(self) -> bool:
        # The epoch end writes its own checkpoint, after the epoch's hooks (`epoch_checkpoint_due`).
        return self.step % self.checkpoint_every == 0 and not self.epoch_done

    @property
    def evaluation_due(self) -> bool:
        """Whether the epoch ending now is evaluated: every `eval_every`-th epoch and the last. A
        function of the epoch's index, so that a resumed run evaluates the epochs an uninterrupted
        one does."""
        done = self.epoch + 1
        return done % self.eval_every == 0 or done >= self.epochs

    @property
    def epoch_checkpoint_due(self) -> bool:
        """Whether the epoch ending now ends with a checkpoint: an evaluated one, whose checkpoint
        holds its numbers, or one whose last step falls on `checkpoint_every`."""
        return self.evaluation_due or self.step % self.checkpoint_every == 0

    def record(self, loss: torch.Tensor) -> None:
        # A copy: a captured step (graph) returns the same static tensor at every replay.
        self.pending.append(loss.detach().clone())
        self.step += 1
        self.step_in_epoch += 1

    def start_clock(self) -> None:
        self._clock = time.perf_counter()

    def stop_clock(self) -> None:
        if self._clock is not None:
            self.train_seconds += time.perf_counter() - self._clock
            self._clock = None

    def read_window(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> list[float]:
        """The pending losses as floats, summed over processes by `reduce`; they stay pending."""
        if not self.pending:
            return []
        window = torch.stack(self.pending)
        return (reduce(window) if reduce else window).tolist()

    def take_window(self, losses: list[float]) -> float | None:
        """Count the window read as `losses` into the epoch and clear it; its train ELBO per sample."""
        self.pending = []
        if not losses:
            return None
        self.epoch_loss_sum += sum(losses)
        self.epoch_loss_steps += len(losses)
        return -sum(losses) / len(losses) / self.samples_per_step

    def epoch_train_elbo(self) -> float:
        return -self.epoch_loss_sum / max(self.epoch_loss_steps, 1) / self.samples_per_step

    def next_epoch(self, result: dict) -> None:
        """Close the epoch whose numbers are `result` and start the next."""
        self.last_result, self.epoch_loss_sum, self.epoch_loss_steps = result, 0.0, 0
        self.epoch, self.step_in_epoch = self.epoch + 1, 0

    def state_dict(self, window: list[float]) -> dict:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "train_seconds": self.train_seconds,
            "last_result": self.last_result,
            "window": torch.tensor(window, dtype=torch.float32),
            "epoch_loss": (self.epoch_loss_sum, self.epoch_loss_steps),
        }

    def load_state_dict(self, state: dict, device="cpu", writer: bool = True) -> None:
        self.step, self.epoch, self.step_in_epoch = state["step"], state["epoch"], state["step_in_epoch"]
        self.train_seconds, self.last_result = state["train_seconds"], state["last_result"]
        window = state["window"].to(device)
        # Other processes add zeros, so the window is counted once when it is summed over them.
        self.pending = list(window if writer else torch.zeros_like(window))
        self.epoch_loss_sum, self.epoch_loss_steps = state["epoch_loss"]
