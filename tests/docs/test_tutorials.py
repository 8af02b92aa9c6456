"""Each tutorial notebook runs top to bottom with the installed package, and what it shows holds.

The notebooks are stored with their outputs, which the site renders as they are; these tests run
each one again and check what matters (shapes, agreements, the tables' rows), not floats byte by
byte. A notebook never edits sys.path: it imports the installed package.
"""

import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import ROOT

TUTORIALS = os.path.join(ROOT, "docs", "tutorials")
NAMES = ("inspect-model", "own-image-sets", "writing-a-guide", "set-generation")


def run(name: str) -> tuple[str, list]:
    """The notebook executed: its text outputs joined, and its cells."""
    path = os.path.join(TUTORIALS, f"{name}.ipynb")
    nb = nbformat.read(path, as_version=4)
    assert not any("sys.path" in c.source for c in nb.cells)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": TUTORIALS}}).execute()
    return outputs(nb), nb.cells


def outputs(nb) -> str:
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            texts.append(out.get("text", "") + str(out.get("data", {}).get("text/plain", "")))
            texts.append(str(out.get("data", {}).get("text/markdown", "")))
    return "\n".join(texts)


def images(cells) -> int:
    return sum("image/png" in out.get("data", {}) for c in cells if c.cell_type == "code" for out in c.outputs)


@pytest.mark.parametrize("name", NAMES)
def test_each_tutorial_is_stored_with_its_outputs(name):
    nb = nbformat.read(os.path.join(TUTORIALS, f"{name}.ipynb"), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), f"{name} was not run before it was stored"
    assert not any(out.output_type == "error" for c in code for out in c.outputs), f"{name} stored an error"
    assert "beta" in outputs(nb)


@pytest.mark.slow
def test_inspecting_the_model_shows_shapes_the_factorisation_and_exact_clusters():
    text, cells = run("inspect-model")
    assert "enumerated d: (10, 1, 1)" in text
    assert "z <- ['beta', 'd']" in text and "beta <- ['d', 'x', 'z']" in text  # the paper's factorisation
    assert "'d': (2, 3, 5)" in text  # Predictive from the prior: (samples, groups, group size)
    agree = re.search(r"infer_discrete vs argmax q\(d\|z\): agree on (\d+) of (\d+) images", text)
    assert agree and int(agree[1]) / int(agree[2]) >= 0.5, text
    assert "p(d | ...) per image: (4, 16, 10)" in text  # compute_marginals with the recipe
    assert "['images[0]', 'images[1]'] (2, 8, 1, 8, 8)" in text and images(cells) >= 1


@pytest.mark.slow
def test_own_image_sets_train_embed_and_sample_a_row_per_set():
    text, cells = run("own-image-sets")
    assert "['digit-0', 'digit-4', 'digit-7']" in text
    assert "config.json" in text and "environment.json" in text and "summary.json" in text
    assert "['digit-0' 'digit-4' 'digit-7'] (3, 10) (36, 3)" in text  # a beta per set, a z per image
    assert images(cells) >= 3


@pytest.mark.slow
def test_writing_a_guide_checks_registers_trains_and_compares_it():
    text, _ = run("writing-a-guide")
    assert "UGVAEGuide keeps the guide contract of model ugvae" in text
    assert "TwoPlatesGuide breaks the guide contract" in text and "samples" in text
    assert "the sync-free ELBO equals TraceEnum_ELBO" in text  # BetaFromPiGuide, elbo=True
    assert "beta-from-pi GuideSource(kind='registered at run time'" in text
    assert "| structured |" in text and "| beta-from-pi |" in text  # compare's table, a row per run
    losses = re.search(r"loss: (-?\d+) at the first step, (-?\d+) after 100", text)
    assert losses and int(losses[2]) < int(losses[1]), text  # the AutoGuide's ELBO improves


@pytest.mark.slow
def test_generation_from_a_set_writes_and_shows_its_table():
    text, cells = run("set-generation")
    assert "['results.json', 'table.md', 'sets-mix.png']" in text
    rows = {}  # (B, generator): its three TVs, from the markdown table by its header's names
    header = next(line for line in text.splitlines() if line.startswith("| B |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    tv = [i for i, c in enumerate(columns) if c.startswith("TV")]
    for line in text.splitlines():
        values = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and values[0].isdigit() and len(values) == len(columns):
            rows[int(values[0]), values[columns.index("generator")]] = [float(values[i]) for i in tv]
    assert len(tv) == 3, columns
    for generator in ("beta sampling", "set-code Gaussian", "member code + noise", "beta ~ p(beta)", "new real images"):
        assert (16, generator) in rows, generator
    # what the tutorial's reading says of its table: beta is used (below the prior at every alpha)
    assert all(b < p for b, p in zip(rows[16, "beta sampling"], rows[16, "beta ~ p(beta)"]))
    assert images(cells) >= 1
