"""The public docstrings are in one style (NumPy's, which napoleon renders) and their examples run.

Public: ugvae.__all__, the `__all__` of ugvae.model, ugvae.guide and ugvae.data, the commands and
experiments of ugvae.experiments, and the methods of `Run` that the README shows.
"""

import doctest
import importlib
import inspect

import pytest
import torch

import ugvae

RUN_METHODS = ("open", "embed", "sample", "reconstruct", "evaluate", "load_weights", "to")


def public_objects() -> dict[str, object]:
    objects = {f"ugvae.{n}": getattr(ugvae, n) for n in ugvae.__all__ if n != "__version__"}
    for package in ("model", "guide", "data"):
        module = importlib.import_module(f"ugvae.{package}")
        objects.update({f"ugvae.{package}.{n}": getattr(module, n) for n in module.__all__})
    from ugvae.experiments.cli import COMMANDS, EXPERIMENTS

    for command in (*COMMANDS.values(), *EXPERIMENTS.values()):
        module = importlib.import_module(command.module, "ugvae.experiments")
        objects[f"{module.__name__}.{command.function}"] = getattr(module, command.function)
    objects.update({f"ugvae.Run.{m}": getattr(ugvae.Run, m) for m in RUN_METHODS})
    return objects


def documented_parameters(function) -> list[str]:
    names = [p for p in inspect.signature(function).parameters if p not in ("self", "cls")]
    return [p for p in names if not p.startswith("_")]


def test_public_functions_document_their_parameters_in_numpy_style():
    undocumented = []
    for name, obj in public_objects().items():
        if not inspect.isfunction(obj) and not inspect.ismethod(obj):
            continue
        doc = inspect.getdoc(obj) or ""
        wanted = documented_parameters(obj)
        if wanted and "Parameters\n----------" not in doc:
            undocumented.append(f"{name}: no Parameters section")
            continue
        for parameter in wanted:
            if parameter != "values" and not any(
                line.startswith(parameter) or f", {parameter}" in line for line in doc.splitlines()
            ):
                undocumented.append(f"{name}: `{parameter}` not described")
    assert not undocumented, "\n".join(undocumented)


def test_public_classes_say_what_they_are():
    bare = []
    for name, obj in public_objects().items():
        if inspect.isclass(obj):
            doc = obj.__doc__ or ""
            if not doc.strip() or doc.startswith(f"{obj.__name__}(") or "Subclass of :class:`torch.nn.Module`" in doc:
                bare.append(name)  # none, the dataclass's signature, or PyroModule's docstring inherited
    assert not bare, bare


EXAMPLES = [
    "ugvae.model.config.ModelConfig",
    "ugvae.trained.config.TrainConfig",
    "ugvae.model.ugvae.UGVAEModel",
    "ugvae.guide.registry.build",
    "ugvae.guide.check.check_guide",
    "ugvae.data.imageset.to_unit_float",
    "ugvae.data.sampling.parse_spec",
    "ugvae.data.sampling.parse_mix",
    "ugvae.data.experiment_groups.rule_classes",
]


@pytest.mark.parametrize("qualified", EXAMPLES)
def test_the_examples_of_the_docstrings_run(qualified):
    module_name, name = qualified.rsplit(".", 1)
    module = importlib.import_module(module_name)
    import pyro

    globs = {**vars(module), "ugvae": ugvae, "pyro": pyro, "torch": torch}
    finder = doctest.DocTestFinder(recurse=False)
    (test,) = finder.find(getattr(module, name), name, globs=globs)
    assert test.examples, f"{qualified} has no example"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    result = runner.run(test, out=lambda text: pytest.fail(text))
    assert result.failed == 0
