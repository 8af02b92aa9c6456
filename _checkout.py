"""A checkout of ugvae is the package `ugvae` itself: setup.cfg maps this folder to that name.

Installed (`pip install .` or `-e .`), `import ugvae` finds it. What runs straight from a
checkout (`python run.py`, `python -m bench.train_step`, the tests) calls `use_checkout()`
first, so that `ugvae` is the checkout the command was started from, whatever else is installed.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def use_checkout(name: str = "ugvae"):
    """Import this folder as the package `name` (once per process) and return it."""
    loaded = sys.modules.get(name)
    if loaded is not None and Path(loaded.__file__).resolve().parent == ROOT:
        return loaded
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
    return package
