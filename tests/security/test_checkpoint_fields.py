"""Checkpoints that load but hold bad fields (issue 22, defect 11): each is refused naming the
field, and the previous good checkpoint is used, as for an unreadable file."""

import json
import os
import time

import pytest
import torch

from tests.security.craft import checkpoint_path, save, self_referencing_list, valid_payload
from ugvae.errors import CheckpointError
from ugvae.guide import build
from ugvae.trained import Run
from ugvae.trained.checkpoints import (
    expected_state,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)


def live_modules(run_dir):
    run = Run.open(run_dir)
    model, guide = build(run.model_cfg, run.model_name, run.guide_name)
    optimizer = torch.optim.Adam([*model.parameters(), *guide.parameters()])
    return model, guide, optimizer, run.run_id


def first_key(state_dict):
    return next(iter(state_dict))


def wrong_shape(c):
    c["model"][first_key(c["model"])] = torch.zeros(3, 3)


def missing_weight(c):
    del c["guide"][first_key(c["guide"])]


def wrong_optimizer_moment(c):
    c["optimizer"]["state"][0]["exp_avg"] = torch.zeros(7)


def expanded_window(c):
    c["window"] = torch.zeros(1).expand(10**10)  # 4 bytes on disk, 40 GB on the first list()


# name -> (edit of the newest real checkpoint, words of the reason)
CORRUPTIONS = {
    "wrong tensor shape": (wrong_shape, "has shape (3, 3), but"),
    "a weight missing": (missing_weight, "does not match the modules: it lacks"),
    "a string where a dict belongs": (lambda c: c.update(model="weights"), "`model` is a str, not a dict"),
    "a float step": (lambda c: c.update(step=99.0), "`step` is a float, not a whole number"),
    "a bool step": (lambda c: c.update(step=True), "`step` is a bool"),
    "a step past int64": (lambda c: c.update(step=2**70), "outside [0,"),
    "a self-referencing last_result": (
        lambda c: c.update(last_result={"test_elbo": self_referencing_list()}),
        "`last_result.test_elbo` is a list, not a number",
    ),
    "a last_result of 2**60 leaves": (
        lambda c: c.update(last_result={"cluster_shares": self_referencing_list(60)}),
        "`last_result.cluster_shares` is a list, not a number",
    ),
    "NaN weights": (lambda c: c["model"][first_key(c["model"])].fill_(float("nan")), "holds NaN or infinite values"),
    "a window expanded from one float": (expanded_window, "more than its stored data holds"),
    "an unknown field": (lambda c: c.update(payload_of_someone_else=1), "holds fields no checkpoint has"),
    "a torch RNG state of the wrong size": (
        lambda c: c["rng"].update(torch=torch.zeros(7, dtype=torch.uint8)),
        "`rng.torch` has shape (7,)",
    ),
    "numpy keys outside 32 bits": (
        lambda c: c["rng"]["numpy"]["keys"].fill_(-1),
        "`rng.numpy.keys` holds values outside 32 bits",
    ),
    "an optimizer parameter no group holds": (
        lambda c: c["optimizer"]["state"].update({10**6: {}}),
        "which no param group holds",
    ),
    "an Adam moment of the wrong shape": (wrong_optimizer_moment, "`optimizer.state[0].exp_avg` has shape (7,)"),
    "epoch_loss as a string": (lambda c: c.update(epoch_loss="lots"), "`epoch_loss` is a str, not a list"),
    "a config section as a list": (lambda c: c["config"].update(model=[1, 2]), "`config.model` is a list"),
    "a run id as a number": (lambda c: c.update(run_id=5), "`run_id` is an int"),
}


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_a_bad_field_is_refused_and_the_previous_checkpoint_is_used(name, run_copy, caplog):
    """Defect 11: wrong shapes, a string for a dict, a float step, self-references, NaN, ..."""
    edit, words = CORRUPTIONS[name]
    checkpoint = load_checkpoint(list_checkpoints(run_copy)[-1])
    checkpoint["step"] = 99
    edit(checkpoint)
    save(checkpoint, checkpoint_path(run_copy, 99))
    model, guide, optimizer, run_id = live_modules(run_copy)
    caplog.clear()
    started = time.perf_counter()
    kept = latest_checkpoint(run_copy, run_id, expect=expected_state(model, guide, optimizer))
    assert kept["step"] == 5 and time.perf_counter() - started < 10
    assert len(caplog.records) == 1 and "step-000000099.pt (" in caplog.text and words in caplog.text, caplog.text
    model.load_state_dict(kept["model"]), guide.load_state_dict(kept["guide"])
    optimizer.load_state_dict(kept["optimizer"])


def test_the_shapes_of_the_live_modules_are_checked_only_when_given(run_copy):
    """Defect 11: without `expect` a well-formed checkpoint of other shapes loads; with it, it does not."""
    checkpoint = load_checkpoint(list_checkpoints(run_copy)[-1])
    checkpoint["step"] = 99
    wrong_shape(checkpoint)
    path = save(checkpoint, checkpoint_path(run_copy, 99))
    assert load_checkpoint(path)["step"] == 99
    model, guide, _, _ = live_modules(run_copy)
    with pytest.raises(CheckpointError, match="has shape"):
        load_checkpoint(path, expect=expected_state(model, guide))


def test_every_real_checkpoint_passes_the_schema(small_run):
    """The schema refuses nothing the trainer writes (the optimiser's shapes included)."""
    model, guide, optimizer, run_id = live_modules(small_run)
    expect = expected_state(model, guide, optimizer)
    for path in list_checkpoints(small_run):
        load_checkpoint(path, run_id=run_id, expect=expect)


def test_a_payload_that_breaks_the_schema_is_never_written(tmp_path):
    """Defect 11: what would be refused when read is refused before it is written."""
    payload = {**valid_payload(3), "train_seconds": float("inf")}
    with pytest.raises(RuntimeError, match="breaks the checkpoint schema: `train_seconds` is inf"):
        save_checkpoint(str(tmp_path), 3, payload, keep=2)
    assert not os.path.exists(tmp_path / "checkpoints" / "step-000000003.pt")


def test_summary_of_a_self_referencing_result_never_reaches_json(run_copy):
    """Defect 11: the recursive last_result that exhausted memory is refused before any walk."""
    checkpoint = load_checkpoint(list_checkpoints(run_copy)[-1])
    checkpoint["step"] = 99
    checkpoint["last_result"] = {"x": self_referencing_list(80)}
    save(checkpoint, checkpoint_path(run_copy, 99))
    kept = latest_checkpoint(run_copy)
    json.dumps(kept["last_result"])  # the kept one is plain
    assert kept["step"] == 5
