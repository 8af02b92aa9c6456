"""Every file the package writes goes through the atomic writer (files.py).

The check walks the syntax tree of each module of experiments/, trained/, train/ and data/ and
refuses any other way to write a file: `open` (or `Path.open`, `os.open`) for writing, `write_text`/`write_bytes`,
shutil copies, and `np.save`/`np.savez`/`.savefig`/`torch.save`/`.tofile` aimed at anything but
an in-memory buffer (`io.BytesIO()`) or the file object that `atomic_write` hands to its writer.
A new writer that bypasses files.py fails here, before it can leave a torn file on a full disk.
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCANNED = ("experiments", "trained", "train", "data")
SAVERS = {"save", "savez", "savez_compressed", "savetxt", "savefig", "tofile", "imsave", "imwrite", "to_csv"}
WRITE_MODES = set("wax+")


def _name(node) -> str:
    """`np.savez` -> "np.savez", `open` -> "open"; "" for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _name(node.value)
        return f"{inner}.{node.attr}" if inner else node.attr
    return ""


def _argument(call: ast.Call, position: int, *keywords: str):
    if len(call.args) > position:
        return call.args[position]
    return next((k.value for k in call.keywords if k.arg in keywords), None)


def _buffers(tree) -> set[str]:
    """Names that hold no path: `x = io.BytesIO()`, and the parameters of a writer given to atomic_write."""
    names, writers = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            if _name(node.value.func).split(".")[-1] in ("BytesIO", "StringIO"):
                names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        if isinstance(node, ast.Call) and _name(node.func).split(".")[-1] == "atomic_write":
            for arg in node.args[1:]:
                if isinstance(arg, ast.Lambda):
                    names |= {a.arg for a in arg.args.args}
                elif isinstance(arg, ast.Name):
                    writers.add(arg.id)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name in writers:
            names |= {a.arg for a in node.args.args}
    return names


def non_atomic_writes(source: str) -> list[str]:
    """`line: call` for every write in `source` that does not go through the atomic writer."""
    tree = ast.parse(source)
    buffers = _buffers(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        last = name.split(".")[-1]
        bad = False
        if name == "os.open":
            bad = any(flag in ast.unparse(node) for flag in ("O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND"))
        elif last == "open":
            # open(path, mode): a mode that is not a constant may write. Path(...).open(mode): other
            # methods called open (Run.open(run_dir)) take no mode, so only a written one counts.
            method = isinstance(node.func, ast.Attribute) and name not in ("io.open", "gzip.open", "bz2.open")
            mode = _argument(node, 0 if method else 1, "mode")
            constant = isinstance(mode, ast.Constant) and isinstance(mode.value, str)
            bad = bool(WRITE_MODES & set(mode.value)) if constant else mode is not None and not method
        elif last in ("write_text", "write_bytes") or name.startswith("shutil.") and last.startswith(("copy", "move")):
            bad = True
        elif last in SAVERS and isinstance(node.func, ast.Attribute):
            target = _argument(node, 1, "f") if name == "torch.save" else _argument(node, 0, "fname", "file", "fp")
            bad = not (isinstance(target, ast.Name) and target.id in buffers)
        if bad:
            found.append(f"{node.lineno}: {ast.unparse(node)[:80]}")
    return found


def test_the_check_finds_each_kind_of_writer_and_passes_the_atomic_ones():
    bad = [
        'open(path, "w")',
        'open(os.path.join(out, "table.md"), mode="a")',
        "open(path, mode)",
        'Path(out).open("w")',
        'Path(out).open(mode="wb")',
        'Path(out, "x.md").write_text(table)',
        'np.save(os.path.join(out, "x.npy"), array)',
        'np.savez("x.npz", a=array)',
        "fig.savefig(path, dpi=120)",
        "torch.save(payload, path)",
        "array.tofile(path)",
        "os.open(path, os.O_WRONLY | os.O_CREAT)",
        "shutil.copyfile(a, b)",
    ]
    for line in bad:
        assert non_atomic_writes(line), line
    good = """
buffer = io.BytesIO()
np.savez(buffer, **arrays)
torch.save(payload, buffer)
atomic_write(path, lambda f: fig.savefig(f, dpi=120))
def write(handle):
    np.save(handle, array)
atomic_write(path, write)
with open(path) as f, open(path, "rb") as g, Path(path).open() as h:
    run = Run.open(run_dir, device)
"""
    assert non_atomic_writes(good) == []


def modules():
    for folder in SCANNED:
        for parent, _, names in sorted(os.walk(os.path.join(ROOT, folder))):
            for name in sorted(names):
                if name.endswith(".py"):
                    yield os.path.relpath(os.path.join(parent, name), ROOT)


# The lock's note is the one file opened for writing in place: it is held open (and locked) while
# the run is written, and what it says is a hint (trained/lock.py), never data.
IN_PLACE = {"trained/lock.py"}


@pytest.mark.parametrize("path", [m for m in modules() if m not in IN_PLACE])
def test_every_file_an_experiment_writes_goes_through_the_atomic_writer(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        assert non_atomic_writes(f.read()) == [], f"{path} writes a file without files.py's atomic_write"
