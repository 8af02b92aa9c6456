"""The single-device driver: SVI steps over data resident on the device, around a `Session`.

The loss is `TraceEnum_ELBO`, sync-free (train/elbo.py) or JIT, used as a module, as in Pyro's
Lightning example: `elbo(model, guide)` is an `nn.Module` whose forward is the differentiable
loss, optimised by a `torch.optim.Adam`. It is the same estimator as `SVI.step`, but the
optimiser state is a plain state_dict (exact resume), gradients can be clipped, and the loss
never leaves the device between logs. `graph` replays the whole step as one CUDA graph
(train/graph.py).

SIGINT (Ctrl-C), SIGTERM (what schedulers and `kill` send) and SIGHUP (a closed terminal or SSH
session) let the step under way finish, write a checkpoint at it and stop with
TrainingInterrupted / TrainingTerminated, so that the resumed run repeats the losses of an
uninterrupted one. A signal during an epoch's end stops at a checkpoint after it; one
during the report at its end stops once the report's files are whole. A second signal stops at
once (a checkpoint or figure being written is left out, its older version whole). The exit code
follows the last signal, as the shell's would: 130, 143, 129.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading

import torch

from ..data import to_unit_float
from ..errors import TrainingInterrupted
from ..progress import plural, progress
from .elbo import elbo_module
from .graph import CapturedStep
from .session import Session, adam

logger = logging.getLogger(__name__)


class Trainer:
    """One session of a run on one device: its data there, the loss module and its optimiser.

    Building one writes nothing, so bad input leaves no run directory behind; `open` attaches
    the run's directory (hooks, checkpoints) once it exists.
    """

    def __init__(self, run, data, model, guide, device: torch.device):
        cfg = run.train_cfg
        model, guide = model.to(device), guide.to(device)
        self.session = Session(run, data, model, guide, device)
        self.loss_fn = elbo_module(model, guide, jit=cfg.jit, levers=cfg.levers)
        self.session.optimizer = adam(self.loss_fn.parameters(), cfg)
        self.run_step = CapturedStep(self.train_step, device) if cfg.graph else self.train_step

    def start(self, runs_dir: str = "runs", run_dir: str | None = None):
        """Make the new run's directory (trained/run.py's `claim`) and seed its steps; returns the Run."""
        self.session.seed()
        return self.session.run.claim(runs_dir, run_dir)

    def restore(self, checkpoint: dict) -> None:
        """Continue the run in its directory from `checkpoint`."""
        self.session.open_hooks()
        self.session.restore(checkpoint)

    def train_step(self, idx: torch.Tensor) -> torch.Tensor:
        session = self.session
        x = to_unit_float(session.train_images[idx])
        session.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(x)
        loss.backward()
        if session.cfg.clip_norm:
            torch.nn.utils.clip_grad_norm_(self.loss_fn.parameters(), session.cfg.clip_norm)
        session.optimizer.step()
        return loss.detach()

    def fit(self, on_finish=None) -> dict:
        """Train to the run's last epoch, write summary.json, then call `on_finish(run)` (the
        report); SIGINT and SIGTERM are honoured at every point of it (see the module docstring)."""
        session = self.session
        session.open_hooks()
        session.begin()
        book, cfg = session.book, session.cfg
        if book.finished:
            logger.info(
                f"{session.run.run_dir} has finished its {plural(cfg.epochs, 'epoch')}; writing its summary again"
            )
        bar = progress(
            total=cfg.epochs * book.steps_per_epoch,
            initial=book.step,
            desc=os.path.basename(session.run.run_dir),
            unit="step",
        )
        with stop_on_signals() as stops:
            try:
                while not book.finished:
                    book.start_clock()
                    for idx in session.sampler.epoch(book.epoch, start_step=book.step_in_epoch):
                        session.step(lambda idx=idx: self.run_step(idx))
                        bar.update()
                        train_elbo = session.after_step()
                        if train_elbo is not None:
                            bar.set_postfix(epoch=f"{book.epoch + 1}/{cfg.epochs}", elbo=f"{train_elbo:.2f}")
                        if stops:
                            book.stop_clock()
                            session.checkpoint()
                            raise session.interrupted(stops[0])
                    session.end_epoch()
                    if stops:  # a signal during the epoch's end: stop at its checkpoint
                        session.checkpoint_at_stop()
                        raise session.interrupted(stops[0])
                bar.close()
                session.close()
                summary = session.finish()
                if on_finish:
                    on_finish(session.run)
                if stops:  # a signal during the report, which finished first (its files are whole)
                    raise session.interrupted(stops[0])
                return summary
            except TrainingInterrupted:
                raise
            except KeyboardInterrupt:  # a second signal, or Ctrl-C where no handler runs
                raise session.interrupted(stops[-1] if stops else None) from None
            finally:
                bar.close()
                session.close()


# SIGHUP does not exist on Windows.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def stop_on_signals():
    """Within the block, SIGINT, SIGTERM and SIGHUP are noted in the list it yields (the loop
    stops at the next point that can take a checkpoint); a second one is noted too and raises
    KeyboardInterrupt at once. A signal ignored on entry stays ignored (`nohup` ignores SIGHUP, a
    shell ignores SIGINT in background jobs). Only the main thread can take signals: elsewhere
    the list stays empty."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, frame):
        received.append(signum)
        if len(received) > 1:
            raise KeyboardInterrupt

    caught = [signum for signum in STOP_SIGNALS if signal.getsignal(signum) is not signal.SIG_IGN]
    previous = {signum: signal.signal(signum, handler) for signum in caught}
    try:
        yield received
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
