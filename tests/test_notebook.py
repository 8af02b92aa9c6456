"""The inspection notebook runs top to bottom."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT


@pytest.mark.slow
def test_inspect_trace_notebook_runs():
    path = os.path.join(ROOT, "notebooks", "inspect_trace.ipynb")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": os.path.dirname(path)}}
    ).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "enumerated d: (10, 1, 1)" in outputs
    assert "loss after one step" in outputs
