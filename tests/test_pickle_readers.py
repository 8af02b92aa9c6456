"""No code path but the explicit upgrade reads a pickle (issue 29, item 1).

The check walks the syntax tree of every module of the package and refuses any call that
unpickles: `torch.load` (weights-only or not: its pickle is what D1 crashed), `pickle.load(s)`,
`pickle.Unpickler` (and the same through `_pickle`, `cPickle` or an alias), and `numpy.load`
with `allow_pickle` set. Only trained/checkpoint/upgrade.py, which scans a pickle's opcodes
before it loads one, may; a new reader elsewhere fails here before it can read a planted file.
"""

import ast
import os

import pytest

from tests.helpers import ROOT

PARTS = ("model", "guide", "data", "trained", "train", "experiments", "bench")
TOP = ("run.py", "errors.py", "files.py", "progress.py", "settings.py", "version.py", "__init__.py", "__main__.py")
UPGRADE = os.path.join("trained", "checkpoint", "upgrade.py")
PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib"}
UNPICKLERS = {"load", "loads", "Unpickler"}


def pickle_readers(source: str) -> list[str]:
    """`line: call` for every call in `source` that unpickles (module docstring)."""
    tree = ast.parse(source)
    aliases = {}  # local name -> what it names ("pickle", "torch.load", "numpy.load", ...)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if not name:
            continue
        head, _, rest = name.partition(".")
        full = ".".join(filter(None, [aliases.get(head, head), rest]))
        module, _, function = full.rpartition(".")
        root = module.split(".")[0]
        bad = (
            full in ("torch.load", "torch.serialization.load")
            or (root in PICKLE_MODULES and function in UNPICKLERS)
            or (full in ("numpy.load", "np.load") and _allows_pickle(node))
        )
        if bad:
            found.append(f"{node.lineno}: {ast.unparse(node)[:80]}")
    return found


def _dotted(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""


def _allows_pickle(call: ast.Call) -> bool:
    keyword = next((k.value for k in call.keywords if k.arg == "allow_pickle"), None)
    return keyword is not None and not (isinstance(keyword, ast.Constant) and not keyword.value)


def test_the_check_finds_each_kind_of_reader_and_passes_the_rest():
    bad = [
        "torch.load(path)",
        "torch.load(f, weights_only=True)",
        "import torch as t\nt.load(path)",
        "from torch import load\nload(path)",
        "torch.serialization.load(f)",
        "pickle.load(f)",
        "pickle.loads(data)",
        "import pickle as p\np.Unpickler(f).load()",
        "from pickle import loads\nloads(data)",
        "import _pickle\n_pickle.loads(data)",
        "np.load(path, allow_pickle=True)",
        "import numpy\nnumpy.load(path, allow_pickle=flag)",
    ]
    for source in bad:
        assert pickle_readers(source), source
    good = """
np.load(path)
np.load(path, allow_pickle=False)
json.loads(text)
Run.open(run_dir).load_weights()
pickletools.genops(data)
torch.save(payload, buffer)
"""
    assert pickle_readers(good) == []


def modules():
    for name in TOP:
        yield name
    for part in PARTS:
        for parent, _, names in sorted(os.walk(os.path.join(ROOT, part))):
            for name in sorted(names):
                if name.endswith(".py"):
                    yield os.path.relpath(os.path.join(parent, name), ROOT)


@pytest.mark.parametrize("path", [m for m in modules() if m != UPGRADE])
def test_no_module_but_the_upgrade_reads_a_pickle(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        assert pickle_readers(f.read()) == [], f"{path} reads a pickle; only {UPGRADE} may, after its scan"


def test_the_upgrade_is_the_one_reader():
    with open(os.path.join(ROOT, UPGRADE), encoding="utf-8") as f:
        assert len(pickle_readers(f.read())) == 1  # its torch.load, after `scan`
