"""Checkpoints of a run (trained/checkpoint/): atomic, one validation a load, fall-back to the one
before, identity, rotation, and memory bounded by the run's own modules."""

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
from unittest import mock

import numpy as np
import pytest
import torch

from tests.helpers import fill, run_python
from tests.security.craft import (
    RUN_MAIN,
    checkpoint_path,
    declare_huge,
    fake_checkpoint,
    fake_expect,
    plant,
    raw_file,
    save_fake,
)
from ugvae import run
from ugvae.errors import RunError
from ugvae.files import DiskFull, write_json
from ugvae.model import ModelConfig
from ugvae.train import fit
from ugvae.trained import Run, TrainConfig, load_run
from ugvae.trained.checkpoint import (
    latest,
    list_checkpoints,
    load,
    rng_state,
    set_rng_state,
    store,
    validate,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Writes checkpoints 1..3, then SIGKILLs itself half-way through writing checkpoint 4.
DIE_WHILE_WRITING = textwrap.dedent("""
    import io, os, signal, sys
    from ugvae.trained.checkpoint import store
    from tests.security.craft import save_fake

    for step in (1, 2, 3):
        save_fake(sys.argv[1], step, keep=5, weights=200_000)
    real_write = store.write

    def write_half_then_die(f, tensors, metadata):
        buffer = io.BytesIO()
        real_write(buffer, tensors, metadata)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    store.write = write_half_then_die
    save_fake(sys.argv[1], 4, keep=5, weights=200_000)
""")


def steps(run_dir, weights=10):
    return [load(p, fake_expect(weights=weights)).step for p in list_checkpoints(run_dir)]


@pytest.mark.slow
def test_sigkill_while_writing_leaves_the_previous_checkpoint_loadable(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", DIE_WHILE_WRITING, str(tmp_path)], cwd=ROOT, env=env, capture_output=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    folder = tmp_path / "checkpoints"
    torn = [name for name in os.listdir(folder) if ".tmp-" in name]
    assert len(torn) == 1 and (folder / torn[0]).stat().st_size > 0  # it did die mid-write
    assert steps(str(tmp_path), 200_000) == [1, 2, 3]
    assert latest(str(tmp_path), fake_expect(weights=200_000)).step == 3
    # The next writer clears the torn file, which would otherwise hold a whole checkpoint's space.
    save_fake(str(tmp_path), 4, keep=5, weights=200_000)
    assert not [name for name in os.listdir(folder) if ".tmp-" in name]


def test_an_exception_while_writing_removes_the_temporary_file(tmp_path, monkeypatch):
    save_fake(str(tmp_path), 1)

    def interrupted(f, tensors, metadata):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_fake(str(tmp_path), 2)
    assert os.listdir(tmp_path / "checkpoints") == ["step-000000001.safetensors"]


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, caplog):
    for step in (1, 2):
        save_fake(str(tmp_path), step)
    newest = list_checkpoints(str(tmp_path))[-1]
    with open(newest, "r+b") as f:
        f.truncate(os.path.getsize(newest) - 3)
    with pytest.raises(RunError, match="cannot be read .*delete it"):
        load(newest, fake_expect())
    caplog.clear()
    assert latest(str(tmp_path), fake_expect()).step == 1
    assert len(caplog.records) == 1 and "step-000000002.safetensors (cannot be read" in caplog.text


def test_a_foreign_safetensors_file_is_not_taken_for_a_checkpoint(tmp_path):
    path = raw_file(checkpoint_path(str(tmp_path), 5), {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})
    with open(path, "ab") as f:
        f.write(b"\0" * 4)
    with pytest.raises(RunError, match="is no checkpoint of this package"):
        load(path, fake_expect())


def test_only_the_newest_k_checkpoints_are_kept(tmp_path):
    for step in range(1, 7):
        save_fake(str(tmp_path), step, keep=2)
    assert steps(str(tmp_path)) == [5, 6]


def test_rng_states_round_trip_through_a_file(tmp_path):
    path = save_fake(str(tmp_path), 3)
    expected = (torch.rand(3), np.random.rand(3), random.random(), np.random.randn(), random.gauss(0, 1))
    torch.rand(5), np.random.rand(5), random.random()
    rng = load(path, fake_expect()).rng
    set_rng_state(rng)  # the state of fake_checkpoint(3), drawn just before `expected`
    again = (torch.rand(3), np.random.rand(3), random.random(), np.random.randn(), random.gauss(0, 1))
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2:] == again[2:] and rng["numpy"]["keys"].dtype == torch.uint32
    if torch.cuda.is_available():
        assert "cuda" in rng_state()


def test_load_run_of_a_trained_run_restores_the_last_checkpoint(small_run):
    trained = load_run(small_run)
    run = Run.open(small_run)
    last = run.read_checkpoint(list_checkpoints(small_run)[-1])
    assert trained.step == last.step == 5
    assert all(torch.equal(v, last.model[k]) for k, v in trained.model.state_dict().items())
    assert last.run_id == json.load(open(os.path.join(small_run, "config.json")))["run_id"]


def test_a_load_validates_once_and_compares_the_config_once(small_run, monkeypatch):
    """Issue 26: main validated every load twice and compared the config twice."""
    validations = mock.Mock(wraps=validate.validate)
    comparisons = mock.Mock(wraps=validate.config_differences)
    monkeypatch.setattr(store, "validate", validations)
    monkeypatch.setattr(validate, "config_differences", comparisons)
    load_run(small_run)
    assert (validations.call_count, comparisons.call_count) == (1, 1)
    run = Run.open(small_run)
    validations.reset_mock(), comparisons.reset_mock()
    checkpoint = run.latest_checkpoint(training=True, train_samples=40)
    assert (validations.call_count, comparisons.call_count) == (1, 1) and checkpoint.optimizer is not None


def test_a_newer_format_is_refused_naming_the_version(tmp_path):
    path = save_fake(str(tmp_path), 1)
    tensors, metadata = store.encode(fake_checkpoint(1))
    metadata["version"] = "99"
    store.atomic_write(path, lambda f: store.write(f, tensors, metadata))
    with pytest.raises(RunError, match="format version '99', newer than the 4 .* update ugvae"):
        load(path, fake_expect())


def test_rotation_keeps_good_checkpoints_past_an_empty_newest_file(tmp_path, caplog):
    for step in (1, 2):
        save_fake(str(tmp_path), step, keep=2)
    open(tmp_path / "checkpoints" / "step-000000003.safetensors", "wb").close()  # a disk that filled up
    save_fake(str(tmp_path), 4, keep=2)
    assert steps(str(tmp_path)) == [2, 4]
    assert (tmp_path / "checkpoints" / "step-000000003.safetensors.unreadable").exists()  # set aside, not deleted
    assert "set aside" in caplog.text


def test_a_checkpoint_copied_in_from_another_run_is_refused(small_run, tmp_path, capsys, caplog, one_thread):
    # The same config, trained longer: its step-10 checkpoint would pass every config check.
    cfg = TrainConfig(dataset="synthetic:40", epochs=2, group_size=8, checkpoint_every=2, keep_checkpoints=5)
    model_cfg = ModelConfig(x_shape=(1, 28, 28), z_dim=2, beta_dim=2, K=3, hidden=8)
    other = fit(cfg, model_cfg, runs_dir=str(tmp_path / "runs")).run_dir
    run_dir = shutil.copytree(small_run, str(tmp_path / "copy"))
    foreign = shutil.copy(list_checkpoints(other)[-1], os.path.join(run_dir, "checkpoints"))
    assert load_run(run_dir).step == 5
    assert "step-000000010.safetensors (belongs to run" in caplog.text
    assert run.main(["evaluate", "--checkpoint", foreign, "--samples", "2"]) == 2
    err = capsys.readouterr().err
    assert "copied in from another run is never used" in err and err.count("\n") == 1
    # Renamed to pose as another step, it is refused too.
    renamed = checkpoint_path(run_dir, 5)
    os.rename(foreign, renamed)
    with pytest.raises(RunError, match="holds step 10, not the step its name says"):
        Run.open(run_dir).read_checkpoint(renamed)


def test_a_checkpoint_of_another_config_names_the_fields(small_run, tmp_path):
    run_dir = shutil.copytree(small_run, str(tmp_path / "copy"))
    config = json.load(open(os.path.join(run_dir, "config.json")))
    config["model"]["var_x"] = 0.5
    write_json(os.path.join(run_dir, "config.json"), config)
    with pytest.raises(RunError, match=r"was made with another config \(var_x is 0.1 in the checkpoint but 0.5 here"):
        load_run(run_dir)


def test_a_full_disk_while_saving_keeps_the_older_checkpoints(tmp_path, monkeypatch):
    save_fake(str(tmp_path), 1, keep=1)
    real_write = store.write

    def disk_fills(f, tensors, metadata):
        real_write(f, tensors, metadata)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "write", disk_fills)
    with pytest.raises(DiskFull, match=r"no space left on the device to write .*step-000000002.safetensors .* free"):
        save_fake(str(tmp_path), 2, keep=1)
    assert os.listdir(tmp_path / "checkpoints") == ["step-000000001.safetensors"]
    assert steps(str(tmp_path)) == [1]


def test_a_disk_that_fills_during_a_checkpoint_and_an_evaluation_keeps_older_files(small_run, tiny_disk, capsys):
    run_dir = shutil.copytree(small_run, str(tiny_disk / "run"))
    assert run.main(["evaluate", "--run", run_dir, "--samples", "2"]) == 0
    eval_before = open(os.path.join(run_dir, "eval.json")).read()
    fill(tiny_disk)
    capsys.readouterr()
    assert run.main(["evaluate", "--run", run_dir, "--samples", "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no space left on the device to write" in err and "eval.json" in err
    assert open(os.path.join(run_dir, "eval.json")).read() == eval_before
    # A resumed run with another epoch to go cannot write its checkpoint or its log.
    config = json.load(open(os.path.join(run_dir, "config.json")))
    config["train"]["epochs"] = 3
    os.remove(os.path.join(tiny_disk, "filler"))
    write_json(os.path.join(run_dir, "config.json"), config)
    fill(tiny_disk)
    before = {p: open(p, "rb").read() for p in list_checkpoints(run_dir)}
    assert run.main(["--resume", run_dir, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no space left on the device to write" in err
    assert {p: open(p, "rb").read() for p in list_checkpoints(run_dir)} == before
    assert not [n for n in os.listdir(os.path.join(run_dir, "checkpoints")) if ".tmp-" in n]
    assert load_run(run_dir).step == 5


def test_a_run_whose_checkpoints_all_fail_says_so_in_one_line(small_run, tmp_path, capsys):
    run_dir = shutil.copytree(small_run, str(tmp_path / "copy"))
    for path in list_checkpoints(run_dir):
        open(path, "wb").close()
    assert run.main(["evaluate", "--run", run_dir, "--samples", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no checkpoint of" in err and "step-000000002.safetensors (cannot be read" in err


# -- D3: memory bounded by the run's own modules ----------------------------------------------
def declare_two_gigabytes(run_dir, step=10):
    """A newest checkpoint whose first model tensor declares 2 GiB: a sparse file of a few kB on disk."""
    path = plant(run_dir, step)
    with open(path, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    return declare_huge(path, min(n for n in header if n.startswith("model.")), [2**29])


def test_a_checkpoint_declaring_2_gib_is_refused_before_a_byte_of_it_is_read(run_copy, monkeypatch, caplog):
    """D3: on main, evaluate took 6.3 GB of memory for such a file; its header is refused now."""
    path = declare_two_gigabytes(run_copy)
    assert os.path.getsize(path) > 2**31
    sizes = []
    real_read = store.read_tensor
    monkeypatch.setattr(
        store, "read_tensor", lambda f, entry: sizes.append(entry.end - entry.begin) or real_read(f, entry)
    )
    assert load_run(run_copy).step == 5
    assert (
        "step-000000010.safetensors (holds a bad field: `model." in caplog.text and "but torch.float32" in caplog.text
    )
    assert max(sizes) < 2**20  # only the good checkpoint's tensors were read


def evaluate_peak_mib(run_dir) -> int:
    """The peak resident memory of `evaluate --run run_dir`, in a process of its own."""
    code = RUN_MAIN.replace("sys.exit(", "code = (") + "\nimport resource\n"
    code += "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, file=sys.stderr); sys.exit(code)"
    proc = run_python(code, "evaluate", "--run", run_dir, "--samples", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stderr.strip().splitlines()[-1])


@pytest.mark.slow
def test_evaluate_of_a_run_declaring_2_gib_stays_small(run_copy):
    """D3, measured: main's evaluate peaked at 6.2 GB with such a newest checkpoint; now at what
    it needs without it."""
    baseline = evaluate_peak_mib(run_copy)
    declare_two_gigabytes(run_copy)
    hostile = evaluate_peak_mib(run_copy)
    assert hostile < baseline + 256, f"evaluate peaked at {hostile} MiB, {baseline} MiB without the file"
