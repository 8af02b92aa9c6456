"""The documentation site builds with no warning, names every public name, and reaches every page.

The build runs Sphinx on docs/ as CI's users would (`python -m sphinx -W --keep-going`), from the
installed package; the notebooks render from their stored outputs (test_tutorials.py runs them).
"""

import importlib
import os
import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT

DOCS = os.path.join(ROOT, "docs")
PAGE_SUFFIXES = (".md", ".rst", ".ipynb")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-E", "-b", "html", DOCS, str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def documented(site) -> set[str]:
    """Every object the API reference documents (Sphinx's inventory of the built site)."""
    from sphinx.util.inventory import InventoryFile

    with open(site / "objects.inv", "rb") as f:
        inventory = InventoryFile.load(f, "", os.path.join)
    return {name for kind, entries in inventory.items() if kind.startswith("py:") for name in entries}


@pytest.mark.slow
def test_the_site_builds_with_warnings_as_errors(site):
    assert (site / "index.html").is_file() and (site / "api" / "ugvae.html").is_file()
    for tutorial in ("inspect-model", "own-image-sets", "writing-a-guide", "set-generation"):
        html = (site / "tutorials" / f"{tutorial}.html").read_text()
        assert "<img" in html or tutorial == "writing-a-guide", f"{tutorial} lost its figures"


def public_names() -> dict[str, object]:
    """qualified name -> object, for ugvae.__all__ and the public names of its documented packages."""
    import ugvae

    names = {f"ugvae.{n}": getattr(ugvae, n) for n in ugvae.__all__}
    for package in ("model", "guide", "data"):
        module = importlib.import_module(f"ugvae.{package}")
        names.update({f"ugvae.{package}.{n}": getattr(module, n) for n in module.__all__})
    from ugvae.experiments.cli import COMMANDS, EXPERIMENTS

    for command in (*COMMANDS.values(), *EXPERIMENTS.values()):
        module = importlib.import_module(command.module, "ugvae.experiments")
        for attribute in (command.function, command.settings):
            names[f"{module.__name__}.{attribute}"] = getattr(module, attribute)
    return names


def resolve(name: str):
    """The object a documented name stands for (None where it does not import)."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            obj = getattr(obj, attribute, None)
        return obj
    return None


@pytest.mark.slow
def test_every_public_name_is_in_the_api_reference(site):
    # An object re-exported under several names (ugvae.ImageTensors is ugvae.data.ImageTensors,
    # ugvae.data.DataError is ugvae.errors.DataError) is documented once, under any of them.
    found = documented(site)
    documented_objects = {id(obj) for obj in map(resolve, found) if obj is not None}
    missing = [name for name, obj in public_names().items() if name not in found and id(obj) not in documented_objects]
    assert not missing, f"not in docs/api: {missing}"


def toctree_entries(path: str) -> list[str]:
    """The documents a page's toctrees list, as paths relative to docs/ without a suffix."""
    text = open(path, encoding="utf-8").read()
    if path.endswith(".ipynb"):
        return []
    blocks = re.findall(r"```\{toctree\}\n(.*?)```", text, re.S) + re.findall(
        r"\.\. toctree::\n((?:[ \t]+.*\n|\n)*)", text
    )
    here = os.path.dirname(os.path.relpath(path, DOCS))
    entries = []
    for block in blocks:
        for line in block.splitlines():
            line = line.strip()
            if line and not line.startswith(":"):
                entries.append(os.path.normpath(os.path.join(here, line)))
    return entries


def pages() -> set[str]:
    found = set()
    for folder, dirs, files in os.walk(DOCS):
        dirs[:] = [d for d in dirs if not d.startswith(("_", ".")) and d != "data"]
        for name in files:
            if name.endswith(PAGE_SUFFIXES) and not name.startswith("_"):
                found.add(os.path.splitext(os.path.relpath(os.path.join(folder, name), DOCS))[0])
    return found


def test_every_page_is_reachable_from_the_index():
    every = pages()
    reached, todo = set(), ["index"]
    while todo:
        page = todo.pop()
        if page in reached:
            continue
        reached.add(page)
        source = next(
            os.path.join(DOCS, page + s) for s in PAGE_SUFFIXES if os.path.exists(os.path.join(DOCS, page + s))
        )
        todo += [entry for entry in toctree_entries(source) if entry in every]
    assert every - reached == set(), f"pages no toctree reaches: {sorted(every - reached)}"
    assert {"getting-started", "tutorials/inspect-model", "api/ugvae", "results/index"} <= reached


def test_the_layers_page_states_the_layers_the_test_enforces():
    from tests.test_layers import ALLOWED

    text = open(os.path.join(DOCS, "design", "layers.md"), encoding="utf-8").read()
    rows = dict(re.findall(r"^\| `(\w+)/` \| .*? \| ([\w, ]+) \|$", text, re.M))
    assert set(rows) == {"model", "guide", "data", "trained", "train", "experiments"}
    for part, allowed in rows.items():
        assert {w.strip() for w in allowed.split(",")} == ALLOWED[part], part


def test_the_site_is_built_from_the_installed_package():
    for folder, _, files in os.walk(DOCS):
        for name in files:
            if name.endswith((".py", ".ipynb")) and "_build" not in folder:
                assert "sys.path" not in open(os.path.join(folder, name), encoding="utf-8").read(), name
