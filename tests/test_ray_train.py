"""Ray Train for real: a killed worker is replaced and training resumes from the latest checkpoint."""

from __future__ import annotations

import pytest

from guitar_cls.config import load_config
from guitar_cls.train.smoke import smoke_overrides

pytestmark = pytest.mark.slow


def test_killed_worker_resumes_from_the_latest_checkpoint(tmp_path, tiny_demo, ray_local):
    from guitar_cls.train.run import train

    cfg = load_config(
        None,
        [
            *smoke_overrides(),
            ("data.metadata", str(tiny_demo)),
            ("data.audio_root", str(tiny_demo.parent)),
            ("training.epochs", 3),
            ("training.max_failures", 1),
            ("logging.output_dir", str(tmp_path / "out")),
            ("data.cache_dir", str(tmp_path / "cache")),
        ],
    )
    marker = tmp_path / "killed-once"
    summary = train(cfg, name="killed", extra_loop_config={"fail_marker": str(marker)})
    assert marker.exists(), "the worker was never killed"
    # The worker died right after reporting epoch 0; the replacement continued at epoch 1 instead of starting over.
    assert summary["start_epoch"] == 1, summary
    assert summary["epochs_reported"][-2:] == [1, 2] and summary["epochs_reported"].count(0) <= 1
    assert summary["epochs_run"] == 3
