"""README's Python example runs as written, from a folder holding a `my-sets/` of image sets."""

import os
import re
import subprocess
import sys

import pytest
from PIL import Image

from tests.conftest import ROOT


def readme_example() -> str:
    text = open(os.path.join(ROOT, "README.md")).read()
    return re.search(r"<!-- python-example -->\n```python\n(.*?)```", text, re.S)[1]


@pytest.mark.slow
def test_the_python_example_of_the_readme_runs_as_written(tmp_path):
    for name, shade in (("alice", 60), ("bob", 200)):
        (tmp_path / "my-sets" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (28, 28), color=shade + 10 * i).save(tmp_path / "my-sets" / name / f"{i}.png")
    # The checkout under test is the package `ugvae` (as tests/conftest.py makes it here).
    code = f"import sys; sys.path.insert(0, {ROOT!r}); import _checkout; _checkout.use_checkout()\n" + readme_example()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("['alice' 'bob'] (2, 10)")
    assert "['alice', 'bob'] torch.Size([2, 8, 1, 28, 28])" in proc.stdout
    assert os.path.isdir(tmp_path / "runs")
