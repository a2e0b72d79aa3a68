"""Metadata table: reading with coerced dtypes, row-level validation of every bad kind, summary, check_data job."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from guitar_cls.data.schema import (
    COLUMNS,
    MetadataError,
    RowProblem,
    read_metadata,
    summarize_metadata,
    validate_metadata,
    write_metadata,
)

SR = 8000


def _wav(path: Path, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(seconds * SR), dtype=np.float32), SR, subtype="PCM_16")


def _row(audio: str, i: int, label: str, onset: float, offset: float) -> dict:
    return {
        "subset_id": "dataset2",
        "source_audio": audio,
        "source_annotation": audio.replace(".wav", ".xml"),
        "event_index": i,
        "onset_sec": onset,
        "offset_sec": offset,
        "duration_sec": offset - onset,
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


@pytest.fixture
def clean(tmp_path: Path) -> tuple[pd.DataFrame, Path]:
    """Returns a clean 6-row table over two 2-second WAVs and its audio root."""
    _wav(tmp_path / "a.wav", 2.0)
    _wav(tmp_path / "sub" / "b.wav", 2.0)
    rows = [_row("a.wav", i, lab, 0.1 + 0.5 * i, 0.4 + 0.5 * i) for i, lab in enumerate(("harmonic", "dead_note"))]
    rows += [_row("sub/b.wav", i, lab, 0.2 * i, 0.2 * i + 0.1) for i, lab in enumerate(("general_note",) * 4)]
    return pd.DataFrame(rows), tmp_path


def test_clean_table_has_no_problems(clean):
    df, root = clean
    assert validate_metadata(df, root) == []


def _set(df: pd.DataFrame, row: int, **values) -> pd.DataFrame:
    df = df.copy()
    for k, v in values.items():
        df[k] = df[k].astype(object)
        df.at[row, k] = v
    return df


BAD_ROWS = {
    "missing duration": ({"duration_sec": np.nan}, "duration_sec"),
    "negative duration": ({"duration_sec": -0.2}, "duration_sec"),
    "zero duration": ({"duration_sec": 0.0}, "duration_sec"),
    "duration disagrees": ({"duration_sec": 0.9}, "duration_sec"),
    "offset before onset": ({"onset_sec": 0.5, "offset_sec": 0.3, "duration_sec": 0.2}, "offset_sec"),
    "onset beyond audio": ({"onset_sec": 2.5, "offset_sec": 2.7, "duration_sec": 0.2}, "onset_sec"),
    "unknown label": ({"label_category": "tapping"}, "label_category"),
    "flag contradicts label": ({"is_harmonic": True}, "is_harmonic"),
    "label flag missing": ({"is_general_note": False}, "is_general_note"),
    "missing audio": ({"source_audio": "nope.wav"}, "source_audio"),
    "duplicate event": ({"event_index": 1}, "event_index"),
}


@pytest.mark.parametrize("kind", list(BAD_ROWS))
def test_each_bad_kind_is_reported_with_its_row(clean, kind):
    df, root = clean
    values, column = BAD_ROWS[kind]
    problems = validate_metadata(_set(df, 4, **values), root)
    assert (4, column) in {(p.row, p.column) for p in problems}, problems
    assert all(p.row == 4 for p in problems), problems  # the other rows stay clean


def test_every_bad_row_is_reported(clean):
    df, root = clean
    df = _set(df, 0, label_category="slap")
    df = _set(df, 3, duration_sec=-1.0)
    df = _set(df, 5, source_audio="missing/c.wav")
    problems = validate_metadata(df, root)
    assert {p.row for p in problems} == {0, 3, 5}
    assert all(isinstance(p, RowProblem) and p.reason for p in problems)
    assert "missing/c.wav" in next(p.reason for p in problems if p.row == 5)


def test_duplicate_names_the_first_row(clean):
    df, root = clean
    df = pd.concat([df, df.iloc[[2]]], ignore_index=True)
    [problem] = validate_metadata(df, root)
    assert problem.row == 6 and "row 2" in problem.reason


def test_unreadable_audio_is_reported(clean):
    df, root = clean
    (root / "a.wav").write_bytes(b"not a wav file")
    problems = validate_metadata(df, root)
    assert {p.row for p in problems} == {0, 1} and all("unreadable" in p.reason for p in problems)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_read_metadata_round_trips_with_dtypes(clean, tmp_path, suffix):
    df, _ = clean
    path = write_metadata(df, tmp_path / f"meta{suffix}")
    back = read_metadata(path)
    assert list(back.columns) == list(COLUMNS)
    assert {c: back[c].dtype for c in COLUMNS} == {c: pd.Series(dtype=t).dtype for c, t in COLUMNS.items()}
    pd.testing.assert_frame_equal(back, read_metadata(write_metadata(back, tmp_path / f"again{suffix}")))
    assert back["is_harmonic"].tolist() == df["is_harmonic"].tolist()
    assert back["onset_sec"].tolist() == pytest.approx(df["onset_sec"].tolist())


def test_missing_columns_name_the_file_and_columns(clean, tmp_path):
    df, _ = clean
    path = tmp_path / "broken.csv"
    df.drop(columns=["duration_sec", "is_dead_note"]).to_csv(path, index=False)
    with pytest.raises(MetadataError) as err:
        read_metadata(path)
    assert "broken.csv" in str(err.value) and "duration_sec" in str(err.value) and "is_dead_note" in str(err.value)


def test_non_numeric_values_become_row_problems(clean, tmp_path):
    df, root = clean
    path = tmp_path / "m.csv"
    df.astype({"onset_sec": object}).assign(onset_sec=lambda d: d["onset_sec"].where(d.index != 2, "abc")).to_csv(
        path, index=False
    )
    problems = validate_metadata(read_metadata(path), root)
    assert (2, "onset_sec") in {(p.row, p.column) for p in problems}


def test_summary_counts_classes_subsets_and_durations(clean):
    df, _ = clean
    s = summarize_metadata(df)
    assert s["per_class"] == {"harmonic": 1, "dead_note": 1, "general_note": 4}
    assert s["per_subset"] == {"dataset2": {"general_note": 4, "harmonic": 1, "dead_note": 1}}
    assert s["n_recordings"] == 2 and s["n_events"] == 6
    assert s["duration_sec"]["p0"] == pytest.approx(0.1) and s["duration_sec"]["p100"] == pytest.approx(0.3)


def test_check_data_job_exit_codes(clean, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_data", Path(__file__).parents[1] / "jobs" / "check_data.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    df, root = clean
    good = write_metadata(df, tmp_path / "good.csv")
    assert job.main(["--metadata", str(good), "--audio-root", str(root)]) == 0
    bad = write_metadata(_set(df, 3, label_category="tapping"), tmp_path / "bad.csv")
    assert job.main(["--metadata", str(bad), "--audio-root", str(root)]) == 1
    assert "row 3 [label_category]" in capsys.readouterr().err


def test_paths_outside_the_audio_root_are_row_problems(clean):
    """An absolute or ``../`` source_audio used to pass validation and be read (issue 10.10)."""
    df, root = clean
    df = _set(df, 0, source_audio="sub/../a.wav")  # climbs back down: still inside, fine
    df = _set(df, 4, source_audio=str(root / "sub" / "b.wav"))  # absolute, although the file exists
    df = _set(df, 5, source_audio="sub/../../x.wav")
    problems = validate_metadata(df, root)
    assert [(p.row, p.column) for p in problems] == [(4, "source_audio"), (5, "source_audio")]
    assert all("outside the audio root" in p.reason for p in problems)
    under_sub = df.iloc[[1]].assign(source_audio="../a.wav")  # the file exists one level up
    [problem] = validate_metadata(under_sub, root / "sub")
    assert "../a.wav is outside the audio root" in problem.reason
    allowed = validate_metadata(df, root, allow_outside_root=True)  # read as before: only the missing file is bad
    assert [(p.row, p.reason.split(":")[0]) for p in allowed] == [(5, "audio file not found")]
    assert validate_metadata(under_sub, root / "sub", allow_outside_root=True) == []


def test_check_data_job_allows_outside_paths_only_when_asked(clean, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_data", Path(__file__).parents[1] / "jobs" / "check_data.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    df, root = clean
    meta = write_metadata(_set(df, 4, source_audio=str(root / "sub" / "b.wav")), tmp_path / "abs.csv")
    assert job.main(["--metadata", str(meta), "--audio-root", str(root)]) == 1
    assert "row 4 [source_audio]" in capsys.readouterr().err
    assert job.main(["--metadata", str(meta), "--audio-root", str(root), "--allow-outside-root"]) == 0
