"""Sizes, seeds and JSON at the edge (issue 22, defects 12 and 6): refused in one ConfigError or
DataError before anything is allocated or parsed without bound."""

import json
import time

import pytest

from tests.helpers import tiny_flags
from ugvae import run
from ugvae.errors import ConfigError, DataError
from ugvae.files import read_json
from ugvae.model import ModelConfig
from ugvae.trained.config import LaunchConfig, TrainConfig, check_memory, training_bytes

# flags -> the one-line error, naming the flag (run.py shows each `field` as its flag)
HUGE_FLAGS = {
    ("--K", "1000000"): "--K must be between 1 and 4096",
    ("--z-dim", "1000000000"): "--z-dim must be between 1 and 4096",
    ("--beta-dim", "99999999"): "--beta-dim must be between 1 and 4096",
    ("--hidden", "10000000000"): "--hidden must be between 1 and 65536",
    ("--image-size", "20000"): "--image-size must be between 1 and 4096",
    ("--groups-per-step", "1000000000"): "--groups-per-step must be between 1 and 65536",
    ("--epochs", "1000000000000000000000"): "--epochs must be between 1 and 1000000, got a whole number of 70 bits",
    ("--keep-checkpoints", "10000000000"): "--keep-checkpoints must be between 1 and 1000",
    ("--seed", "4294967296"): "--seed must be between 0 and 4294967295",
    ("--seed", "9223372036854775808"): "--seed must be between 0 and 4294967295",
    ("--seed", "18446744073709551616"): "--seed must be between 0 and 4294967295",
}


@pytest.mark.parametrize("flags", HUGE_FLAGS, ids=[" ".join(f) for f in HUGE_FLAGS])
def test_a_huge_size_or_seed_is_one_line_before_any_allocation(flags, tmp_path, capsys):
    """Defect 12: on main these were killed by the OOM killer or ended in a traceback."""
    started = time.perf_counter()
    assert run.main([*tiny_flags(), "--runs-dir", str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and HUGE_FLAGS[flags] in err, err
    assert time.perf_counter() - started < 30 and not list(tmp_path.iterdir())


def test_the_memory_check_counts_the_k_networks_and_adam(tmp_path):
    """Defect 12: sizes within their maxima whose product does not fit are refused by check_memory."""
    model_cfg = ModelConfig(K=4096, hidden=65536, z_dim=4096)
    needed, parameters = training_bytes(model_cfg, TrainConfig())
    # K cluster networks of beta_dim x hidden + hidden x 2 z_dim weights dominate.
    assert parameters > 4096 * 65536 * 2 * 4096 and needed >= 16 * parameters
    with pytest.raises(ConfigError, match=r"needs about \d+\.\d GiB .* lower `hidden`, `K`"):
        check_memory(model_cfg, TrainConfig())
    check_memory(ModelConfig(), TrainConfig())  # the paper's MNIST model fits


def test_an_int_of_hundreds_of_digits_is_refused_not_overflowed():
    """Defect 12: float() of a 400-digit var_x raised OverflowError."""
    with pytest.raises(ConfigError, match="`var_x` must be a finite number"):
        ModelConfig(var_x=10**400)
    with pytest.raises(ConfigError, match="`lr` must be a finite number"):
        TrainConfig(lr=10**400)


def test_group_size_times_groups_is_bounded():
    """Defect 12: each within its maximum, their product is still one step's samples."""
    with pytest.raises(ConfigError, match="`group_size` x `groups_per_step` must be at most"):
        TrainConfig(group_size=2**20, groups_per_step=2**16)


@pytest.mark.parametrize("depth", [33, 100_000])
def test_deeply_nested_json_is_refused_before_parsing(tmp_path, depth):
    """Defect 6: a deeply nested config.json gave RecursionError on main."""
    path = tmp_path / "config.json"
    path.write_text('{"train": ' + "[" * depth + "]" * depth + "}")
    with pytest.raises(DataError, match=f"nests {depth + 1} levels deep, more than the 32 allowed"):
        read_json(str(path), what="config")


def test_json_nesting_within_the_bound_and_brackets_in_strings_are_fine(tmp_path):
    path = tmp_path / "config.json"
    value = {"train": {"name": "[[[[" * 100 + '\\"{'}, "x": [[[1]]]}
    path.write_text(json.dumps(value))
    assert read_json(str(path)) == value


@pytest.mark.parametrize(
    "content, words",
    [
        (b" " * (4 * 2**20 + 1), "larger than"),
        (b'{"a": "\xff"}', "not UTF-8"),
        (b'{"a": ', "not valid JSON"),
    ],
    ids=["too large", "not UTF-8", "torn"],
)
def test_odd_json_files_are_one_error_naming_the_file(tmp_path, content, words):
    """Defect 6: every odd file is a DataError naming it, never a traceback."""
    path = tmp_path / "eval.json"
    path.write_bytes(content)
    with pytest.raises(DataError, match=words) as error:
        read_json(str(path))
    assert str(path) in str(error.value)


def test_unknown_training_fields_are_refused_by_name():
    """Defect 6: unknown keys of config.json's `train` section were silently ignored on main."""
    with pytest.raises(ConfigError, match="unknown fields `lrr`, `seeed`; remove them"):
        TrainConfig.from_dict({**TrainConfig().to_dict(), "lrr": 0.1, "seeed": 3})


@pytest.mark.parametrize(
    "entry, words",
    [
        (5, "launch config (`lightning`) must be a JSON object, got int"),
        ({"num_nodes": "2"}, "`num_nodes` must be a whole number"),
        ({"devices": True}, "`devices` must be a string or a whole number"),
        ({"strategy": ["ddp"]}, "`strategy` must be a string"),
        ({"strategy": "ddp", "cluster": "x"}, "unknown fields `cluster`"),
    ],
)
def test_a_bad_lightning_entry_is_one_config_error(entry, words):
    """Defect 6 (14): `"lightning": 5` in config.json gave a traceback on main."""
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        LaunchConfig.from_dict(entry)


def test_the_recorded_world_size_is_no_unknown_field():
    assert LaunchConfig.from_dict({"strategy": "ddp", "devices": 2, "world_size": 2}).devices == 2
