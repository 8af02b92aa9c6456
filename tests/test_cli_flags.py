"""Flags made from the settings' fields (flags.py): `train`'s flags and defaults as they were when
they were written by hand, one glossary in every command, old spellings that still work with one
notice, help lines that say what each default means, and argparse known to three modules only."""

import argparse
import ast
import logging
import os
from dataclasses import MISSING

import pytest

from tests.helpers import ROOT
from ugvae import run
from ugvae.experiments import cli
from ugvae.flags import GLOSSARY, LazyParser
from ugvae.guide import GUIDES
from ugvae.settings import declaration, default_of

# `train`'s flags at 72f652f, written by hand in run.py: (flags, dest, default).
TRAIN_FLAGS_BEFORE = [
    (("--dataset",), "dataset", "mnist"),
    (("--data-dir",), "data_dir", None),
    (("--image-size",), "image_size", None),
    (("--mix",), "mix", 0.5),
    (("--groups",), "groups", "random"),
    (("--group-warmup",), "group_warmup", 0),
    (("--model",), "model", "ugvae"),
    (("--guide",), "guide", None),
    (("--K",), "K", 10),
    (("--z-dim",), "z_dim", 10),
    (("--beta-dim",), "beta_dim", 10),
    (("--hidden",), "hidden", 256),
    (("--likelihood",), "likelihood", "gaussian"),
    (("--var-x",), "var_x", 0.1),
    (("--cluster-weights",), "cluster_weights", "uniform"),
    (("--arch",), "arch", "auto"),
    (("--decoder-film", "--no-decoder-film"), "decoder_film", False),
    (("--epochs",), "epochs", 200),
    (("--group-size", "-B"), "group_size", 128),
    (("--groups-per-step", "-G"), "groups_per_step", 1),
    (("--lr",), "lr", 0.001),
    (("--seed",), "seed", 0),
    (("--device",), "device", "auto"),
    (("--threads",), "threads", None),
    (("--jit",), "jit", False),
    (("--validate", "--no-validate"), "validate", None),
    (("--graph",), "graph", False),
    (("--clip-norm",), "clip_norm", None),
    (("--log-every",), "log_every", 10),
    (("--eval-every",), "eval_every", None),
    (("--checkpoint-every",), "checkpoint_every", 1000),
    (("--keep-checkpoints",), "keep_checkpoints", 3),
    (("--local-kl-weight",), "local_kl_weight", 1.0),
    (("--leave-one-out", "--no-leave-one-out"), "leave_one_out", False),
    (("--set-mix-weight",), "set_mix_weight", 0.0),
    (("--runs-dir",), "runs_dir", "runs"),
    (("--run-dir",), "run_dir", None),
    (("--resume",), "resume", None),
    (("--config",), "config", None),
    (("--quiet",), "quiet", False),
    (("--strategy",), "strategy", None),
    (("--devices",), "devices", "auto"),
    (("--num-nodes",), "num_nodes", 1),
    (("--accelerator",), "accelerator", "auto"),
]


def parser_of(*command: str) -> argparse.ArgumentParser:
    """The built parser of a command (`train`, `sample`, `experiment NAME`)."""
    parser = run.build_parser()
    for word in command:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
        if isinstance(parser, LazyParser):
            parser._build()
    return parser


def every_command():
    return [("train",), *((name,) for name in cli.COMMANDS), *(("experiment", name) for name in cli.EXPERIMENTS)]


def visible(parser):
    """The actions a user sees in --help (deprecated spellings are hidden)."""
    return [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS and a.dest != "help"]


def test_train_flags_are_the_hand_written_ones_with_the_same_defaults():
    fields = {f.name: f for settings_type in run.train_settings() for f in settings_type.__dataclass_fields__.values()}
    now = []
    for action in visible(parser_of("train")):
        f = fields.get(action.dest)
        if f is None:  # --resume, --config, --quiet: written in run.py
            default = action.default
        else:  # generated: the default the command line applies when the flag is absent
            declared = declaration(f)
            default = default_of(f) if declared.command_line_default is MISSING else declared.command_line_default
        now.append((tuple(action.option_strings), action.dest, default))
    assert sorted(now) == sorted(TRAIN_FLAGS_BEFORE)


def test_a_flag_given_with_its_default_value_counts_as_given():
    args = parser_of("train").parse_args(["--lr", "0.001", "-B", "128"])
    assert {"lr", "group_size"} <= set(vars(args)) and "epochs" not in vars(args)


@pytest.mark.parametrize("command", every_command(), ids=" ".join)
def test_the_glossary_holds_in_every_command(command):
    """`--groups SPEC` is the training spec only; a count of groups is `--num-groups N`; B is
    `-B/--group-size B`; other runs are `--baseline-runs`; a seed is `--seed N`."""
    assert {term.flags for term in GLOSSARY.values()} == {
        ("--groups",),
        ("--num-groups",),
        ("--group-size", "-B"),
        ("--baseline-runs",),
        ("--seed",),
    }
    for action in visible(parser_of(*command)):
        flags = set(action.option_strings)
        if "--groups" in flags:
            assert command == ("train",) and action.dest == "groups"
        if action.dest in GLOSSARY:
            term = GLOSSARY[action.dest]
            assert flags == set(term.flags) and action.metavar == term.metavar, (command, action.dest, flags)
        assert not {"--baseline-run", "--num_groups"} & flags


def test_the_glossary_is_in_the_top_level_help(capsys):
    assert run.main([]) == 0
    out = capsys.readouterr().out
    assert "words every command uses in one sense" in out
    assert all(f"{term.flags[0]}" in out and term.meaning in out for term in GLOSSARY.values())


@pytest.mark.parametrize(
    "command, old, value, field, parsed",
    [
        (("sample",), "--groups", "3", "num_groups", 3),
        (("experiment", "structured-batches"), "--groups", "40", "num_groups", 40),
        (("experiment", "group-factors"), "--groups", "40", "num_groups", 40),
        (("experiment", "structured-batches"), "--baseline-run", "a", "baseline_runs", ["a"]),
        (("experiment", "domain-alignment"), "--baseline-run", "a", "baseline_runs", ["a"]),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else str(v),
)
def test_an_old_spelling_still_works_with_one_deprecation_line(command, old, value, field, parsed, caplog):
    with caplog.at_level(logging.WARNING, logger="ugvae"):
        args = parser_of(*command).parse_args([old, value, "--run", "r"])
    assert getattr(args, field) == parsed
    notices = [r.getMessage() for r in caplog.records]
    new = "--" + field.replace("_", "-")
    assert notices == [f"{old} is deprecated and goes in the next release; write {new}"]


def test_an_old_spelling_is_one_notice_on_the_console(small_run, tmp_path, capsys):
    out = str(tmp_path / "drawn")
    assert run.main(["sample", "--run", small_run, "--groups", "1", "-B", "2", "--out", out, "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err == "--groups is deprecated and goes in the next release; write --num-groups\n"
    assert os.path.isfile(os.path.join(out, "samples.png"))


def help_of(*command: str) -> str:
    return parser_of(*command).format_help()


def test_the_guide_help_lists_every_registered_guide():
    text = "".join(help_of("train").split())  # argparse wraps lines at hyphens too
    assert all(f"{model}:" in text and guide in text for model, guide in GUIDES)
    assert "(default:themodel'sfirst)" in text


@pytest.mark.parametrize("command", every_command(), ids=" ".join)
def test_every_default_is_said_plainly(command):
    """No help line shows `None` for a default: each says what the default means (issue 30)."""
    text = " ".join(help_of(*command).split())
    assert "None" not in text and ("(default: " in text or command == ("upgrade",))


def test_help_lines_that_were_cut_short_or_showed_none():
    assert "(default: ./.data)" in " ".join(help_of("train").split())
    folder = " ".join(help_of("embed").split())
    assert "a flat folder is cut into groups of B (default: none: embed a --split)" in folder


def test_only_the_command_line_modules_know_argparse():
    knowing = set()
    for folder, dirs, files in os.walk(ROOT):
        # The package's own folders only: not the venv, an editable install's link tree, the tests, ...
        dirs[:] = [d for d in dirs if not d.startswith((".", "_")) and d not in ("build", "tests", "bench", "scripts")]
        for file in files:
            if file.endswith(".py"):
                path = os.path.join(folder, file)
                tree = ast.parse(open(path).read())
                names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
                if "argparse" in names:
                    knowing.add(os.path.relpath(path, ROOT))
    assert "flags.py" in knowing and knowing <= {"run.py", "flags.py", os.path.join("experiments", "cli.py")}
