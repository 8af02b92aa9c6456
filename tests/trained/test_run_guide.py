"""Opening a run whose guide is not shipped (trained/run.py, guide/registry.py): it is found by name
among the registered and installed guides, a missing one is one line saying how to provide it,
and nothing config.json names is ever imported."""

import json
import logging
import os
import subprocess
import sys
import warnings

import pytest
import torch

from tests.helpers import ROOT, install_distribution
from ugvae.errors import GuideUnavailable, RunError
from ugvae.guide import GUIDES, register, registry
from ugvae.train import fit
from ugvae.trained import Run, load_run

MARKER_MODULE = "import pathlib\npathlib.Path({marker!r}).write_text('imported')\n"


USER_MODULE = "from ugvae.guide import UGVAEGuide\n\n\nclass MeanPoolGuide(UGVAEGuide):\n    pass\n"


@pytest.fixture(scope="module")
def user_code(tmp_path_factory):
    """A folder holding the user's module `planted_user` with its guide `MeanPoolGuide`, imported."""
    folder = tmp_path_factory.mktemp("user")
    (folder / "planted_user.py").write_text(USER_MODULE)
    sys.path.insert(0, str(folder))
    import planted_user

    yield folder, planted_user.MeanPoolGuide
    sys.path.remove(str(folder))
    sys.modules.pop("planted_user", None)


@pytest.fixture(scope="module")
def registered_run(tmp_path_factory, user_code):
    """A finished run of a guide registered at run time, which this process then forgets."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    before, sources = dict(GUIDES), dict(registry._sources)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # unproven: trains with TraceEnum_ELBO
        run = fit(
            guide=user_code[1],
            runs_dir=str(tmp_path_factory.mktemp("runs")),
            dataset="synthetic:40",
            epochs=1,
            group_size=8,
            z_dim=2,
            beta_dim=2,
            K=3,
            hidden=8,
        )
    GUIDES.clear(), GUIDES.update(before)
    registry._sources.clear(), registry._sources.update(sources)
    torch.set_num_threads(threads)
    return run.run_dir


def edit_config(run_dir, **changes):
    path = os.path.join(run_dir, "config.json")
    with open(path) as f:
        saved = json.load(f)
    for key, value in changes.items():
        if key == "guide":
            saved["train"]["guide"] = saved["guide_name"] = value
        else:
            saved[key] = value
    with open(path, "w") as f:
        json.dump(saved, f)


def test_a_run_whose_guide_is_missing_is_one_line_naming_it_and_both_ways_to_provide_it(registered_run):
    with pytest.raises(GuideUnavailable) as caught:
        load_run(registered_run)
    message = str(caught.value)
    assert "\n" not in message and "corrupt" not in message
    assert f"{registered_run} was trained with the guide 'mean-pool' of model ugvae (registered at run time from " in (
        message
    )
    assert "install the package that provides it (entry-point group ugvae.guides)" in message
    assert "or register the class before opening the run: ugvae.guide.register(MeanPoolGuide, model='ugvae', " in (
        message
    )


def test_registered_again_the_run_opens_and_embeds(registered_run, user_code, guides_restored):
    register(user_code[1], model="ugvae", name="mean-pool")  # what the message above says
    run = load_run(registered_run)
    assert type(run.guide) is user_code[1]
    embedded = run.embed(torch.rand(2, 5, 1, 28, 28))
    assert embedded.beta_loc.shape == (2, 2)


@pytest.mark.slow
def test_a_new_process_does_what_the_message_says(registered_run, user_code):
    code = (
        "import torch, ugvae\n"
        "try:\n"
        f"    ugvae.load_run({registered_run!r})\n"
        "except ugvae.UGVAEError as error:\n"
        "    print(error)\n"
        "from planted_user import MeanPoolGuide\n"
        "ugvae.guide.register(MeanPoolGuide, model='ugvae', name='mean-pool')\n"
        f"run = ugvae.load_run({registered_run!r})\n"
        "print(type(run.guide).__name__, tuple(run.embed(torch.rand(2, 5, 1, 28, 28)).beta_loc.shape))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(user_code[0]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    refused, opened = proc.stdout.splitlines()[-2:]
    assert "'mean-pool' of model ugvae (registered at run time from planted_user:MeanPoolGuide)" in refused
    assert opened == "MeanPoolGuide (2, 2)"


def test_an_entry_point_run_names_its_distribution_when_missing_and_notes_another_version(
    run_copy, tmp_path, monkeypatch, guides_restored, caplog
):
    source = {"kind": "entry point", "distribution": "mine-guides", "version": "0.1", "defined_in": "planted_v:Mine"}
    edit_config(run_copy, guide="mine", guide_source=source)
    with pytest.raises(GuideUnavailable, match="install the distribution mine-guides .*register\\(Mine, model="):
        Run.open(run_copy)
    site = tmp_path / "site"
    mine = "from ugvae.guide import UGVAEGuide\n\nclass Mine(UGVAEGuide):\n    pass\n"
    install_distribution(site, "mine-guides", "0.2", {"mine": "planted_v:Mine"}, {"planted_v": mine})
    monkeypatch.syspath_prepend(str(site))
    with caplog.at_level(logging.WARNING, logger="ugvae"):
        run = Run.open(run_copy)
    assert run.guide_source.version == "0.2"
    assert "with the guide 'mine' from the entry point of the distribution mine-guides 0.1; this process has it" in (
        caplog.text
    )


@pytest.fixture
def planted(run_copy, tmp_path, monkeypatch):
    """A copy of the small run whose config.json names a module that leaves a marker when imported,
    as its guide's name, its guide's module and its distribution."""
    folder = tmp_path / "planted"
    folder.mkdir()
    marker = tmp_path / "imported"
    (folder / "planted_marker.py").write_text(MARKER_MODULE.format(marker=str(marker)))
    source = {"kind": "entry point", "distribution": "planted_marker", "defined_in": "planted_marker:Guide"}
    edit_config(run_copy, guide="planted_marker", guide_source=source)
    monkeypatch.syspath_prepend(str(folder))
    yield run_copy, folder, marker
    sys.modules.pop("planted_marker", None)


def test_a_module_config_json_names_is_never_imported(planted):
    run_dir, _, marker = planted
    for open_run in (Run.open, load_run):
        with pytest.raises(GuideUnavailable, match="'planted_marker' of model ugvae .* is not available here"):
            open_run(run_dir)
    assert not marker.exists() and "planted_marker" not in sys.modules


@pytest.mark.slow
def test_nor_by_the_command_line(planted):
    run_dir, folder, marker = planted
    env = {**os.environ, "PYTHONPATH": str(folder), "OMP_NUM_THREADS": "1"}
    for command in (["evaluate", "--run", run_dir], ["--resume", run_dir]):
        proc = subprocess.run(
            [sys.executable, "run.py", *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert "'planted_marker' of model ugvae" in proc.stderr and "ugvae.guide.register(Guide" in proc.stderr
    assert not marker.exists()


@pytest.mark.parametrize(
    "source, message",
    [
        ({"kind": "downloaded"}, "`guide_source.kind` must be"),
        ({"kind": "shipped", "distribution": "x\nforged line"}, "`guide_source.distribution` must be a short line"),
        ({"kind": "shipped", "module": "os"}, "`guide_source` must be an object of kind"),
        ("shipped", "`guide_source` must be an object"),
    ],
    ids=["kind", "newline", "extra key", "not an object"],
)
def test_a_malformed_guide_source_is_corrupt_config(run_copy, source, message):
    edit_config(run_copy, guide_source=source)
    with pytest.raises(RunError, match=f"config.json is corrupt \\({message}"):
        Run.open(run_copy)


def test_a_guide_name_that_is_no_name_is_corrupt_config(run_copy):
    edit_config(run_copy, guide="os:system")
    with pytest.raises(RunError, match="config.json is corrupt .*is no guide name"):
        Run.open(run_copy)
