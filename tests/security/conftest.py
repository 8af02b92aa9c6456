"""Copies of the small trained run (tests/conftest.py `small_run`) that crafted-file tests plant their files in."""

import shutil

import pytest


@pytest.fixture
def run_copy(small_run, tmp_path):
    """A copy of `small_run` of this test's own."""
    return shutil.copytree(small_run, str(tmp_path / "run"))
