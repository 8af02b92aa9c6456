"""README's Python example runs as written, from a folder holding a `my-sets/` of image sets."""

import json
import os
import re
import subprocess
import sys

import pytest
from PIL import Image

from tests.helpers import ROOT


def readme_example() -> str:
    text = open(os.path.join(ROOT, "README.md")).read()
    return re.search(r"<!-- python-example -->\n```python\n(.*?)```", text, re.S)[1]


@pytest.mark.slow
def test_the_python_example_of_the_readme_runs_as_written(tmp_path):
    for name, shade in (("alice", 60), ("bob", 200)):
        (tmp_path / "my-sets" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (28, 28), color=shade + 10 * i).save(tmp_path / "my-sets" / name / f"{i}.png")
    code = readme_example()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("['alice' 'bob'] (2, 10)")
    assert "['alice', 'bob'] torch.Size([2, 8, 1, 28, 28])" in proc.stdout
    assert os.path.isdir(tmp_path / "runs")


def readme_block(marker: str) -> str:
    text = open(os.path.join(ROOT, "README.md")).read()
    return re.search(rf"<!-- {marker} -->\n```python\n(.*?)```", text, re.S)[1]


def test_the_guide_example_checks_and_trains_a_guide_of_its_own(tmp_path, monkeypatch, guides_restored, capsys):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme_guide_example"}
    with pytest.warns(UserWarning, match="BetaFromPiGuide is not proven equal under the sync-free ELBO"):
        exec(readme_block("guide-example"), namespace)
    assert "BetaFromPiGuide keeps the guide contract of model ugvae" in capsys.readouterr().out
    run = namespace["run"]
    assert run.guide_name == "beta-from-pi" and os.path.isfile(run.path("summary.json"))
    with open(run.path("config.json")) as f:
        assert json.load(f)["guide_source"] == {
            "kind": "registered at run time",
            "defined_in": "readme_guide_example:BetaFromPiGuide",
        }


def test_the_readme_links_only_files_of_the_repository_and_its_figure_is_small():
    text = open(os.path.join(ROOT, "README.md")).read()
    targets = re.findall(r"\]\(((?!https?://|#)[^)]+)\)", text)
    assert targets and all(os.path.exists(os.path.join(ROOT, t)) for t in targets), targets
    (figure,) = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert os.path.getsize(os.path.join(ROOT, figure)) < 200_000
    assert "SCIENCE_NOTES" not in text and "../shared" not in text


def test_the_cpu_only_line_asks_for_the_torch_that_setup_cfg_accepts():
    """pip keeps a CPU-only torch installed first only when it is in setup.cfg's range: the README's
    line must ask PyTorch's CPU index for at least setup.cfg's floor, of torch and of torchvision."""
    import configparser

    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    floors = dict(re.findall(r"^(torch|torchvision)>=([\d.]+)", config["options"]["install_requires"], re.M))
    readme = open(os.path.join(ROOT, "README.md")).read()
    line = re.search(r"pip install ('torch[^\n]*\n[^\n]*--index-url https://download.pytorch.org/whl/cpu)", readme)
    assert line, "the README has no CPU-only install line"
    assert f"'torch>={floors['torch']}'" in line[1] and f"'torchvision>={floors['torchvision']}'" in line[1]
