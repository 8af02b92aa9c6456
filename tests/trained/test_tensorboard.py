"""RUN/tensorboard/ is never written through a link out of the run (issue 29 D18)."""

import logging
import os

import pytest

from ugvae.trained.tensorboard import summary_writer


def test_a_tensorboard_folder_linked_out_of_the_run_gets_no_events(tmp_path, caplog):
    pytest.importorskip("torch.utils.tensorboard")
    outside = tmp_path / "outside"
    outside.mkdir()
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(outside, run / "tensorboard")
    with caplog.at_level(logging.WARNING):
        assert summary_writer(str(run / "tensorboard")) is None
    assert "symbolic link" in caplog.text
    assert list(outside.iterdir()) == []
