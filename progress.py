"""Progress of long work: a tqdm bar on a terminal, a plain line every 10% anywhere else.

Every command that makes a user wait (training, evaluation, embedding, sampling, experiments)
reports through `progress(...)`, which shows itself once the work has taken DELAY_S seconds, so
that quick commands stay quiet. On a terminal that is a tqdm bar; when stderr is a file or a
pipe (a log, a job scheduler), it is one plain line per tenth of the work, never a stream of
carriage-return frames. `set_enabled(False)` (the command line's `--quiet`)
hides every bar. Notices, such as which data a run really used, are log records and not
progress, so quiet never hides them.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable

_enabled = True
DELAY_S = 2.0


def set_enabled(enabled: bool) -> None:
    global _enabled
    _enabled = enabled


def enabled() -> bool:
    return _enabled


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "", unit: str = "it", **kwargs):
    """A progress bar over `iterable` (or of `total` steps, advanced with `.update()`).

    It is a context manager and an iterable like tqdm's; extra keyword arguments go to tqdm.
    """
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if _enabled and sys.stderr is not None and sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True, delay=DELAY_S, **kwargs)
    # No stderr at all (closed, or pythonw): nothing is shown, and nothing goes to stdout instead.
    shown = _enabled and sys.stderr is not None
    return PlainProgress(iterable, total, desc, unit, shown=shown, initial=kwargs.get("initial", 0))


class PlainProgress:
    """The bar's interface, writing `desc: 30% (300/1000 steps), 12 s` at each tenth of the work."""

    def __init__(self, iterable, total: int | None, desc: str, unit: str, shown: bool = True, initial: int = 0):
        self.iterable, self.total, self.desc, self.unit, self.shown = iterable, total, desc, unit, shown
        self.n, self.postfix, self.start = initial, "", time.monotonic()
        self.next_tenth = self._tenth(initial) + 1

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
        if self.shown and self.total and self._tenth(self.n) >= self.next_tenth:
            self.next_tenth = self._tenth(self.n) + 1
            if time.monotonic() - self.start >= DELAY_S:
                self._write()

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def _write(self):
        share = f"{100 * self.n // self.total}% " if self.total else ""
        seconds = time.monotonic() - self.start
        extra = f", {self.postfix}" if self.postfix else ""
        units = self.unit if self.total == 1 else plural_noun(self.unit)
        line = f"{self.desc}: {share}({self.n}/{self.total or '?'} {units}), {seconds:.0f} s{extra}"
        print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """`1 epoch`, `2 epochs`: the count and the noun in the right number."""
    return f"{count} {noun if count == 1 else plural_form or plural_noun(noun)}"


def plural_noun(noun: str) -> str:
    """step -> steps, pass -> passes, batch -> batches, epoch -> epochs (the units this package counts)."""
    return noun + ("es" if noun.endswith(("s", "sh", "tch", "x")) else "s")
