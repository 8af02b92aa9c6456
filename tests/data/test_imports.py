"""data/ imports nothing of ours above it (only errors.py and files.py), and no two data modules import each other."""

import ast
import os

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "data")


def our_imports(path: str) -> set[str]:
    """The modules of ours that a data/ module imports, anywhere in it, as 'data.x', 'errors' or 'files'."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = ["data"] if node.level == 1 else []
            module = ".".join(base + ([node.module] if node.module else []))
            names = [module] if node.module else [f"data.{a.name}" for a in node.names]
            found.update(names)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
            assert not (module or "").startswith("ugvae"), f"{path} imports {module} absolutely"
    return found


def test_data_imports_only_errors_files_and_itself_without_cycles():
    graph = {}
    for name in sorted(os.listdir(DATA)):
        if name.endswith(".py"):
            module = "data" if name == "__init__.py" else f"data.{name[:-3]}"
            graph[module] = our_imports(os.path.join(DATA, name))
    assert "data.sampling" in graph and "data.grouped" in graph
    for module, imports in graph.items():
        above = {i for i in imports if not i.startswith("data")} - {"errors", "files"}
        assert not above, f"{module} imports {above}, above data/"
    # Depth-first search for a cycle among the modules (the package __init__ only re-exports).
    state = {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph.get(module, set()) - {"data"}):
            assert state.get(target) != "open", f"import cycle: {' -> '.join(path + [target])}"
            if target in graph and target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [module])
