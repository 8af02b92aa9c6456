"""Runs of in-memory tensors: `fit(train_data=...)` trains and records them by content hash; the run
opens, embeds and evaluates without them; `resume` takes the same tensors again and repeats the
uninterrupted run, and refuses others by name."""

import csv
import json
import os
import shutil

import pytest
import torch

from ugvae.data import ImageTensors, load_dataset, tensor_data
from ugvae.data.sampling import OwnGroups
from ugvae.errors import ConfigError, DataError
from ugvae.model import ModelConfig
from ugvae.train import fit, new_trainer, resume
from ugvae.trained import TrainConfig, load_run
from ugvae.trained.checkpoint import checkpoint_step, list_checkpoints

MODEL = dict(z_dim=2, beta_dim=2, K=3, hidden=8)


@pytest.fixture(scope="module")
def digits():
    """200 synthetic digits as a user would hold them: float images and integer labels."""
    data = load_dataset("synthetic:200")
    return data.images.float() / 255, data.labels


@pytest.fixture(scope="module")
def tensor_run(tmp_path_factory, digits):
    torch.set_num_threads(1)
    images, labels = digits
    cfg = TrainConfig(epochs=2, group_size=8, groups_per_step=2, checkpoint_every=4, keep_checkpoints=20, log_every=2)
    run = fit(cfg, ModelConfig(x_shape=(1, 28, 28), **MODEL), runs_dir=str(tmp_path_factory.mktemp("runs")),
              train_data=ImageTensors(images, labels=labels), groups="labels:0.3")  # fmt: skip
    return run.run_dir


def logged(run_dir: str) -> list[dict]:
    """metrics.csv as text without its wall-clock column: equal means equal to the last digit."""
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as f:
        return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in csv.DictReader(f)]


def one_line(error, call) -> str:
    with pytest.raises(error) as raised:
        call()
    assert "\n" not in str(raised.value)
    return str(raised.value)


def test_a_run_of_tensors_names_them_by_their_hash_and_records_them(tensor_run, digits):
    images, labels = digits
    expected = tensor_data(ImageTensors(images, labels=labels))
    config = json.load(open(os.path.join(tensor_run, "config.json")))
    assert config["train"]["dataset"] == expected.name and config["train"]["groups"] == "labels:0.3"
    assert os.path.basename(tensor_run).startswith(expected.name.replace(":", "_"))
    data = json.load(open(os.path.join(tensor_run, "environment.json")))["sessions"][-1]["data"]
    assert (data["train"]["images"], data["test"]["images"]) == (180, 20)
    assert "in-memory tensors `train_data`" in data["train"]["source"] and "held out" in data["test"]["source"]
    assert data["train"]["content_hash"] == data["test"]["content_hash"] == expected.train.content_hash
    assert len(data["train"]["content_hash"]) == 64
    assert [r["kind"] for r in logged(tensor_run)].count("epoch") == 2


def test_the_run_opens_embeds_and_evaluates_given_its_test_images(tensor_run, digits):
    run = load_run(tensor_run)  # no data needed
    images, labels = digits
    assert run.embed(images[:16].view(2, 8, 1, 28, 28)).beta_loc.shape == (2, 2)
    message = one_line(DataError, lambda: run.evaluate(samples=2))
    assert "run.evaluate(test_data=...)" in message and "tensor_data(train_data).test" in message
    held_out = tensor_data(ImageTensors(images, labels=labels)).test
    scores = run.evaluate(samples=2, test_data=held_out)
    assert scores["test_images"] == 20 and scores["clustering_accuracy"] is not None
    last = logged(tensor_run)[-1]  # the weights' own epoch end, on the same test groups
    assert last["kind"] == "epoch" and scores["test_elbo"] == pytest.approx(float(last["test_elbo"]), rel=1e-5)
    assert scores["data"] == "in-memory tensors `test_data` (20 images of 1x28x28)"
    shape = one_line(DataError, lambda: run.evaluate(samples=2, test_data=torch.rand(8, 1, 8, 8)))
    assert "`test_data`" in shape and "1x28x28" in shape


def killed_copy(run_dir, dest, step):
    """The run as a kill right after its checkpoint of `step` would leave it."""
    shutil.copytree(run_dir, dest)
    for path in list_checkpoints(dest):
        if checkpoint_step(path) > step:
            os.remove(path)
    return str(dest)


def test_resume_with_the_same_tensors_repeats_the_run_and_other_tensors_are_refused_by_name(
    tensor_run, digits, tmp_path
):
    images, labels = digits
    copy = killed_copy(tensor_run, tmp_path / "killed", 8)  # mid-epoch 1 (11 steps an epoch)
    before = sorted(os.listdir(copy))
    missing = one_line(DataError, lambda: resume(copy))
    assert "in-memory tensors" in missing and "train_data=" in missing
    other = images.clone()
    other[0] = 1 - other[0]
    assert "`train_data` differs" in one_line(DataError, lambda: resume(copy, train_data=ImageTensors(other, labels)))
    unlabelled = one_line(DataError, lambda: resume(copy, train_data=images))  # labels are part of the data
    assert "`train_data` differs" in unlabelled
    extra = one_line(DataError, lambda: resume(copy, train_data=ImageTensors(images, labels), test_data=images[:9]))
    assert "held its test split out of `train_data`" in extra and "drop `test_data`" in extra
    assert "`test_data` comes with `train_data`" in one_line(ConfigError, lambda: resume(copy, test_data=images))
    assert sorted(os.listdir(copy)) == before and load_run(copy).step == 8  # refused: nothing written
    # The same pixels as uint8 are the same data: the run continues exactly as it went on uninterrupted.
    as_bytes = (images * 255).round().to(torch.uint8)
    resume(copy, train_data=ImageTensors(as_bytes, labels=labels))
    assert logged(copy) == logged(tensor_run)
    final = load_run(tensor_run).model.state_dict()
    assert all(torch.equal(v, final[k]) for k, v in load_run(copy).model.state_dict().items())


def test_a_run_given_test_data_asks_for_it_again(digits, tmp_path, one_thread):
    images, _ = digits
    run = fit(epochs=1, group_size=8, x_shape=(1, 28, 28), runs_dir=str(tmp_path), train_data=images[:160],
              test_data=images[160:], **MODEL)  # fmt: skip
    data = json.load(open(run.path("environment.json")))["sessions"][-1]["data"]
    assert data["test"]["images"] == 40 and data["train"]["content_hash"] != data["test"]["content_hash"]
    assert "test_data=..." in one_line(DataError, lambda: load_run(run.run_dir).evaluate(samples=1))
    alone = one_line(DataError, lambda: resume(run.run_dir, epochs=2, train_data=images[:160]))
    assert "was trained with `test_data` besides `train_data`" in alone
    changed = images[160:].flip(0)
    other = one_line(DataError, lambda: resume(run.run_dir, epochs=2, train_data=images[:160], test_data=changed))
    assert "`test_data` differs" in other
    assert resume(run.run_dir, epochs=2, train_data=images[:160], test_data=images[160:]).train_cfg.epochs == 2
    assert load_run(run.run_dir).step == 2 * (160 // 8)


def test_groups_of_the_tensors_are_the_training_groups(digits):
    images, _ = digits
    groups = torch.arange(200) // 20  # ten fixed groups of twenty
    trainer = new_trainer(train_data=ImageTensors(images, groups=groups), test_data=images[:40], group_size=8,
                          x_shape=(1, 28, 28), **MODEL)  # fmt: skip
    sampler = trainer.session.sampler
    assert isinstance(sampler, OwnGroups)
    for step in sampler.epoch(0):
        assert all(groups[g].unique().numel() == 1 for g in step.cpu())


def test_train_data_and_a_dataset_name_are_one_too_many(digits, tmp_path):
    images, _ = digits
    message = one_line(ConfigError, lambda: fit(dataset="mnist", train_data=images, runs_dir=str(tmp_path), **MODEL))
    assert "`train_data` and `dataset`" in message
    named = TrainConfig(dataset="synthetic:40")
    assert "`dataset` synthetic:40" in one_line(ConfigError, lambda: fit(named, train_data=images, **MODEL))
    assert "`test_data` comes with" in one_line(ConfigError, lambda: fit(named, test_data=images, **MODEL))
    assert os.listdir(tmp_path) == []
