"""run.py's conventions: help, did-you-mean, quick start-up, resume-to-extend, --config and the closing report."""

import json
import os
import subprocess
import sys

import pytest
import torch

from ugvae import run
from ugvae.experiments import cli
from ugvae.trained.config import resolve_device

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--dataset",
    "synthetic:40",
    "--hidden",
    "16",
    "--z-dim",
    "2",
    "--beta-dim",
    "2",
    "--K",
    "3",
    "-B",
    "8",
    "--quiet",
    "--device",
    "cpu",
]


def exit_code(argv) -> int:
    try:
        return run.main(argv)
    except SystemExit as e:
        return e.code


def test_bare_run_py_prints_the_help(capsys):
    assert run.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ugvae") and "embed" in out and "sample" in out and "default command" in out


def test_run_py_in_a_checkout_calls_itself_run_py_and_knows_its_version():
    from ugvae import __version__

    help_text = subprocess.run(
        [sys.executable, "run.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    ).stdout
    assert help_text.startswith("usage: run.py") and "`run.py --dataset mnist`" in help_text
    proc = subprocess.run(
        [sys.executable, "run.py", "--version"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.strip() == f"ugvae {__version__}"


def test_a_misspelt_command_gets_did_you_mean(capsys):
    assert exit_code(["evalute", "--run", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown command 'evalute' (did you mean 'evaluate')" in err


@pytest.mark.parametrize(
    "command",
    [["train"], *([name] for name in cli.COMMANDS), *(["experiment", name] for name in cli.EXPERIMENTS)],
    ids=lambda c: " ".join(c),
)
def test_every_help_shows_the_defaults(command, capsys):
    assert exit_code([*command, "--help"]) == 0
    out = capsys.readouterr().out
    if command == ["upgrade"]:  # its flags have no default to show: it takes runs, and computes nothing
        assert "--device" not in out and "--quiet" in out
    else:
        assert "(default: " in out, out


def test_the_listed_summaries_are_the_modules_own():
    import importlib

    for command in cli.EXPERIMENTS.values():
        module = importlib.import_module(command.module, "ugvae.experiments")
        assert module.__doc__.strip().split("\n")[0] == command.summary


def test_help_imports_neither_torch_nor_matplotlib_nor_sklearn():
    code = (
        "import sys, contextlib, io\nfrom ugvae import run\n"
        "with contextlib.redirect_stdout(io.StringIO()): run.main([])\n"
        "print(sorted(m for m in ('torch', 'matplotlib', 'sklearn', 'lightning') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_device_auto_is_cuda_when_available_else_cpu():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    runs = tmp_path_factory.mktemp("runs")
    run_dir = str(runs / "first")
    assert run.main([*TINY, "--epochs", "1", "--run-dir", run_dir]) == 0
    yield run_dir
    torch.set_num_threads(threads)


def test_training_ends_with_scores_files_and_next_commands(one_epoch_run, tmp_path, capsys):
    run_dir = str(tmp_path / "r")
    assert run.main([*TINY, "--epochs", "1", "--run-dir", run_dir, "--model", "gmvae"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == run_dir  # the last line stays the run directory, for scripts
    text = "\n".join(lines)
    assert "test ELBO" in text and "train ELBO" in text and "clusters used" in text
    assert "summary.json" in text and "samples.png" in text and "metrics.csv" in text
    assert f"ugvae evaluate --run {run_dir}" in text and f"experiment interpolation --run {run_dir}" in text
    assert "environment.json" in text  # in the files written and the next lines
    from ugvae.experiments.cli import EXPERIMENTS

    assert all(f"experiment {name} --run {run_dir}" in text for name in EXPERIMENTS)  # every experiment named


def test_resume_with_more_epochs_extends_a_finished_run(one_epoch_run, tmp_path):
    import shutil

    run_dir = shutil.copytree(one_epoch_run, tmp_path / "extended")
    before = json.loads((run_dir / "summary.json").read_text())
    # --hidden equal to the run's own is no change, so it is accepted.
    assert run.main(["--resume", str(run_dir), "--epochs", "2", "--hidden", "16", "--quiet"]) == 0
    after = json.loads((run_dir / "summary.json").read_text())
    assert before["epochs"] == 1 and after["epochs"] == 2 and after["steps"] == 2 * before["steps"]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["epochs"] == 2
    assert exit_code(["--resume", str(run_dir), "--epochs", "1", "--quiet"]) == 2  # fewer than trained


def test_config_starts_a_new_run_with_the_flags_on_top(one_epoch_run, tmp_path):
    new = str(tmp_path / "again")
    config = os.path.join(one_epoch_run, "config.json")
    assert run.main(["train", "--config", config, "--lr", "0.002", "--run-dir", new, "--quiet"]) == 0
    old, mine = json.loads(open(config).read()), json.loads(open(os.path.join(new, "config.json")).read())
    assert mine["train"]["lr"] == 0.002
    assert {**mine["train"], "lr": old["train"]["lr"]} == old["train"]
    assert mine["model"] == old["model"]


def test_upgrade_still_takes_the_device_it_never_used_for_one_release(tmp_path, capsys, caplog):
    assert exit_code(["upgrade", "--help"]) == 0
    assert "--device" not in capsys.readouterr().out
    with caplog.at_level("WARNING"):
        exit_code(["upgrade", str(tmp_path), "--device", "cpu"])  # no run there: refused after parsing
    assert "--device does nothing here, is deprecated and goes in the next release" in caplog.text
