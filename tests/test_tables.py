"""Several metadata tables in one run: config and CLI forms, combination under one audio root, recordings kept apart
across tables (splits, splits.csv, cache key), validation errors naming the table and row, the single table as is."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from guitar_cls.config import ConfigError, DataConfig, config_from_dict, load_config
from guitar_cls.data import source
from guitar_cls.data.pipeline import cache_key, load_cache
from guitar_cls.data.schema import LABELS, MetadataError, read_metadata, write_metadata
from guitar_cls.data.source import DataTable, data_overrides, load_tables, resolve_tables
from guitar_cls.data.splits import make_splits, save_splits
from guitar_cls.train.run import absolute_paths, prepare_data

SR = 8000
SHARED = "dataset2/audio/take_0.wav"  # a relative path both tables use, for different recordings


def _row(audio: str, i: int, label: str) -> dict:
    onset = 0.1 + 0.3 * i
    return {
        "subset_id": "dataset2",
        "source_audio": audio,
        "source_annotation": audio.replace(".wav", ".xml"),
        "event_index": i,
        "onset_sec": onset,
        "offset_sec": onset + 0.2,
        "duration_sec": 0.2,
        "pitch_midi": 60.0,
        "string_number": 3.0,
        "fret_number": 5.0,
        "excitation_style": "PK",
        "expression_style": {"harmonic": "HA", "dead_note": "DN"}.get(label, "NO"),
        "label_category": label,
        "is_harmonic": label == "harmonic",
        "is_dead_note": label == "dead_note",
        "is_general_note": label == "general_note",
    }


def _table(root: Path, n_recordings: int, freq: float, name: str = "metadata.csv") -> Path:
    """Writes ``n_recordings`` 1-s WAVs under ``root`` (the first at SHARED) with one note per class each, and the
    table at ``root.parent / <root name>-<name>`` (not in ``root``: roots are then given explicitly)."""
    rows = []
    t = np.arange(SR) / SR
    for k in range(n_recordings):
        audio = SHARED if k == 0 else f"dataset2/audio/take_{k}.wav"
        (root / audio).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / audio, (0.3 * np.sin(2 * np.pi * (freq + 10 * k) * t)).astype(np.float32), SR)
        rows += [_row(audio, i, label) for i, label in enumerate(LABELS)]
    return write_metadata(pd.DataFrame(rows), root.parent / f"{root.name}-{name}")


@pytest.fixture
def two_tables(tmp_path: Path) -> tuple[DataTable, DataTable]:
    """Two tables of 5 recordings each under different roots; both name SHARED (different audio)."""
    a = tmp_path / "idmt" / "A"
    b = tmp_path / "other" / "B"
    return (DataTable(_table(a, 5, 200.0), a), DataTable(_table(b, 5, 400.0), b))


def _cfg(tables, tmp_path: Path, **data):
    return config_from_dict(
        {
            "data": {
                "metadata": [str(t.metadata) for t in tables],
                "audio_root": [str(t.audio_root) for t in tables],
                "cache_dir": str(tmp_path / "cache"),
                "sample_rate": SR,
                **data,
            },
            "features": {"f_max": 4000.0},
        }
    )


# ------------------------------------------------------------------------------------------------ config and CLI


def test_config_takes_a_list_of_tables_and_roots_and_round_trips(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  metadata: [a.csv, b.parquet, demo]\n  audio_root: [/r/a, null, null]\n")
    cfg = load_config(path)
    assert cfg.data.metadata == ["a.csv", "b.parquet", "demo"] and cfg.data.audio_root == ["/r/a", None, None]
    assert config_from_dict(cfg.to_dict()) == cfg
    assert load_config(None, ["data.metadata=m.csv"]).data.metadata == "m.csv"  # a single string as before


@pytest.mark.parametrize(
    "data, message",
    [
        ({"metadata": []}, "data.metadata: an empty list"),
        ({"metadata": ["a.csv", 3]}, r"data.metadata\[1\]: expected a string"),
        ({"metadata": ["a.csv", None]}, r"data.metadata\[1\]: must not be null"),
        ({"metadata": ["a.csv", "b.csv"], "audio_root": ["r"]}, "data.audio_root: a list needs one entry per table"),
        ({"metadata": "a.csv", "audio_root": ["r", "s"]}, r"one entry per table \(1\), got 2"),
    ],
)
def test_bad_table_lists_are_config_errors_naming_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"data": data})


def test_cli_options_become_a_string_for_one_table_and_lists_for_several():
    assert data_overrides([], []) == []
    assert data_overrides(["m.csv"], ["R"]) == [("data.metadata", "m.csv"), ("data.audio_root", "R")]
    assert data_overrides(["a.csv", "b.csv"], ["R"]) == [
        ("data.metadata", ["a.csv", "b.csv"]),
        ("data.audio_root", "R"),
    ]
    assert data_overrides(["a.csv", "demo"], ["RA", ""]) == [
        ("data.metadata", ["a.csv", "demo"]),
        ("data.audio_root", ["RA", None]),
    ]
    with pytest.raises(ValueError, match="one per --data"):
        data_overrides(["a.csv", "b.csv", "c.csv"], ["RA", "RB"])


def test_resolve_tables_pairs_roots_shares_one_and_keeps_the_demo_folder(tmp_path, monkeypatch):
    generated = []

    def fake_demo(out_dir, n_recordings, seed):
        generated.append(out_dir)
        (Path(out_dir) / source.DEMO_METADATA).write_text("x\n")

    monkeypatch.setattr(source, "make_demo_dataset", fake_demo)
    monkeypatch.chdir(tmp_path)
    for name in ("a.csv", "t/b.csv"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x\n")
    demo = tmp_path / "data" / "demo"
    shared = resolve_tables(DataConfig(metadata=["a.csv", "t/b.csv", "demo"], audio_root="R", demo_dir="data/demo"))
    assert shared == [
        DataTable(tmp_path / "a.csv", tmp_path / "R"),
        DataTable(tmp_path / "t" / "b.csv", tmp_path / "R"),
        DataTable(demo / "metadata.csv", demo),  # the demo set's paths are relative to its own folder
    ]
    paired = resolve_tables(DataConfig(metadata=["a.csv", "t/b.csv"], audio_root=["RA", None]))
    assert [t.audio_root for t in paired] == [tmp_path / "RA", tmp_path / "t"]
    assert len(generated) == 1
    with pytest.raises(FileNotFoundError, match=r"data.metadata\[1\]: .*nope.csv"):
        resolve_tables(DataConfig(metadata=["a.csv", "nope.csv"]))
    with pytest.raises(ValueError, match="2 tables"):
        source.resolve_data(DataConfig(metadata=["a.csv", "t/b.csv"]))


def test_absolute_paths_keeps_demo_and_null_roots(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = absolute_paths(config_from_dict({"data": {"metadata": ["a.csv", "demo"], "audio_root": ["r", None]}}))
    root = tmp_path.resolve()
    assert cfg.data.metadata == [str(root / "a.csv"), "demo"] and cfg.data.audio_root == [str(root / "r"), None]


# ------------------------------------------------------------------------------------------------ combination


def test_one_table_is_used_as_it_is(two_tables):
    a, _ = two_tables
    data = load_tables([a])
    pd.testing.assert_frame_equal(data.metadata, read_metadata(a.metadata))
    assert data.audio_root == a.audio_root and data.problems == [] and data.metadata["source_audio"][0] == SHARED


def test_several_tables_merge_under_their_shared_folder(two_tables, tmp_path):
    a, b = two_tables
    data = load_tables([a, b])
    df = data.metadata
    assert data.problems == [] and data.audio_root == tmp_path
    assert len(df) == 30 and list(df.index) == list(range(30))
    assert data.table_index.tolist() == [0] * 15 + [1] * 15
    for table, part in ((a, df.iloc[:15]), (b, df.iloc[15:])):
        own = read_metadata(table.metadata)
        # every row still names its own file, and only source_audio changed
        assert [data.audio_root / p for p in part["source_audio"]] == [
            table.audio_root / p for p in own["source_audio"]
        ]
        pd.testing.assert_frame_equal(
            part.drop(columns="source_audio").reset_index(drop=True), own.drop(columns="source_audio")
        )
    assert df["source_audio"][0] == f"idmt/A/{SHARED}" and df["source_audio"][15] == f"other/B/{SHARED}"


def test_the_same_relative_path_in_two_tables_stays_two_recordings(two_tables, tmp_path):
    a, b = two_tables
    df = load_tables([a, b]).metadata
    assert df["source_audio"].nunique() == 10  # 5 recordings per table, SHARED counted twice
    assert not df.duplicated(["source_audio", "event_index"]).any()  # splits.csv / predictions keys stay unique
    splits = make_splits(df, seed=0)
    saved = pd.read_csv(save_splits(df, splits, tmp_path / "splits.csv"))
    assert not saved.duplicated(["source_audio", "event_index"]).any()
    assert (saved["split"].to_numpy() == splits.to_numpy()).all()


@pytest.mark.parametrize("seed", range(5))
def test_no_recording_leaks_across_splits_of_combined_tables(two_tables, seed):
    a, b = two_tables
    data = load_tables([a, b])
    splits = make_splits(data.metadata, seed=seed)
    files = [data.audio_root / p for p in data.metadata["source_audio"]]  # the recording is the audio file
    assert (splits.groupby(pd.Series(files, index=splits.index).astype(str)).nunique() == 1).all()
    assert set(splits[data.table_index == 0]) | set(splits[data.table_index == 1]) == {"train", "val", "test"}


def test_the_same_file_named_by_two_tables_is_one_recording_and_a_repeated_event_is_an_error(two_tables, tmp_path):
    a, _ = two_tables
    first = pd.read_csv(a.metadata).iloc[:3]
    second = pd.read_csv(a.metadata).iloc[3:]
    second.loc[3, ["source_audio", "event_index"]] = [SHARED, 0]  # the first table's event 0 of the same file again
    one, two = write_metadata(first, tmp_path / "one.csv"), write_metadata(second, tmp_path / "two.parquet")
    data = load_tables([DataTable(one, a.audio_root), DataTable(two, a.audio_root)])
    assert data.audio_root == a.audio_root and data.metadata["source_audio"][0] == SHARED
    assert [(p.table, p.problem.row, p.problem.column) for p in data.problems] == [(two, 0, "event_index")]
    assert str(one) in data.problems[0].problem.reason and "row 0" in data.problems[0].problem.reason


def test_the_cache_key_changes_with_either_table_or_root(two_tables, tmp_path):
    a, b = two_tables
    cfg = DataConfig()

    def key(tables):
        data = load_tables(tables)
        return cache_key(data.metadata, data.audio_root, cfg)

    base = key([a, b])
    assert key([a, b]) == base
    assert key([b, a]) != base  # row numbers (the cache's row ids) follow the table order
    for i, table in enumerate((a, b)):
        edited = read_metadata(table.metadata)
        edited.loc[1, ["onset_sec", "offset_sec"]] += 0.01
        changed = DataTable(write_metadata(edited, tmp_path / f"edited-{i}.csv"), table.audio_root)
        moved_root = tmp_path / "moved" / f"root-{i}"
        moved_root.parent.mkdir(exist_ok=True)
        table.audio_root.rename(moved_root)
        moved = DataTable(table.metadata, moved_root)
        tables = [[changed, b], [a, changed]][i]
        assert key(tables) != base, f"editing table {i} kept the key"
        assert key([[moved, b], [a, moved]][i]) != base, f"moving root {i} kept the key"
        moved_root.rename(table.audio_root)


# ------------------------------------------------------------------------------------------------ prepare_data


def test_a_bad_row_is_reported_with_its_table_and_row(two_tables, tmp_path):
    a, b = two_tables
    bad = read_metadata(b.metadata)
    bad.loc[4, "onset_sec"] = -1.0
    bad.loc[4, "duration_sec"] = bad.loc[4, "offset_sec"] + 1.0
    write_metadata(bad, b.metadata)
    with pytest.raises(MetadataError) as err:
        prepare_data(_cfg([a, b], tmp_path), tmp_path / "run")
    message = str(err.value)
    assert "bad rows in 1 of 2 tables" in message
    assert f"{b.metadata} row 4: onset_sec: negative onset" in message
    assert str(a.metadata) not in message
    assert not (tmp_path / "run" / "splits.csv").exists()


def test_a_single_table_reports_bad_rows_as_before(two_tables, tmp_path):
    a, _ = two_tables
    bad = read_metadata(a.metadata)
    bad.loc[2, "label_category"] = "bent"
    write_metadata(bad, a.metadata)
    cfg = config_from_dict({"data": {"metadata": str(a.metadata), "audio_root": str(a.audio_root)}})
    with pytest.raises(
        MetadataError, match=rf"^{re.escape(str(a.metadata))}: 1 bad rows \(run jobs/check_data.py\):\n  row 2: "
    ):
        prepare_data(cfg, tmp_path / "run")


def test_prepare_data_trains_on_both_tables(ray_local, two_tables, tmp_path):
    a, b = two_tables
    data = prepare_data(_cfg([a, b], tmp_path), tmp_path / "run")
    assert data.metadata_path == tmp_path / "run" / "metadata.csv" and data.audio_root == tmp_path
    written = read_metadata(data.metadata_path)  # what jobs/evaluate.py and the report read back
    pd.testing.assert_frame_equal(written, data.metadata)
    assert data.describe()["tables"] == [{"metadata": str(t.metadata), "audio_root": str(t.audio_root)} for t in (a, b)]
    cached = load_cache(data.cache.path, with_waveforms=False)
    assert sorted(set(cached["row"])) == list(range(30)) and len(data.cache.quarantine) == 0
    assert cached["source_audio"].nunique() == 10
    splits = pd.read_csv(tmp_path / "run" / "splits.csv")
    assert len(splits) == 30 and not splits.duplicated(["source_audio", "event_index"]).any()
    assert sorted(r for s in ("train", "val", "test") for r in data.rows(s)) == list(range(30))
