"""Fixtures of the run room's tests: the training tests' one-thread switch, and the small run's
copies of tests/security (a test here damages or plants files in a copy of its own)."""

from tests.security.conftest import run_copy
from tests.train.conftest import one_thread

__all__ = ["one_thread", "run_copy"]
