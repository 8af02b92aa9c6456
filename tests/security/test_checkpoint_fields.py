"""Checkpoint files whose fields are wrong, one field at a time (issue 22, D11; issue 29, D2, D8,
D11, L6): each is refused in one line naming the field, without a traceback, a huge conversion or
a long message, and the previous good checkpoint is used."""

import json
import os
import time

import pytest
import torch

from tests.security.craft import edit_json, fake_checkpoint, fake_expect, plant, save_fake
from ugvae.guide import build
from ugvae.trained import Run
from ugvae.trained.checkpoint import CheckpointFolder, expect, latest, list_checkpoints, load

HUGE = 2**2040  # the LONG1 ints of D2: 615 digits, beyond any float


def first(prefix):
    return lambda tensors: next(name for name in sorted(tensors) if name.startswith(prefix))


def tensor(prefix, edit):
    def apply(tensors, metadata):
        name = first(prefix)(tensors)
        tensors[name] = edit(tensors[name].clone())

    return apply


def field(key, edit):
    return lambda tensors, metadata: edit_json(metadata, key, edit)


def raw(key, text):
    return lambda tensors, metadata: metadata.__setitem__(key, text)


def group(key, value):
    def edit(optimizer):
        optimizer["param_groups"][0][key] = value
        return optimizer

    return field("optimizer", edit)


def rng(part, key, value):
    def edit(state):
        state[part][key] = value
        return state

    return field("rng", edit)


def python_word(value):
    def edit(state):
        state["python"]["state"][0] = value
        return state

    return field("rng", edit)


# name -> (edit of the planted file, words of the one line)
CORRUPTIONS = {
    # shapes and tensors (D11 of issue 22)
    "wrong tensor shape": (tensor("model.", lambda t: torch.zeros(3, 3)), "(3, 3), but torch.float32"),
    "a weight missing": (lambda t, m: t.pop(first("guide.")(t)), "lacks the tensors guide."),
    "a tensor no checkpoint has": (lambda t, m: t.update(payload=torch.zeros(1)), "`payload`, a tensor no checkpoint"),
    "an Adam moment of the wrong shape": (
        lambda t, m: t.update({"optimizer.0.exp_avg": torch.zeros(7)}),
        "`optimizer.0.exp_avg` is torch.float32 (7,), but the parameter is",
    ),
    "a torch RNG state of the wrong size": (
        lambda t, m: t.update({"rng.torch": torch.zeros(7, dtype=torch.uint8)}),
        "`rng.torch` is torch.uint8 (7,)",
    ),
    "numpy keys of another dtype": (
        lambda t, m: t.update({"rng.numpy.keys": torch.zeros(624, dtype=torch.int64)}),
        "`rng.numpy.keys` is torch.int64 (624,), but torch.uint32",
    ),
    # D11: NaN and absurd weights, refused once, at load
    "NaN weights": (tensor("model.", lambda t: t.fill_(float("nan"))), "holds NaN or infinite values"),
    "infinite Adam moments": (tensor("optimizer.", lambda t: t.fill_(float("inf"))), "holds NaN or infinite"),
    "weights of 1e30": (tensor("guide.", lambda t: t.fill_(1e30)), "holds weights beyond +-10000"),
    # D2: numbers beyond a float, nesting, long strings, without a traceback or a long message
    "a float step": (raw("step", "10.0"), "`step` is a float, not a whole number"),
    "a bool step": (raw("step", "true"), "`step` is a bool"),
    "a step past int64": (raw("step", str(2**70)), "`step` is a 71-bit number, outside [0,"),
    "a step of 615 digits": (raw("step", str(HUGE)), "holds a number of 615 digits"),
    "train_seconds of 615 digits": (raw("train_seconds", str(HUGE)), "holds a number of 615 digits"),
    "train_seconds of 1e999": (raw("train_seconds", "1e999"), "`train_seconds` is inf, not a finite number"),
    "epoch_loss[0] of 40 digits": (field("epoch_loss", lambda v: [10**39, v[1]]), "`epoch_loss[0]` is a 130-bit"),
    "numpy's cached gaussian of 40 digits": (rng("numpy", "cached_gaussian", 10**39), "cached_gaussian` is a 130-bit"),
    "numpy's cached gaussian NaN": (rng("numpy", "cached_gaussian", float("nan")), "cached_gaussian` is nan"),
    "a legacy RNG word of 2**130": (python_word(2**130), "`rng.python.state` is a 131-bit number"),
    "a last_result nested 1000 deep": (
        raw("last_result", '{"a": ' + "[" * 1000 + "]" * 1000 + "}"),
        "`last_result` nested more than 4 levels deep",
    ),
    "a last_result of nested lists": (field("last_result", lambda v: {"a": [[1.0]]}), "`last_result.a` is a list"),
    "a run id of a million characters": (field("run_id", lambda v: "x" * 10**6), "a string of 1000000 characters"),
    "a run id as a number": (raw("run_id", "5"), "`run_id` is an int, not a string"),
    "a config section as a list": (field("config", lambda c: {**c, "model": [1, 2]}), "`config.model` is a list"),
    "metadata that is no JSON": (raw("epoch", "{"), "`epoch` that is not valid JSON"),
    # D8: the optimiser's hyper-parameters
    "a negative lr": (group("lr", -1.0), "`optimizer.param_groups[0].lr` is -1.0, outside"),
    "an lr of 1e300": (group("lr", 1e300), "`optimizer.param_groups[0].lr` is 1e+300, outside"),
    "an lr of 615 digits": (group("lr", HUGE), "holds a number of 615 digits"),
    "an lr as a string": (group("lr", "fast"), "`optimizer.param_groups[0].lr` is a str, not a number"),
    "betas beyond 1": (group("betas", [2.0, 0.999]), "`optimizer.param_groups[0].betas` is 2.0, outside"),
    "betas of one number": (group("betas", [0.9]), "`optimizer.param_groups[0].betas` has 1 items, not 2"),
    "eps of 0": (group("eps", 0.0), "`optimizer.param_groups[0].eps` is 0.0, outside"),
    "weight_decay NaN": (group("weight_decay", float("nan")), "weight_decay` is nan, not a finite"),
    "amsgrad as a string": (group("amsgrad", "yes"), "`optimizer.param_groups[0].amsgrad` is 'yes', not true"),
    "a parameter numbered twice": (group("params", [0] * 18), "hold 18 parameters, not the 18 of the modules"),
    "state for a parameter no group holds": (
        field("optimizer", lambda o: {**o, "state": {"1000000": {"step": 1}}}),
        "`optimizer.state` has an entry for '1000000', which no param group holds",
    ),
    # L6: counters that disagree
    "epoch 0 at step 10": (raw("epoch", "0"), "`step` 10 is not `epoch` 0 x `steps_per_epoch` 5"),
    "more steps in the epoch than an epoch has": (raw("step_in_epoch", "7"), "`step_in_epoch` 7"),
    "losses counted twice": (field("epoch_loss", lambda v: [v[0], 3]), "`epoch_loss[1]` is 3, outside [0, 0]"),
    "another number of steps per epoch": (raw("steps_per_epoch", "3"), "`steps_per_epoch` 3 + `step_in_epoch`"),
}


def live_expect(run_dir):
    run = Run.open(run_dir)
    model, guide = build(run.model_cfg, run.model_name, run.guide_name)
    return expect(run, model, guide, training=True, train_samples=40)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_a_bad_field_is_refused_in_one_line_and_the_previous_checkpoint_is_used(name, run_copy, caplog):
    """D2, D8, D11, L6: every field checked for type, range, finiteness and agreement, once."""
    edit, words = CORRUPTIONS[name]
    plant(run_copy, 10, edit_file=edit)
    caplog.clear()
    started = time.perf_counter()
    kept = latest(run_copy, live_expect(run_copy))
    assert kept.step == 5 and time.perf_counter() - started < 10
    assert len(caplog.records) == 1 and "step-000000010.safetensors (" in caplog.text, caplog.text
    assert words in caplog.text and len(caplog.text) < 600, caplog.text


def test_the_planted_copy_itself_is_good(run_copy):
    """The helper's unedited file loads: each refusal above is the edit's, not the helper's."""
    plant(run_copy, 10)
    assert latest(run_copy, live_expect(run_copy)).step == 10


def test_every_real_checkpoint_passes_validation(small_run):
    """Validation refuses nothing the trainer writes (the optimiser's state included)."""
    fits = live_expect(small_run)
    for path in list_checkpoints(small_run):
        checkpoint = load(path, fits)
        assert checkpoint.optimizer["state"] and checkpoint.rng is not None


def test_a_checkpoint_that_breaks_validation_is_never_written(tmp_path):
    """What would be refused when read is refused before it is written."""
    from dataclasses import replace

    bad = replace(fake_checkpoint(3), train_seconds=float("inf"))
    with pytest.raises(RuntimeError, match="breaks the checkpoint format: `train_seconds` is inf"):
        CheckpointFolder(str(tmp_path), fake_expect(), 2).write(bad)
    assert not os.path.exists(tmp_path / "checkpoints" / "step-000000003.safetensors")


def test_metrics_of_the_last_epoch_may_be_nan_and_round_trip(tmp_path):
    """last_result is a report: NaN and inf survive the JSON and compare as they were written."""
    path = save_fake(str(tmp_path), 3)
    result = load(path, fake_expect()).last_result
    assert result["test_elbo"] == -500.0 and result["nmi"] != result["nmi"]
    assert json.loads(json.dumps(result))["cluster_shares"] == [0.5, 0.5]
