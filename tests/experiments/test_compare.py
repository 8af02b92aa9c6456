"""compare reads results it can trust: torn files are computed again or named, stale ones recomputed."""

import csv
import errno
import json
import os
import shutil

import matplotlib.pyplot as plt
import pytest

from tests.helpers import tiny_train, write_domain
from ugvae import run
from ugvae.experiments.plotting import save_figure
from ugvae.files import DiskFull
from ugvae.model import ModelConfig
from ugvae.train import fit
from ugvae.trained import TrainConfig


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory):
    run_dir = tiny_train(tmp_path_factory, "ugvae")
    assert run.main(["evaluate", "--run", run_dir, "--samples", "2"]) == 0
    return run_dir


def eval_json(run_dir) -> dict:
    return json.load(open(os.path.join(run_dir, "eval.json")))


@pytest.mark.parametrize(
    "damage",
    [
        lambda e: '{"step": 10, "iwae": -5',  # torn by a crash mid-write (before writes were atomic)
        lambda e: json.dumps({**e, "step": e["step"] - 1, "iwae": 123.0}),  # made at an older checkpoint
        lambda e: json.dumps({**e, "run_id": "0" * 32, "iwae": 123.0}),  # copied in from another run
        lambda e: json.dumps({**e, "iwae": 123.0, "iwae_per_test_group": "ab"}),  # malformed (issue 22, 14)
    ],
    ids=["torn", "stale", "another run's", "malformed"],
)
def test_compare_recomputes_a_torn_or_stale_eval_json(evaluated_run, tmp_path, capsys, damage):
    run_dir = shutil.copytree(evaluated_run, str(tmp_path / "run"))
    good = eval_json(run_dir)
    open(os.path.join(run_dir, "eval.json"), "w").write(damage(good))
    assert run.main(["compare", run_dir, "--out", str(tmp_path / "out"), "--samples", "2"]) == 0
    assert eval_json(run_dir)["step"] == good["step"] and eval_json(run_dir)["iwae"] != 123.0
    assert sorted(os.listdir(tmp_path / "out")) == ["compare.csv", "compare.md"]  # no temporary file left


def test_a_torn_summary_is_named(evaluated_run, tmp_path, capsys):
    run_dir = shutil.copytree(evaluated_run, str(tmp_path / "run"))
    open(os.path.join(run_dir, "summary.json"), "w").write('{"steps": 1')
    assert run.main(["compare", run_dir, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "summary.json is corrupt" in err


def test_a_figure_that_cannot_be_written_leaves_the_previous_one(tmp_path, monkeypatch):
    path = str(tmp_path / "figure.png")
    fig, _ = plt.subplots()
    save_figure(fig, path)
    before = open(path, "rb").read()
    assert before.startswith(b"\x89PNG")

    def disk_full(self, f, **kwargs):
        f.write(b"half a png")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("matplotlib.figure.Figure.savefig", disk_full)
    fig, _ = plt.subplots()
    with pytest.raises(DiskFull, match="no space left on the device to write .*figure.png"):
        save_figure(fig, path)
    assert open(path, "rb").read() == before and os.listdir(tmp_path) == ["figure.png"]


def test_a_checkpoint_name_without_leading_zeros_is_read_by_its_step(evaluated_run, tmp_path, capsys):
    """Issue 22 (14): `step-16.pt` in checkpoints/ gave compare a traceback."""
    run_dir = shutil.copytree(evaluated_run, str(tmp_path / "run"))
    folder = os.path.join(run_dir, "checkpoints")
    newest = sorted(os.listdir(folder))[-1]
    os.rename(os.path.join(folder, newest), os.path.join(folder, "step-" + newest[5:].lstrip("0")))
    assert run.main(["compare", run_dir, "--out", str(tmp_path / "out"), "--samples", "2"]) == 0
    assert eval_json(run_dir)["step"] == int(newest[5:14])


def test_an_out_that_is_a_file_is_refused_before_any_work(evaluated_run, tmp_path, capsys):
    mine = tmp_path / "tables"
    mine.write_text("mine")
    assert run.main(["compare", evaluated_run, "--out", str(mine)]) == 2
    assert capsys.readouterr().err.count("\n") == 1 and mine.read_text() == "mine"
    assert run.main(["embed", "--run", evaluated_run, "--split", "test", "--out", str(mine)]) == 2
    assert "is a file, not a folder; pick another --out" in capsys.readouterr().err and mine.read_text() == "mine"


def test_an_out_that_holds_files_is_refused_before_any_work(evaluated_run, tmp_path, capsys):
    """Issue 29 (6): compare's `--out` overwrote compare.md and compare.csv where embed and sample refuse."""
    out = tmp_path / "tables"
    out.mkdir()
    (out / "compare.md").write_text("mine")
    before = os.stat(os.path.join(evaluated_run, "eval.json")).st_mtime_ns
    assert run.main(["compare", evaluated_run, "--out", str(out), "--samples", "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds files and outputs are never overwritten; pick another --out" in err
    assert (out / "compare.md").read_text() == "mine" and os.listdir(out) == ["compare.md"]
    assert os.stat(os.path.join(evaluated_run, "eval.json")).st_mtime_ns == before  # nothing evaluated


def test_run_names_with_bars_and_line_breaks_keep_the_table_whole(evaluated_run, tmp_path):
    """Issue 29 (6): `|` or a newline in a run's folder name broke compare.md's rows."""
    odd = shutil.copytree(evaluated_run, str(tmp_path / "a|b\nc"))
    out = tmp_path / "out"
    assert run.main(["compare", evaluated_run, odd, "--out", str(out), "--samples", "2"]) == 0
    lines = (out / "compare.md").read_text().splitlines()
    head, rows = lines[0], [line for line in lines[2:] if line.startswith("| ")]
    cells = head.count(" | ")
    assert len(rows) == 2 and all(row.replace("\\|", "").count(" | ") == cells for row in rows)
    assert rows[1].startswith("| a\\|b c |")


def test_a_summary_without_epochs_is_no_key_error(evaluated_run, tmp_path):
    """Issue 29 (6): a summary.json without `epochs` (an older version's) gave compare a KeyError."""
    run_dir = shutil.copytree(evaluated_run, str(tmp_path / "run"))
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    del summary["epochs"], summary["train_seconds"]
    json.dump(summary, open(os.path.join(run_dir, "summary.json"), "w"))
    assert run.main(["compare", run_dir, "--out", str(tmp_path / "out"), "--samples", "2"]) == 0
    row = next(r for r in csv.DictReader(open(tmp_path / "out" / "compare.csv")))
    assert row["epochs"] == "" and row["train_s"] == "" and float(row["iwae"]) < 0


def test_a_folder_dataset_that_grew_between_two_evaluations_is_evaluated_again(tmp_path):
    """Issue 29 D9: runs on one `folder:` dataset, evaluated before and after it grew, crashed compare
    with a size mismatch; both are now scored on the data as it is, and paired."""
    images = write_domain(tmp_path / "images", 40, 30)
    cfg = TrainConfig(dataset=f"folder:{images}", image_size=8, epochs=1, group_size=4, log_every=1)
    model_cfg = ModelConfig(x_shape=(1, 8, 8), z_dim=2, beta_dim=2, K=3, hidden=8)
    first = fit(cfg, model_cfg, runs_dir=str(tmp_path / "runs")).run_dir
    assert run.main(["evaluate", "--run", first, "--samples", "2"]) == 0
    second = shutil.copytree(first, str(tmp_path / "second"))
    write_domain(images, 80, 30, seed=1)  # 40 more images: a larger test split
    assert run.main(["evaluate", "--run", second, "--samples", "2"]) == 0
    assert eval_json(first)["test_images"] < eval_json(second)["test_images"]
    assert run.main(["compare", first, second, "--out", str(tmp_path / "out"), "--samples", "2"]) == 0
    assert eval_json(first)["test_images"] == eval_json(second)["test_images"]
    rows = list(csv.DictReader(open(tmp_path / "out" / "compare.csv")))
    assert rows[1]["iwae_vs_first"] != ""  # paired over the same test groups again
