"""The layers of docs/design/layers.md hold: no module imports a package above it, p never
imports q, and no two modules import each other (read from the source, every import counted)."""

import ast
import os
import re

from tests.helpers import ROOT

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
    "experiments": {"trained", "model", "guide", "data", "flags", *LEAVES},
}
PARTS = ("model", "guide", "data", "trained", "train", "experiments")
# Imports against the layers, each inside the one function that needs it and with its reason.
EXEMPT = {
    ("guide.check", "train.elbo"): "check_guide(elbo=True) compares the loss that training owns with TraceEnum_ELBO",
}


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
            if (name, target) in EXEMPT:
                continue
            assert other == part or other in ALLOWED[part], f"{name} imports {target}, above or beside it"


def test_an_exempt_import_is_made_inside_a_function_only():
    found = modules()
    for name, target in EXEMPT:
        tree = ast.parse(open(found[name]).read())
        lazy = {
            target
            for function in ast.walk(tree)
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
            for node in ast.walk(function)
            if isinstance(node, ast.ImportFrom) and node.module == target
        }
        assert target in lazy, f"{name} imports {target}; it may, but only inside the function that needs it"
        top = {node.module for node in tree.body if isinstance(node, ast.ImportFrom)}
        assert target not in top, f"{name} imports {target} at the top"


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


def model_kind_branches() -> list[str]:
    """`module:line` of every question about a model's kind (`has_global_latent`, `has_mixture`) outside
    model/ and guide/, which declare them."""
    found = []
    for name, path in modules().items():
        if name.split(".")[0] in ("model", "guide"):
            continue
        for number, line in enumerate(open(path), 1):
            if re.search(r"\bhas_(global_latent|mixture)\b", line.split("#")[0]):
                found.append(f"{name}:{number}: {line.strip()}")
    return found


def test_callers_ask_the_contracts_not_the_kind_of_model():
    """Issue 26 (4): 25 branches on the model's kind outside model/ and guide/; each that is left says why."""
    branches = model_kind_branches()
    assert len(branches) <= 3, "\n".join(branches)
    for branch in branches:
        assert re.search(r"# model-kind branch \d of 3: ", branch), f"say why in a comment: {branch}"


def test_no_experiment_reaches_into_a_models_parts():
    """Experiments and the run room read a model through model/base.py's contract, not its networks."""
    private = re.compile(r"\.(cluster_prior|component_prior|cluster_weights|decoder)\b|\.components\(")
    for name, path in modules().items():
        if name.split(".")[0] in ("experiments", "trained"):
            for number, line in enumerate(open(path), 1):
                assert not private.search(line), f"{name}:{number} reaches into a model: {line.strip()}"
