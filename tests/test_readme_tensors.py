"""README's example of tensors as data, logging and history runs as written."""

import logging

import pytest

from tests.test_readme import readme_block


@pytest.mark.slow
def test_the_tensors_example_trains_resumes_and_reads_its_history(tmp_path, monkeypatch, capsys):
    pytest.importorskip("pandas")
    monkeypatch.chdir(tmp_path)
    level = logging.getLogger("ugvae").level
    namespace = {}
    try:
        exec(readme_block("tensors-example"), namespace)
    finally:
        logging.getLogger("ugvae").setLevel(level)
    printed = capsys.readouterr().out.splitlines()
    run = namespace["run"]
    assert printed[0] == run.train_cfg.dataset and printed[0].startswith("tensors:") and len(printed[0]) == 20
    epochs = run.history.query("kind == 'epoch'")
    assert epochs["epoch"].tolist() == [0, 1] and epochs["test_elbo"].notna().all()
    assert printed[1].split() == ["step", "train_elbo", "test_elbo"] and len(printed) == 4
