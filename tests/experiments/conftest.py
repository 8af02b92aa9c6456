"""The tiny-run helpers live in tests/conftest.py; experiment tests import them from here too."""

from tests.conftest import run_cli, tiny_train

__all__ = ["run_cli", "tiny_train"]
