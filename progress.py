"""Progress of long work, as `logging` records of the logger `ugvae.progress`.

Every command that makes a user wait (training, evaluation, embedding, sampling, experiments)
reports through `progress(...)`, an object with tqdm's interface (iterate over it, or `update`,
`set_postfix`, `close`). Once the work has taken DELAY_S seconds, so that quick commands stay
quiet, it logs one INFO record per tenth of the work:

    epoch-run: 30% (300/1000 steps), 12 s, epoch=2/5, elbo=-80.12

with its numbers in the record's `progress` attribute (a `ProgressState`). Logging decides the rest:

    logging.getLogger("ugvae").setLevel(logging.WARNING)    # no progress, nor any info line
    logging.getLogger("ugvae.progress").addHandler(handler)  # progress lines go there too

`Console` prints ugvae's records on stderr. The command line installs one (run.py; `--quiet`
sets the level to WARNING); for a library user who configured no logging, the `ugvae` logger
shows INFO and holds a `Fallback` console, which steps aside once any other handler would take
the record (the rule of logging's lastResort), so records never print twice. Where a console
prints the records and stderr is a terminal, the work is drawn as a tqdm bar, and the console
skips that work's tenth lines (other handlers still get them); anywhere else (a log file, a
pipe, a job scheduler, a notebook) it is the plain lines, never carriage-return frames. Notices,
such as which data a run really used, are warnings of their modules' loggers: WARNING keeps them.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable
from typing import NamedTuple

logger = logging.getLogger(__name__)
package_logger = logging.getLogger(__name__.rpartition(".")[0] or __name__)
DELAY_S = 2.0


class ProgressState(NamedTuple):
    """The numbers of one progress line (the `progress` attribute of its log record)."""

    desc: str
    n: int
    total: int | None
    unit: str
    seconds: float
    postfix: str
    on_bar: bool  # a tqdm bar on the console shows this work; the console skips the line


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "", unit: str = "it", initial=0):
    """The progress of a piece of work over `iterable`, or of `total` steps advanced with `.update()`.

    It is a context manager and an iterable like tqdm's.
    """
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    return Progress(iterable, total, desc, unit, initial)


class Progress:
    """The bar's interface: a log record at each tenth of the work, and a tqdm bar where a console
    that is a terminal shows them (see the module docstring)."""

    def __init__(self, iterable, total: int | None, desc: str, unit: str, initial: int = 0):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n, self.postfix, self.start = initial, "", time.monotonic()
        self.next_tenth = self._tenth(initial) + 1
        self.shown = logger.isEnabledFor(logging.INFO)
        self.bar = None
        if self.shown and console_is_terminal() and console_prints(logger):
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total, desc=desc, unit=unit, initial=initial, dynamic_ncols=True, delay=DELAY_S, file=sys.stderr
            )

    def _tenth(self, n: int) -> int:
        return 10 * n // self.total if self.total else 0

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        if self.shown and self.total and self._tenth(self.n) >= self.next_tenth:
            self.next_tenth = self._tenth(self.n) + 1
            if time.monotonic() - self.start >= DELAY_S:
                self._log()

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())
        if self.bar is not None:
            self.bar.set_postfix(values)

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text
        if self.bar is not None:
            self.bar.set_postfix_str(text)

    def _log(self):
        seconds = time.monotonic() - self.start
        state = ProgressState(self.desc, self.n, self.total, self.unit, seconds, self.postfix, self.bar is not None)
        share = f"{100 * self.n // self.total}% " if self.total else ""
        units = self.unit if self.total == 1 else plural_noun(self.unit)
        extra = f", {self.postfix}" if self.postfix else ""
        line = f"{self.desc}: {share}({self.n}/{self.total or '?'} {units}), {seconds:.0f} s{extra}"
        logger.info(line, extra={"progress": state})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# -- the console -----------------------------------------------------------------------------


class Console(logging.Handler):
    """Records on stderr, one line each, written between the lines of a live bar; a tenth line of
    work that a bar shows is skipped. Nothing is written when there is no stderr (closed, pythonw)."""

    def emit(self, record: logging.LogRecord) -> None:
        state = getattr(record, "progress", None)
        if (state is not None and state.on_bar) or sys.stderr is None:
            return
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


class Fallback(Console):
    """The console of a library user who configured no logging: it prints only the records that
    no other handler would take."""

    def emit(self, record: logging.LogRecord) -> None:
        if not any(h is not self for h in handlers_of(logging.getLogger(record.name))):
            super().emit(record)


def handlers_of(log: logging.Logger) -> list[logging.Handler]:
    """The handlers a record of `log` reaches, as `Logger.callHandlers` walks them."""
    found: list[logging.Handler] = []
    current: logging.Logger | None = log
    while current is not None:
        found += current.handlers
        current = current.parent if current.propagate else None
    return found


def console_prints(log: logging.Logger) -> bool:
    """Whether a `Console` prints the INFO records of `log`: one installed by the application, or
    the Fallback where no other handler takes them."""
    handlers = handlers_of(log)
    return any(
        isinstance(h, Console) and h.level <= logging.INFO and (not isinstance(h, Fallback) or len(handlers) == 1)
        for h in handlers
    )


def console_is_terminal() -> bool:
    return sys.stderr is not None and sys.stderr.isatty()


def install_fallback() -> None:
    """Show ugvae's INFO records by default (unless the application set a level) through the
    Fallback console; done once, when this module is first imported."""
    if package_logger.level == logging.NOTSET:
        package_logger.setLevel(logging.INFO)
    if not any(type(h).__name__ == Fallback.__name__ for h in package_logger.handlers):
        package_logger.addHandler(Fallback())


install_fallback()


def set_enabled(enabled: bool) -> None:
    """Show or hide progress; the same as setting the level of the `ugvae.progress` logger (to
    WARNING to hide it), which is what to use."""
    logger.setLevel(logging.NOTSET if enabled else logging.WARNING)


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """`1 epoch`, `2 epochs`: the count and the noun in the right number."""
    return f"{count} {noun if count == 1 else plural_form or plural_noun(noun)}"


def plural_noun(noun: str) -> str:
    """step -> steps, pass -> passes, batch -> batches, epoch -> epochs (the units this package counts)."""
    return noun + ("es" if noun.endswith(("s", "sh", "tch", "x")) else "s")
