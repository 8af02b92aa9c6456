"""Bounds and types at every entry point (issue 29, item 5): every flag of every command and every
argument of the Python API is checked once, by the settings mechanism, before a run is opened,
data is read or anything is allocated. Each test names the defect of the third hostile pass it
closes; on the command line `Run.open` and `load_one` are made to fail, so a check that comes
too late fails the test at once instead of allocating."""

import os

import pytest
import torch
from PIL import Image

from tests.helpers import tiny_flags
from ugvae import run
from ugvae.data import registry
from ugvae.errors import ConfigError
from ugvae.experiments.commands.compare import CompareSettings
from ugvae.experiments.commands.embed import EmbedSettings
from ugvae.experiments.commands.evaluate import EvaluateSettings
from ugvae.experiments.commands.sample import SampleSettings
from ugvae.experiments.domain_alignment import DomainAlignmentSettings
from ugvae.experiments.group_factors import GroupFactorsSettings
from ugvae.experiments.interpolation import InterpolationSettings
from ugvae.experiments.set_generation import SetGenerationSettings
from ugvae.experiments.structured_batches import StructuredBatchesSettings
from ugvae.train import fit
from ugvae.trained import Run, inference, load_run

ABSENT_CUDA = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"
SEED_ERROR = "--seed must be between 0 and 4294967295, got -1"


def exit_code(argv) -> int:
    try:
        return run.main(argv)
    except SystemExit as e:
        return e.code


@pytest.fixture
def checked_first(monkeypatch):
    """Commands that must refuse their flags before they open a run or read a dataset."""

    def too_late(*args, **kwargs):
        raise AssertionError("a run was opened or a dataset read before the flags were checked")

    monkeypatch.setattr(Run, "open", too_late)
    monkeypatch.setattr(registry, "load_one", too_late)


def one_line(capsys) -> str:
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    "command",
    [
        ["sample"],
        ["evaluate"],
        ["experiment", "structured-batches"],
        ["experiment", "domain-alignment"],
        ["experiment", "group-factors"],
        ["experiment", "set-generation"],
    ],
    ids=" ".join,
)
def test_d5_a_negative_seed_is_one_line_in_every_command(command, checked_first, capsys):
    """D5: sample, evaluate and four experiments crashed on `--seed -1`."""
    assert exit_code([*command, "--run", "RUN", "--seed", "-1"]) == 2
    assert one_line(capsys) == f"error: {SEED_ERROR}\n"


def test_d5_the_python_calls_refuse_a_negative_seed(small_run):
    trained = load_run(small_run)
    calls = [
        lambda: trained.sample(seed=-1),
        lambda: trained.evaluate(seed=-1),
        lambda: SampleSettings(seed=-1),
        lambda: StructuredBatchesSettings(seed=-1),
        lambda: DomainAlignmentSettings(seed=-1),
        lambda: GroupFactorsSettings(seed=-1),
        lambda: SetGenerationSettings(seed=-1),
    ]
    for call in calls:
        with pytest.raises(ConfigError, match="`seed` must be between 0 and 4294967295, got -1"):
            call()


def test_d13_an_empty_folder_is_refused_not_read_as_the_working_directory(small_run, tmp_path, monkeypatch, capsys):
    """D13: `embed --folder ''` embedded the whole tree under the working directory."""
    for i in range(3):
        Image.new("L", (28, 28), color=60 * i).save(tmp_path / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    assert exit_code(["embed", "--run", small_run, "--folder", "", "--out", str(out), "--quiet"]) == 2
    assert one_line(capsys) == "error: --folder must not be empty\n" and not out.exists()
    trained = load_run(small_run)
    with pytest.raises(ConfigError, match="`images` is an empty path"):
        trained.embed("")
    with pytest.raises(ConfigError, match="`beta_from` must not be empty"):
        trained.sample(beta_from="")


def test_d14_the_pixel_bound_counts_the_sets_of_beta_from_and_holds_in_python(run_copy, tmp_path, monkeypatch, capsys):
    """D14: sample's size bound was bypassed with `--beta-from` (one row per set) and absent from
    `Run.sample`; it is now checked where the number of groups is known, before any draw."""
    sets = tmp_path / "sets"
    for name in ("a", "b", "c"):
        (sets / name).mkdir(parents=True)
        for i in range(2):
            Image.new("L", (28, 28), color=50 * i).save(sets / name / f"{i}.png")
    monkeypatch.setattr(inference, "MAX_SAMPLED_PIXELS", 5 * 8 * 28 * 28)  # 5 groups of 8 fit, 6 do not
    argv = ["sample", "--run", run_copy, "--beta-from", str(sets), "--num-groups", "2", "-B", "8", "--quiet"]
    assert exit_code(argv) == 2
    assert one_line(capsys).startswith("error: 6 groups (3 sets) x --group-size 8 ask for 3.76e+04 pixels")
    assert not os.path.exists(os.path.join(run_copy, "samples"))
    with pytest.raises(ConfigError, match="6 groups x `group_size` 8 ask for"):
        load_run(run_copy).sample(num_groups=6, group_size=8)
    assert load_run(run_copy).sample(num_groups=5, group_size=8).images.shape[:2] == (5, 8)


# (flags after the command, the one-line error): every number that allocates has an upper bound
UNBOUNDED = [
    (["evaluate", "--run", "R", "--samples", "1000000000"], "--samples must be between 1 and 100000"),
    (
        ["evaluate", "--run", "R", "--samples", "100000", "--images-per-pass", "8192"],
        "--samples x --images-per-pass must be at most 268435456 log-weights held at once",
    ),
    (["compare", "R", "--samples", "1000000000"], "--samples must be between 1 and 100000"),
    (["sample", "--run", "R", "--num-groups", "1000000000"], "--num-groups must be between 1 and 65536"),
    (["embed", "--run", "R", "--split", "test", "-B", "10000000000"], "--group-size must be between 1 and 1048576"),
    (["experiment", "set-generation", "--run", "R", "--sets", "1000000000"], "--sets must be between 4 and 10000"),
    (["experiment", "set-generation", "--run", "R", "-M", "1000000000"], "--generated must be between 2 and 1024"),
    (
        ["experiment", "set-generation", "--run", "R", "--sets", "10000", "-M", "1024"],
        "--sets x --generated must be at most 1048576 images per cell",
    ),
    (["experiment", "set-generation", "--run", "R", "--group-sizes", "2", "0"], "--group-sizes values must be"),
    (["experiment", "structured-batches", "--run", "R", "--samples", "10000000"], "--samples must be between 1"),
    (["experiment", "structured-batches", "--run", "R", "--num-groups", "10000000"], "--num-groups must be"),
    (["experiment", "group-factors", "--run", "R", "--pairs", "1000000000000"], "--pairs must be between 2"),
    (["experiment", "group-factors", "--run", "R", "--untrained-seeds", "100000"], "--untrained-seeds must be"),
    (["experiment", "domain-alignment", "--run", "R", "--steps", "1000000"], "--steps must be between 2 and 64"),
    (["experiment", "domain-alignment", "--run", "R", "--probe-sizes", "-1"], "--probe-sizes values must be"),
    (["experiment", "interpolation", "--run", "R", "--rows", "1000000"], "--rows must be between 2 and 64"),
    (["experiment", "interpolation", "--run", "R", "--z-range", "inf"], "--z-range must be a finite number"),
]


@pytest.mark.parametrize("argv, words", UNBOUNDED, ids=lambda v: " ".join(v)[:60] if isinstance(v, list) else "")
def test_d15_every_count_that_allocates_is_bounded_on_the_command_line(argv, words, checked_first, capsys):
    """D15: evaluate --samples and several experiment flags had no upper bound (memory tracebacks)."""
    assert exit_code(argv) == 2
    assert words in one_line(capsys)


@pytest.mark.parametrize(
    "make",
    [
        lambda: EvaluateSettings(samples=10**9),
        lambda: CompareSettings(samples=10**9),
        lambda: SampleSettings(num_groups=10**9),
        lambda: EmbedSettings(split="test", group_size=10**12),
        lambda: SetGenerationSettings(sets=10**9),
        lambda: SetGenerationSettings(generated=10**9),
        lambda: StructuredBatchesSettings(samples=10**9),
        lambda: GroupFactorsSettings(pairs=10**12),
        lambda: DomainAlignmentSettings(steps=10**6),
        lambda: InterpolationSettings(rows=10**6),
    ],
)
def test_d15_the_same_bounds_hold_for_the_settings_in_python(make):
    with pytest.raises(ConfigError, match="must be between"):
        make()


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--groups", "labels:1.7e308"], "--groups 'labels:1.7e308': ALPHA must be a number from 0 to 1e+06"),
        (["--mix", "beta:1e300"], "--mix 'beta:1e300': write beta:A with 0 < A <= 1e+06"),
        (["--dataset", "grouped:" * 1200 + "mnist"], "--dataset must be at most 4096 characters, got 9605"),
        (["--dataset", "grouped:" * 400 + "mnist"], "grouped:grouped:... nests groups in groups"),
        (["--dataset", "synthetic:" + "9" * 100_000], "--dataset must be at most 4096 characters, got 100010"),
        (["--dataset", "digits+synthetic:" + "9" * 100], "synthetic size '99999999999999999999...' is not"),
        (["--dataset", "+".join(["digits"] * 1000)], "--dataset must be at most 4096 characters, got 6999"),
        (["--dataset", "+".join(["digits"] * 9)], "--dataset mixes 9 datasets, more than the 8"),
        (["--dataset", "digits+mnsit"], "dataset 'mnsit' is unknown; did you mean 'mnist'?"),
    ],
    ids=lambda v: " ".join(v)[:40] if isinstance(v, list) else "",
)
def test_l1_dataset_and_group_specs_are_refused_before_any_data_loads(flags, words, checked_first, tmp_path, capsys):
    """L1: `labels:1.7e308` gave a RuntimeError and left a run directory; `grouped:` x1200, a
    100,000-digit `synthetic:` and 1000 `+` parts were loaded before the refusal (or recursed)."""
    runs = tmp_path / "runs"
    assert exit_code([*tiny_flags(), "--runs-dir", str(runs), *flags]) == 2
    assert words in one_line(capsys)
    assert not runs.exists() or not os.listdir(runs)


def test_api_leak_num_groups_zero_or_fractional_is_refused(small_run):
    """API leaks: `sample(num_groups=0)` drew 4 groups; `num_groups=2.5` was a TypeError."""
    trained = load_run(small_run)
    with pytest.raises(ConfigError, match="`num_groups` must be between 1 and 65536, got 0"):
        trained.sample(num_groups=0)
    with pytest.raises(ConfigError, match="`num_groups` must be a whole number or null, got 2.5"):
        trained.sample(num_groups=2.5)
    with pytest.raises(ConfigError, match="`group_size` must be between 1 and 1048576, got 0"):
        trained.embed(torch.rand(2, 3, 1, 28, 28), group_size=0)


@pytest.mark.parametrize("bad", [None, "", 3, b"runs/x"])
def test_api_leak_load_run_of_no_path_is_one_config_error(bad):
    """API leak: `load_run(None)` was a TypeError."""
    with pytest.raises(ConfigError, match="`run_dir` must be the path of a run directory"):
        load_run(bad)


def test_api_leak_fit_into_an_empty_run_dir_is_refused_before_training(tmp_path, monkeypatch):
    """API leak: `fit(run_dir="")` trained into runs/."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="`run_dir` must not be empty"):
        fit(dataset="synthetic:40", epochs=1, group_size=8, hidden=8, z_dim=2, beta_dim=2, K=3, run_dir="")
    assert os.listdir(tmp_path) == []


def test_a_device_this_machine_lacks_is_named_as_such_not_as_a_corrupt_config(small_run, capsys):
    """`--device cuda` without CUDA said config.json is corrupt and should be restored from a copy."""
    assert exit_code(["evaluate", "--run", small_run, "--device", ABSENT_CUDA, "--quiet"]) == 2
    err = one_line(capsys)
    assert f"--device {ABSENT_CUDA} was asked for" in err and "corrupt" not in err and "restore" not in err
    with pytest.raises(ConfigError) as error:
        load_run(small_run, device=ABSENT_CUDA)
    assert "`device`" in str(error.value) and "corrupt" not in str(error.value)
