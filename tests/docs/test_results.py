"""The Results pages' tables are the package's own output: `compare --experiment NAME` over the runs
stored in docs/results/data/ makes each table again, byte for byte."""

import os

import pytest

from tests.helpers import ROOT

RESULTS = os.path.join(ROOT, "docs", "results")
# experiment -> the `reference` its page's command passes (None: the package's default)
PAGES = {"set-generation": None, "group-factors": None, "structured-batches": "random"}


def stored_runs(experiment: str) -> list[str]:
    folder = os.path.join(RESULTS, "data", experiment)
    return [os.path.join(folder, name) for name in sorted(os.listdir(folder))]  # the shell's glob order


@pytest.mark.parametrize("experiment", PAGES)
def test_each_results_table_is_what_compare_makes_of_the_stored_runs(experiment, tmp_path):
    from ugvae.experiments.commands.compare import CompareSettings, compare

    runs = stored_runs(experiment)
    assert len(runs) >= 2 and all(r.endswith(("-s0", "-s1", "-s2")) for r in runs)  # seeds of settings
    settings = CompareSettings(experiment=experiment, reference=PAGES[experiment], out=str(tmp_path / "out"))
    made = compare(runs, settings).table
    with open(os.path.join(RESULTS, "_tables", f"{experiment}.md"), encoding="utf-8") as f:
        assert f.read() == made, f"docs/results/_tables/{experiment}.md is stale: run scripts/docs_results.sh"
    with open(os.path.join(RESULTS, f"{experiment}.md"), encoding="utf-8") as f:
        page = f.read()
    assert f"_tables/{experiment}.md" in page and f"--experiment {experiment}" in page  # included, reproducible


def test_a_stored_run_holds_only_what_the_tables_read():
    for experiment in PAGES:
        for run in stored_runs(experiment):
            files = {os.path.relpath(os.path.join(d, f), run) for d, _, names in os.walk(run) for f in names}
            assert {"config.json", "summary.json"} <= files, run
            assert all(f.endswith(".json") for f in files) and len(files) <= 4, files  # no checkpoint, no figure
