"""What happens around the steps of a training session, the same under both drivers.

A hook reacts to four moments. The drivers (train/loop.py on one device, train/lightning.py
across processes) call every hook of their list in order, and `epoch_hooks` builds that list
for a process:

    on_restore(step)                a checkpoint of `step` was restored
    on_log(book, train_elbo)        a window of steps was logged
    on_epoch_end(book, result)      an epoch finished; hooks add their numbers to `result`
    close()                         the session ends, finished or not

    TestMetrics      test ELBO and cluster usage on the test groups      (writer, evaluated epochs)
    BetaDiagnostics  does beta carry information (trained/diagnostics.py)  (writer, evaluated epochs)
    ClusterRefresh   the cluster assignments `clusters:ALPHA` groups draw from next  (every process)
    MetricsFile      a row per logged window and per epoch in metrics.csv  (writer)
    TensorBoard      the same numbers as TensorBoard scalars, when tensorboard is installed  (writer)
    (Lightning)      the same numbers through LightningModule.log (train/lightning.py)  (every process)

A logged window is the row `step_row`, an epoch's end `epoch_row`: metrics.csv and every logger
outside the run get the same rows (trained/metrics.py `logged_scalars` names their numbers).

Evaluated epochs are every `eval_every`-th and the last (train/book.py `evaluation_due`): only
they run TestMetrics and BetaDiagnostics, so every epoch's row holds its train ELBO and only an
evaluated epoch's holds test numbers.

The writer is the one process that writes the run directory (rank 0 under DDP); every process
refreshes the clusters, since each draws groups from its own copy of the sampler.
"""

from __future__ import annotations

import logging

import torch

from ..trained.diagnostics import beta_diagnostics, cluster_assignments
from ..trained.evaluation import test_metrics
from ..trained.metrics import MetricsLog, logged_scalars
from ..trained.tensorboard import Events, summary_writer

logger = logging.getLogger(__name__)


class Hook:
    def on_restore(self, step: int) -> None:
        pass

    def on_log(self, book, train_elbo: float) -> None:
        pass

    def on_epoch_end(self, book, result: dict) -> None:
        pass

    def close(self) -> None:
        pass


class TestMetrics(Hook):
    def __init__(self, model, guide, test_images: torch.Tensor, test_parts: list[torch.Tensor]):
        self.model, self.guide, self.images, self.parts = model, guide, test_images, test_parts

    def on_epoch_end(self, book, result):
        if book.evaluation_due:
            result.update(test_metrics(self.model, self.guide, self.images, self.parts))


class BetaDiagnostics(Hook):
    def __init__(self, model, guide, test_images: torch.Tensor, groups: torch.Tensor):
        self.model, self.guide, self.images, self.groups = model, guide, test_images, groups

    def on_epoch_end(self, book, result):
        if book.evaluation_due:
            result.update(beta_diagnostics(self.model, self.guide, self.images, self.groups))


class ClusterRefresh(Hook):
    """`clusters:ALPHA` groups are drawn over argmax q(d | z) of the training images, refreshed
    at each epoch end once `warmup` epochs of random groups are over."""

    def __init__(self, sampler, guide, train_images: torch.Tensor, warmup: int):
        self.sampler, self.guide, self.images, self.warmup = sampler, guide, train_images, warmup

    def on_epoch_end(self, book, result):
        next_epoch = book.epoch + 1
        if self.warmup <= next_epoch < book.epochs:
            self.sampler.set_assignments(cluster_assignments(self.guide, self.images))


def step_row(book, train_elbo: float) -> dict:
    """The metrics.csv row of the window logged at the book's step."""
    return {"step": book.step, "epoch": book.epoch, "kind": "step", "train_elbo": train_elbo}


def epoch_row(book, result: dict) -> dict:
    """The metrics.csv row of the epoch whose numbers are `result` (the cluster shares, a list, stay out)."""
    numbers = {k: v for k, v in result.items() if k != "cluster_shares"}
    return {
        "step": book.step,
        "epoch": book.epoch,
        "kind": "epoch",
        "elapsed_s": round(book.train_seconds, 3),
        **numbers,
    }


class MetricsFile(Hook):
    def __init__(self, path: str):
        self.log = MetricsLog(path)

    def on_restore(self, step):
        self.log.truncate_after(step)  # the resumed session logs these steps again

    def on_log(self, book, train_elbo):
        self.log.write(**step_row(book, train_elbo))

    def on_epoch_end(self, book, result):
        self.log.write(**epoch_row(book, result))


class TensorBoard(Hook):
    """Every number of metrics.csv as a scalar (trained/metrics.py `logged_scalars`): train/elbo per
    window, train/epoch_elbo, test/*, beta/* per epoch."""

    def __init__(self, writer: Events):
        self.writer = writer

    @classmethod
    def in_dir(cls, log_dir: str) -> TensorBoard | None:
        writer = summary_writer(log_dir)
        return None if writer is None else cls(writer)

    def on_log(self, book, train_elbo):
        self.write(step_row(book, train_elbo))

    def on_epoch_end(self, book, result):
        self.write(epoch_row(book, result))

    def write(self, row: dict):
        for tag, value in logged_scalars(row).items():
            self.writer.add_scalar(tag, value, row["step"])

    def close(self):
        self.writer.close()


def epoch_hooks(
    *,
    writer: bool,
    model,
    guide,
    sampler,
    train_images: torch.Tensor,
    test_images: torch.Tensor | None,
    test_parts: list[torch.Tensor],
    diagnostic_groups: torch.Tensor,
    metrics_path: str | None,
    tensorboard_dir: str | None,
    warmup: int,
) -> list[Hook]:
    """The hooks of one process, in the order they run (numbers first, then their writers)."""
    hooks: list[Hook] = []
    if writer:
        hooks += [
            TestMetrics(model, guide, test_images, test_parts),
            BetaDiagnostics(model, guide, test_images, diagnostic_groups),
        ]
    if sampler.reads_assignments:
        hooks.append(ClusterRefresh(sampler, guide, train_images, warmup))
    if writer:
        hooks.append(MetricsFile(metrics_path))
        board = TensorBoard.in_dir(tensorboard_dir) if tensorboard_dir else None
        if board is not None:
            hooks.append(board)
    return hooks
