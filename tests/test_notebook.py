"""The notebook trains a small run, inspects it with Pyro's tools and runs top to bottom."""

import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import ROOT


@pytest.mark.slow
def test_the_inspection_notebook_runs_and_infer_discrete_agrees_with_the_guide():
    path = os.path.join(ROOT, "notebooks", "inspect_trace.ipynb")
    nb = nbformat.read(path, as_version=4)
    assert not any("sys.path" in c.source for c in nb.cells)  # it imports the installed package
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": os.path.dirname(path)}}
    ).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "enumerated d: (10, 1, 1)" in outputs
    assert "'d': (2, 3, 5)" in outputs  # Predictive from the prior: (samples, groups, group size)
    agree = re.search(r"infer_discrete vs argmax q\(d\|z\): agree on (\d+) of (\d+) images", outputs)
    assert agree and int(agree[1]) / int(agree[2]) >= 0.5, outputs
    assert "['images[0]', 'images[1]'] (2, 8, 1, 28, 28)" in outputs
