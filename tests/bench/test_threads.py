"""The thread benchmark runs end to end in a tiny configuration, beside a busy process that it
stops again; no timing is asserted."""

import json
import multiprocessing

import pytest
import torch

from ugvae.bench.threads import main


@pytest.mark.slow
def test_every_thread_count_and_G_gets_a_row_and_the_spinners_stop(tmp_path, capsys):
    before = torch.get_num_threads()
    out = tmp_path / "threads.json"
    argv = ["--tiny", "--groups", "1", "2", "--group-size", "4", "--threads", "1", "2"]
    assert main([*argv, "--steps", "2", "--warmup", "1", "--busy", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())

    assert [(r["G"], r["threads"]) for r in result["rows"]] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    for row in result["rows"]:
        assert row["step_ms"] > 0
        base = next(r for r in result["rows"] if r["G"] == row["G"] and r["threads"] == 1)
        assert row["vs_one"] == pytest.approx(row["step_ms"] / base["step_ms"])
    assert result["busy_processes"] == 1 and result["cores_usable"] >= 1
    assert multiprocessing.active_children() == []  # the spinner is gone
    assert torch.get_num_threads() == before
    assert "x 1 thread" in capsys.readouterr().out
