"""The tiny-run helpers live in tests/conftest.py; experiment tests import them from here too."""

from tests.conftest import tiny_train

__all__ = ["tiny_train"]
