"""The step benchmark runs end to end in a tiny configuration (so that it cannot rot); no timing is asserted."""

import json

import pytest

from ugvae.bench.train_step import main


@pytest.mark.slow
def test_benchmark_writes_every_row(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = [
        "--tiny",
        "--device",
        "cpu",
        "--groups",
        "1",
        "2",
        "--group-size",
        "4",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--epoch-samples",
        "40",
        "--profile",
        "hand",
        "--profile-prefix",
        str(tmp_path / "profile-"),
        "--json",
        str(out),
    ]
    assert main(argv) == 0
    result = json.loads(out.read_text())

    variants = ["svi", "pyro", "pyro-syncfree", "default", "jit", "hand"]
    assert [(r["variant"], r["G"]) for r in result["rows"]] == [(v, G) for v in variants for G in (1, 2)]
    for row in result["rows"]:
        assert "error" not in row, row
        assert row["step_ms"] > 0 and row["cpu_ms"] > 0 and row["samples_per_s"] > 0 and row["vs_best_hand"] > 0
        assert row["vs_hand_cpu"] == pytest.approx(
            row["cpu_ms"] / next(r["cpu_ms"] for r in result["rows"] if r["variant"] == "hand" and r["G"] == row["G"])
        )
        assert abs(row["samples_per_s"] * row["step_ms"] / 1e3 - row["G"] * row["B"]) < 1e-6
    assert [e["variant"] for e in result["epochs"]] == variants
    for epoch in result["epochs"]:
        assert epoch["G"] == 2 and epoch["samples"] == 40 and epoch["epoch_s"] > 0 and epoch["peak_memory_mb"] > 0
    assert "aten::addmm" in (tmp_path / "profile-hand.txt").read_text()  # the profile names the step's ops
    out = capsys.readouterr().out
    assert "x best hand" in out and "x hand cpu" in out and "load average" in out


def test_graph_variants_report_that_they_need_a_gpu(tmp_path):
    out = tmp_path / "bench.json"
    assert (
        main(
            [
                "--tiny",
                "--groups",
                "1",
                "--group-size",
                "4",
                "--steps",
                "1",
                "--warmup",
                "0",
                "--epoch-samples",
                "8",
                "--variants",
                "hand",
                "hand-graph",
                "pyro-syncfree-graph",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    rows = json.loads(out.read_text())["rows"]
    assert "step_ms" in rows[0] and all("needs --device cuda" in row["error"] for row in rows[1:])


def test_check_syncs_names_the_variants_that_read_the_host(capsys):
    tiny = ["--tiny", "--device", "cpu", "--groups", "2", "--group-size", "4", "--check-syncs"]
    assert main([*tiny, "--variants", "pyro-syncfree", "default"]) == 0
    assert main([*tiny, "--variants", "svi", "pyro", "pyro-syncfree"]) == 1
    out, err = capsys.readouterr()
    assert err.strip() == "error: host syncs left in svi, pyro"
    assert "pyro-syncfree           no host sync" in out and "default                 no host sync" in out
    assert "HostSyncError" in out
