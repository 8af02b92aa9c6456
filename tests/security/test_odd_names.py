"""File and folder names that are not UTF-8 (issue 29, D6): a Latin-1 name arrives in Python as
surrogate escapes, which `str.encode()` refuses. Images are read by their real names; the names
written to outputs and messages are shown with \\xNN; the console prints a path's own bytes,
whatever the locale."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.helpers import ROOT, tiny_flags
from ugvae import run
from ugvae.files import printable_name
from ugvae.train import fit
from ugvae.trained import TrainConfig

LATIN1 = b"caf\xe9"  # "café" in Latin-1: not UTF-8


def write_image(path: bytes, seed: int):
    pixels = np.random.default_rng(seed).integers(0, 255, (28, 28), dtype=np.uint8)
    Image.fromarray(pixels, mode="L").save(path.decode(sys.getfilesystemencoding(), "surrogateescape"))


def test_embed_of_sets_with_latin1_names_writes_every_file(small_run, tmp_path, capsys):
    """D6: on 72f652f embed crashed after embeddings.npz was written and before beta.csv."""
    sets = os.fsencode(tmp_path / "sets")
    for name in (LATIN1, b"plain"):
        os.makedirs(os.path.join(sets, name))
        for i in range(3):
            write_image(os.path.join(sets, name, b"\xe9t\xe9-%d.png" % i), i)
    out = tmp_path / "out"
    assert run.main(["embed", "--run", small_run, "--folder", os.fsdecode(sets), "--out", str(out), "--quiet"]) == 0
    assert (out / "beta.csv").read_text().splitlines()[1].startswith('0,"caf\\xe9",3,')
    with np.load(out / "embeddings.npz") as arrays:
        assert arrays["sample_name"][0] == "caf\\xe9/\\xe9t\\xe9-0.png"
    assert capsys.readouterr().out.endswith("beta.csv\n")


def test_training_on_a_folder_with_latin1_names_works(tmp_path):
    """D6: on 72f652f the 90/10 split's hash of a Latin-1 file name raised UnicodeEncodeError."""
    images = os.fsencode(tmp_path / "images")
    for name in (LATIN1, b"plain"):
        os.makedirs(os.path.join(images, name))
        for i in range(10):
            write_image(os.path.join(images, name, b"\xe9t\xe9-%d.png" % i), i)
    cfg = TrainConfig(dataset=f"folder:{os.fsdecode(images)}", image_size=8, epochs=1, group_size=2)
    trained = fit(cfg, z_dim=2, beta_dim=2, K=2, hidden=8, runs_dir=str(tmp_path / "runs"))
    assert os.path.isfile(trained.path("summary.json"))


@pytest.mark.slow
def test_a_run_directory_with_a_latin1_name_trains_and_prints_its_own_bytes(tmp_path):
    """D6: whatever the locale, in a console that refuses what it cannot encode (errors=strict),
    the last line is the run directory, byte for byte (TensorBoard, which cannot write to such a
    path, is left out with a warning)."""
    run_dir = os.path.join(os.fsencode(tmp_path), LATIN1)
    env = dict(os.environ, OMP_NUM_THREADS="1", LC_ALL="C", PYTHONIOENCODING="utf-8:strict", PYTHONUTF8="0")
    result = subprocess.run(
        [sys.executable, "run.py", *tiny_flags(), b"--run-dir", run_dir], cwd=ROOT, env=env, capture_output=True
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    assert result.stdout.splitlines()[-1] == run_dir
    assert os.path.isfile(os.path.join(run_dir, b"summary.json"))


@pytest.mark.parametrize(
    "name, shown",
    [("caf\udce9", "caf\\xe9"), ("café", "café"), ("plain", "plain"), ("a\ud800b", "a\\ud800b")],
)
def test_printable_names_escape_only_what_is_not_utf8(name, shown):
    assert printable_name(name) == shown
    shown.encode("utf-8")  # encodes anywhere UTF-8 does
