"""Data source resolution: absolute paths, the configured table, and the demo set generated once, atomically."""

from __future__ import annotations

from pathlib import Path

import pytest

from guitar_cls.config import DataConfig
from guitar_cls.data import source


def test_configured_metadata_is_made_absolute(tmp_path, monkeypatch):
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "m.csv").write_text("x\n")
    monkeypatch.chdir(tmp_path)
    meta, root = source.resolve_data(DataConfig(metadata="tables/m.csv"))
    assert meta == tmp_path / "tables" / "m.csv" and root == tmp_path / "tables"
    meta, root = source.resolve_data(DataConfig(metadata="tables/m.csv", audio_root="audio"))
    assert root == tmp_path / "audio" and root.is_absolute()


def test_missing_metadata_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        source.resolve_data(DataConfig(metadata=str(tmp_path / "nope.csv")))


def _fake_generator(calls: list):
    def make(out_dir, n_recordings, seed):
        calls.append((Path(out_dir), n_recordings, seed))
        (Path(out_dir) / "dataset2").mkdir(parents=True)
        path = Path(out_dir) / "metadata.csv"
        path.write_text("made\n")
        return path

    return make


def test_demo_is_generated_once_under_demo_dir_relative_to_cwd(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(source, "make_demo_dataset", _fake_generator(calls))
    monkeypatch.chdir(tmp_path)
    cfg = DataConfig(demo_dir="data/demo", demo_recordings=7, demo_seed=3)
    meta, root = source.resolve_data(cfg)
    assert meta == tmp_path / "data" / "demo" / "metadata.csv" and meta.read_text() == "made\n"
    assert root == tmp_path / "data" / "demo"
    assert len(calls) == 1 and calls[0][1:] == (7, 3)
    assert calls[0][0] != root  # generated elsewhere, then renamed into place
    assert source.resolve_data(cfg) == (meta, root) and len(calls) == 1
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["demo"]  # no temp folders left


def test_interrupted_generation_leaves_no_half_data_set(tmp_path, monkeypatch):
    def broken(out_dir, n_recordings, seed):
        (Path(out_dir) / "dataset2" / "audio").mkdir(parents=True)
        (Path(out_dir) / "dataset2" / "audio" / "x.wav").write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(source, "make_demo_dataset", broken)
    with pytest.raises(KeyboardInterrupt):
        source.resolve_data(DataConfig(demo_dir=str(tmp_path / "demo")))
    assert list(tmp_path.iterdir()) == []


def test_real_demo_generation(tmp_path):
    meta, root = source.resolve_data(DataConfig(demo_dir=str(tmp_path / "demo"), demo_recordings=3))
    assert meta.is_file() and all((root / src / "audio").is_dir() for src in ("synth", "samples"))


def test_stale_demo_set_is_reported_not_reused_silently(tmp_path, caplog):
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "metadata.csv").write_text("made by an older version\n")
    with caplog.at_level("WARNING", logger="guitar_cls.data.source"):
        meta, _ = source.resolve_data(DataConfig(demo_dir=str(demo), demo_recordings=3))
    assert meta == demo / "metadata.csv" and "delete the folder to regenerate" in caplog.text


def test_demo_dir_with_foreign_files_is_never_deleted(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(source, "make_demo_dataset", _fake_generator(calls))
    demo = tmp_path / "mine"
    demo.mkdir()
    (demo / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="did not write"):
        source.resolve_data(DataConfig(demo_dir=str(demo)))
    assert (demo / "notes.txt").read_text() == "keep me"
