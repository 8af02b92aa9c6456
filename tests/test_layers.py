"""The layers of ../shared/ARCHITECTURE.md hold: no module imports a package above it, p never
imports q, and no two modules import each other (read from the source, every import counted)."""

import ast
import os

from tests.conftest import ROOT

# What each part may import of ours; the top-level modules (errors, files, progress, settings) are
# leaves every part may use, and flags (settings made flags) is for the command line only.
LEAVES = {"errors", "files", "progress", "version", "settings"}
ALLOWED = {
    "errors": set(),
    "files": {"errors"},
    "progress": set(),
    "version": set(),
    "settings": {"errors"},
    "flags": {"settings"},
    "model": {"errors", "settings"},
    "guide": {"model", "errors", "settings"},
    "data": {"errors", "files", "progress", "settings"},
    "trained": {"model", "guide", "data", *LEAVES},
    "train": {"trained", "model", "guide", "data", *LEAVES},
    "experiments": {"trained", "train", "model", "guide", "data", "flags", *LEAVES},
}
PARTS = ("model", "guide", "data", "trained", "train", "experiments")


def modules() -> dict[str, str]:
    """module name ('trained.run', 'errors', ...) -> path, for the package's own code."""
    found = {
        name: os.path.join(ROOT, f"{name}.py")
        for name in ("errors", "files", "progress", "version", "settings", "flags")
    }
    for part in PARTS:
        for folder, _, files in os.walk(os.path.join(ROOT, part)):
            package = os.path.relpath(folder, ROOT).replace(os.sep, ".")
            for file in sorted(files):
                if file.endswith(".py"):
                    found[package if file == "__init__.py" else f"{package}.{file[:-3]}"] = os.path.join(folder, file)
    return found


def imports_of(name: str, path: str) -> set[str]:
    """Our modules that `name` imports, anywhere in it (lazy imports in functions count too)."""
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".") if package else []
            base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            target = ".".join(base + ([node.module] if node.module else []))
            if node.module:
                found.add(target)
            else:
                found.update(f"{target}.{a.name}".strip(".") for a in node.names)
    return found


def test_no_module_imports_a_package_above_it():
    for name, path in modules().items():
        part = name.split(".")[0]
        for target in imports_of(name, path):
            other = target.split(".")[0]
            assert other == part or other in ALLOWED[part], f"{name} imports {target}, above or beside it"


def test_no_two_modules_import_each_other():
    known = modules()
    graph = {}
    for name, path in known.items():
        # A package's __init__ only re-exports; an import of `x.y` where y is a module counts as y.
        targets = set()
        for target in imports_of(name, path):
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and not known[target].endswith("__init__.py"):
                targets.add(target)
        graph[name] = targets
    state = {}

    def visit(module, trail):
        state[module] = "open"
        for target in sorted(graph[module]):
            assert state.get(target) != "open", "import cycle: " + " -> ".join([*trail, target])
            if target not in state:
                visit(target, [*trail, target])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [module])
