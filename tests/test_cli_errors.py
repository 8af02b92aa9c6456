"""Every bad input to `run.py` ends in exit code 2 and one line on stderr that names the fix."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
from PIL import Image

from tests.helpers import tiny_flags
from ugvae import run
from ugvae.errors import ConfigError
from ugvae.model import ModelConfig
from ugvae.train import fit
from ugvae.trained import TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = tiny_flags()
# A device this machine lacks: no CUDA at all, or one past its last GPU.
ABSENT_CUDA = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"
CUDA_FIX = "use cuda:0" if torch.cuda.is_available() else "set --device to cpu"

# (what is wrong, arguments after TINY, words the message must hold: the problem and its fix)
BAD_INPUTS = [
    (
        "dataset missing offline",
        ["--dataset", "celeba", "--data-dir", "{tmp}/data"],
        ["CelebA is not in", "could not be downloaded", "--data-dir"],
    ),
    ("unknown dataset", ["--dataset", "imagenet"], ["'imagenet' is unknown", "choose one of"]),
    ("mistyped flag", ["--datset", "mnist"], ["unrecognized arguments: --datset", "did you mean --dataset?"]),
    ("unknown model", ["--model", "vea"], ["model 'vea' is unknown", "choose one of"]),
    ("unknown guide", ["--guide", "exact"], ["guide 'exact' does not exist for model 'ugvae'", "choose one of"]),
    (
        "an extension of UG-VAE on a model that would ignore it",
        ["--model", "vae", "--cluster-weights", "global"],
        ["--cluster-weights would be ignored by model vae", "set --model to ugvae"],
    ),
    (
        "two extensions on another model",
        ["--model", "mlvae", "--decoder-film", "--cluster-weights", "global"],
        ["--cluster-weights and --decoder-film would be ignored by model mlvae", "drop them"],
    ),
    (
        "unknown model, named before any data is read",
        ["--model", "vea", "--dataset", "celeba", "--data-dir", "{tmp}/data"],
        ["model 'vea' is unknown"],
    ),
    ("abbreviated flag", ["--epoch", "2"], ["unrecognized arguments: --epoch 2"]),
    ("mixed image sizes", ["--dataset", "synthetic:40+digits"], ["cannot mix", "--image-size to 28"]),
    ("image size the architecture cannot take", ["--arch", "conv"], ["64x64", "--image-size to 64", "--arch to mlp"]),
    ("corrupt image file", ["--dataset", "folder:{corrupt}"], ["broken.png cannot be read", "delete or replace"]),
    ("empty folder", ["--dataset", "folder:{empty}"], ["holds no images", "add .bmp"]),
    ("missing folder", ["--dataset", "folder:{tmp}/nowhere"], ["does not exist", "check the path"]),
    (
        "checkpoint of another config",
        ["--resume", "{mixed_run}"],
        [
            "hidden is 8 in the checkpoint but 16 here",
            "x_shape is [1, 16, 16] in the checkpoint but [1, 28, 28] here",
            "start a new run",
        ],
    ),
    ("run directory exists", ["--run-dir", "{empty}"], ["already exists", "never overwritten", "--resume"]),
    ("resume of a directory that is no run", ["--resume", "{empty}"], ["not a run directory"]),
    ("resume of a missing directory", ["--resume", "{tmp}/nowhere"], ["not a run directory"]),
    (
        "resume with a flag that changes the run",
        ["--resume", "{mixed_run}", "--lr", "0.5", "--hidden", "16"],
        ["--lr differs", "drop it", "train --config {mixed_run}/config.json"],
    ),
    ("resume into a new directory", ["--resume", "{mixed_run}", "--run-dir", "{tmp}/x"], ["--run-dir differs"]),
    (
        "resume of a run with a torn config.json",
        ["--resume", "{torn_config}"],
        ["config.json is not valid JSON", "restore it"],
    ),
    ("B < 2 for a global model", ["-B", "1"], ["--group-size must be >= 2"]),
    ("negative group size", ["-B", "-3"], ["--group-size must be between 1 and 1048576, got -3"]),
    ("negative seed", ["--seed", "-1"], ["--seed must be between 0 and 4294967295, got -1"]),
    ("K < 1", ["--K", "0"], ["--K must be between 1 and 4096, got 0"]),
    ("negative hidden size", ["--hidden", "-4"], ["--hidden must be between 1 and 65536, got -4"]),
    ("negative latent size", ["--z-dim", "-2"], ["--z-dim must be between 1 and 4096, got -2"]),
    ("negative image size", ["--image-size", "-3"], ["--image-size must be between 1 and 4096, got -3"]),
    ("no epochs", ["--epochs", "0"], ["--epochs must be between 1 and 1000000, got 0"]),
    ("negative learning rate", ["--lr", "-0.1"], ["--lr must be > 0"]),
    ("negative clip norm", ["--clip-norm", "-1"], ["--clip-norm must be > 0"]),
    ("a word for a number", ["--K", "three"], ["--K", "invalid int value"]),
    ("CUDA asked for but absent", ["--device", ABSENT_CUDA], [f"--device {ABSENT_CUDA} was asked for", CUDA_FIX]),
    ("resume of a CUDA run where CUDA is absent", ["--resume", "{cuda_run}"], [ABSENT_CUDA, CUDA_FIX]),
    ("unknown device", ["--device", "tpu"], ["'tpu' is not a device name", "use cpu"]),
    ("a launch flag without a strategy", ["--devices", "2"], ["--devices applies only with --strategy; add it"]),
    ("a deprecated spelling where none exists", ["--num-groups", "3"], ["unrecognized arguments: --num-groups"]),
    # NaN and inf pass every `> 0` check; they used to surface steps later as divergence.
    ("NaN learning rate", ["--lr", "nan"], ["--lr must be a finite number, got nan"]),
    ("infinite learning rate", ["--lr", "inf"], ["--lr must be a finite number, got inf"]),
    ("infinite clip norm", ["--clip-norm", "inf"], ["--clip-norm must be a finite number"]),
    ("NaN mixture share", ["--mix", "nan"], ["--mix must be a finite number"]),
    ("NaN likelihood variance", ["--var-x", "nan"], ["--var-x must be a finite number, got nan"]),
    ("infinite likelihood variance", ["--var-x", "inf"], ["--var-x must be a finite number, got inf"]),
    ("more images than memory", ["--dataset", "synthetic:99999999999"], ["GiB of memory are free", "fewer images"]),
    ("config.json with a word for a number", ["--resume", "{typed_config}"], ["epochs must be a whole number"]),
    ("config.json with a float for a size", ["--resume", "{float_config}"], ["K must be a whole number, got 3.5"]),
    ("metrics.csv of another program", ["--resume", "{foreign_metrics}"], ["metrics.csv has the columns", "aside"]),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """Folders and runs that the bad inputs point at, made once."""
    tmp = tmp_path_factory.mktemp("places")
    os.makedirs(tmp / "empty")
    os.makedirs(tmp / "corrupt")
    for i in range(11):
        Image.new("L", (8, 8), color=20 * i).save(tmp / "corrupt" / f"{i}.png")
    (tmp / "corrupt" / "broken.png").write_bytes(b"not a png at all")

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models train fastest on one thread
    cfg = TrainConfig(dataset="synthetic:40", epochs=1, group_size=8, checkpoint_every=100)
    mine = fit(cfg, ModelConfig(x_shape=(1, 28, 28), z_dim=2, beta_dim=2, K=3, hidden=16), runs_dir=str(tmp / "runs"))
    other = fit(
        TrainConfig(**{**cfg.to_dict(), "image_size": 16}),
        ModelConfig(x_shape=(1, 16, 16), z_dim=2, beta_dim=2, K=3, hidden=8),
        runs_dir=str(tmp / "runs"),
    )
    mine, other = mine.run_dir, other.run_dir
    torch.set_num_threads(threads)
    # Someone edits the config.json of a run (the checkpoint copied in from another run would be
    # refused for its run id before its config is compared, see tests/trained/test_checkpoint.py).
    mixed = shutil.copytree(other, tmp / "mixed_run")
    config = json.loads(open(os.path.join(mine, "config.json")).read())
    config["run_id"] = json.loads((mixed / "config.json").read_text())["run_id"]
    (mixed / "config.json").write_text(json.dumps(config))
    os.makedirs(tmp / "torn_config")
    (tmp / "torn_config" / "config.json").write_text('{"model": {"x_shape": [1, 2')
    # A run trained on a GPU that this machine lacks.
    cuda_run = shutil.copytree(other, tmp / "cuda_run")
    config = json.loads((cuda_run / "config.json").read_text())
    config["train"]["device"] = ABSENT_CUDA
    (cuda_run / "config.json").write_text(json.dumps(config))
    # config.json edited by hand, and a metrics.csv that is not ours, in copies of a good run.
    for name, edit in (
        ("typed_config", lambda c: c["train"].update(epochs="ten")),
        ("float_config", lambda c: c["model"].update(K=3.5)),
    ):
        copy = shutil.copytree(mine, tmp / name)
        config = json.loads((copy / "config.json").read_text())
        edit(config)
        (copy / "config.json").write_text(json.dumps(config))
    (shutil.copytree(mine, tmp / "foreign_metrics") / "metrics.csv").write_text("time,loss\n1,2\n")
    return {
        "tmp": str(tmp),
        "empty": str(tmp / "empty"),
        "corrupt": str(tmp / "corrupt"),
        "mixed_run": str(mixed),
        "torn_config": str(tmp / "torn_config"),
        "cuda_run": str(cuda_run),
        **{name: str(tmp / name) for name in ("typed_config", "float_config", "foreign_metrics")},
    }


@pytest.fixture
def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network is unreachable (offline test)")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def main_exit_code(argv) -> int:
    try:
        return run.main(argv)
    except SystemExit as e:  # argparse's errors exit from inside parse_args
        return e.code


@pytest.mark.parametrize("problem, args, words", BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_gives_one_line_naming_the_fix(problem, args, words, places, offline, tmp_path, capsys):
    runs = tmp_path / "runs"
    # A resumed run keeps its own config: the flags of a new run would be refused as changes.
    base = ["--quiet"] if "--resume" in args else TINY
    argv = [*base, "--runs-dir", str(runs), *(a.format(**places) for a in args)]
    assert main_exit_code(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1, err
    for word in words:
        assert word.format(**places) in err
    assert not runs.exists() or not os.listdir(runs), "bad input left a run directory behind"


def test_a_cuda_run_resumes_on_the_cpu_when_asked(places, capsys):
    assert run.main(["--resume", places["cuda_run"], "--device", "cpu"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == places["cuda_run"]


def test_debug_shows_the_traceback():
    with pytest.raises(ConfigError, match="unknown"):
        run.main(["--dataset", "imagenet", "--debug"])


@pytest.mark.slow
def test_the_script_itself_prints_one_line_and_exits_2():
    proc = subprocess.run(
        [sys.executable, "run.py", "--dataset", "imagenet"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: dataset 'imagenet' is unknown")
