"""Sweep start-up checks (issue 10.7): a used name needs --resume or a new --name; --resume refuses changed data.
Both are decided before any Ray or data work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guitar_cls.tune import sweep
from guitar_cls.tune.record import SWEEP_START
from guitar_cls.tune.sweep import SweepDataChanged, SweepNameInUse, run_sweep

SMOKE = Path(__file__).resolve().parents[1] / "search_spaces" / "smoke.yaml"


class Started(Exception):
    """Raised where the sweep would start Ray: the start-up checks passed."""


@pytest.fixture()
def no_work(monkeypatch):
    def boom(*a, **k):
        raise Started

    monkeypatch.setattr(sweep, "init_ray", boom)
    monkeypatch.setattr(sweep, "prepare_data", boom)


def _overrides(tmp_path: Path, demo: Path) -> list[tuple[str, object]]:
    return [
        ("logging.output_dir", str(tmp_path / "outputs")),
        ("data.metadata", str(demo)),
        ("data.audio_root", str(demo.parent)),
        ("data.cache_dir", str(tmp_path / "cache")),
    ]


@pytest.mark.parametrize("left", ["mlflow_parent_run_id", "summary.json", "tune experiment"])
def test_a_used_name_without_resume_is_an_error_naming_resume_and_name(tmp_path, tiny_demo, no_work, left) -> None:
    overrides = _overrides(tmp_path, tiny_demo)
    if left == "tune experiment":
        (tmp_path / "outputs" / "ray_results" / "taken").mkdir(parents=True)
    else:
        (tmp_path / "outputs" / "sweeps" / "taken").mkdir(parents=True)
        (tmp_path / "outputs" / "sweeps" / "taken" / left).write_text("x")
    with pytest.raises(SweepNameInUse, match=r"'taken' is already used.*--resume.*--name"):
        run_sweep(SMOKE, overrides=overrides, name="taken")
    with pytest.raises(Started):  # a fresh name starts
        run_sweep(SMOKE, overrides=overrides, name="fresh")


def test_resume_refuses_changed_data_or_splits(tmp_path, tiny_demo, no_work) -> None:
    from guitar_cls.data.pipeline import metadata_fingerprint
    from guitar_cls.data.schema import read_metadata

    overrides = _overrides(tmp_path, tiny_demo)
    sweep_dir = tmp_path / "outputs" / "sweeps" / "again"
    sweep_dir.mkdir(parents=True)
    record = {"name": "again", "data_fingerprint": "0" * 64}
    (sweep_dir / SWEEP_START).write_text(json.dumps(record))
    with pytest.raises(SweepDataChanged, match=r"--resume.*'again'.*data fingerprint 000000000000.*--name"):
        run_sweep(SMOKE, overrides=overrides, name="again", resume=True)

    record["data_fingerprint"] = metadata_fingerprint(read_metadata(tiny_demo))
    (sweep_dir / SWEEP_START).write_text(json.dumps(record))
    with pytest.raises(Started):  # the same data resumes
        run_sweep(SMOKE, overrides=overrides, name="again", resume=True)
    with pytest.raises(SweepDataChanged, match="splits settings"):
        record["splits"] = {"train": 0.5, "val": 0.25, "test": 0.25, "seed": 7, "group_by": "source_audio"}
        (sweep_dir / SWEEP_START).write_text(json.dumps(record))
        run_sweep(SMOKE, overrides=overrides, name="again", resume=True)
