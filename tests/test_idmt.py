"""IDMT-style XML ingestion: round trip, label mapping, WAV pairing, and problems reported by file."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from guitar_cls.data.idmt import ingest_idmt, read_idmt_xml, write_idmt_xml
from guitar_cls.data.schema import read_metadata, validate_metadata

SR = 8000


def _wav(path: Path, seconds: float = 3.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(seconds * SR), dtype=np.float32), SR, subtype="PCM_16")
    return path


def _event(onset: float, style: str = "NO", pitch: int = 52, offset: float | None = None, exc: str = "PK") -> dict:
    return {
        "pitch": pitch,
        "onsetSec": onset,
        "offsetSec": onset + 0.25 if offset is None else offset,
        "fretNumber": 2,
        "stringNumber": 4,
        "excitationStyle": exc,
        "expressionStyle": style,
    }


def _pair(root: Path, name: str, events: list[dict], subset: str = "dataset2", audio_name: str | None = None) -> None:
    _wav(root / subset / "audio" / f"{name}.wav")
    write_idmt_xml(
        root / subset / "annotation" / f"{name}.xml", audio_name or f"{name}.wav", events, {"instrument": "EG"}
    )


def test_write_then_ingest_gives_identical_events(tmp_path):
    events = [_event(0.1 + 0.4 * i, style) for i, style in enumerate(["NO", "HA", "DN", "BE", "SL", "VI"])]
    events[2]["excitationStyle"] = "MU"
    _pair(tmp_path, "LP_Lick1_KN", events)
    result = ingest_idmt(tmp_path)
    assert result.problems == []
    t = result.table
    assert t["onset_sec"].tolist() == pytest.approx([e["onsetSec"] for e in events])
    assert t["offset_sec"].tolist() == pytest.approx([e["offsetSec"] for e in events])
    assert t["duration_sec"].tolist() == pytest.approx([0.25] * 6)
    assert t["pitch_midi"].tolist() == [52.0] * 6 and t["fret_number"].tolist() == [2.0] * 6
    assert t["expression_style"].tolist() == ["NO", "HA", "DN", "BE", "SL", "VI"]
    assert t["excitation_style"].tolist() == ["PK", "PK", "MU", "PK", "PK", "PK"]
    assert t["label_category"].tolist() == ["general_note", "harmonic", "dead_note"] + ["general_note"] * 3
    assert t["is_harmonic"].tolist() == [False, True, False, False, False, False]
    assert t["is_dead_note"].tolist() == [False, False, True, False, False, False]
    assert t["event_index"].tolist() == list(range(6))
    assert set(t["subset_id"]) == {"dataset2"}
    assert set(t["source_audio"]) == {"dataset2/audio/LP_Lick1_KN.wav"}
    assert set(t["source_annotation"]) == {"dataset2/annotation/LP_Lick1_KN.xml"}
    assert validate_metadata(t, tmp_path) == []


def test_xml_has_the_idmt_structure(tmp_path):
    path = write_idmt_xml(tmp_path / "x.xml", "x.wav", [_event(0.5)], {"instrumentModel": "LP"})
    root = ET.parse(path).getroot()
    assert root.tag == "instrumentRecording"
    assert root.findtext("globalParameter/audioFileName") == "x.wav"
    assert root.findtext("globalParameter/instrumentModel") == "LP"
    [ev] = root.findall("transcription/event")
    assert float(ev.findtext("onsetSec")) == 0.5 and ev.findtext("expressionStyle") == "NO"
    assert read_idmt_xml(path)[0] == "x.wav"


def test_bad_files_are_reported_by_file_and_good_ones_come_through(tmp_path):
    _pair(tmp_path, "AR_good", [_event(0.1), _event(0.6, "HA")])
    bad = tmp_path / "dataset2" / "annotation" / "AR_broken.xml"
    bad.write_text("<instrumentRecording><transcription><event>")
    write_idmt_xml(tmp_path / "dataset2" / "annotation" / "AR_nowav.xml", "AR_nowav.wav", [_event(0.1)])
    (tmp_path / "dataset2" / "annotation" / "other.xml").write_text("<?xml version='1.0'?><score/>")
    result = ingest_idmt(tmp_path)
    assert len(result.table) == 2 and set(result.table["source_audio"]) == {"dataset2/audio/AR_good.wav"}
    joined = "\n".join(result.problems)
    assert len(result.problems) == 3
    assert "AR_broken.xml: malformed" in joined
    assert "AR_nowav.xml" in joined and "no WAV" in joined
    assert "other.xml" in joined and "instrumentRecording" in joined


def test_repeated_trailing_events_are_dropped_and_reported(tmp_path):
    events = [_event(0.1), _event(0.5), _event(0.9, "DN")]
    _pair(tmp_path, "FS_Lick2", events + events[-2:])
    result = ingest_idmt(tmp_path)
    assert len(result.table) == 3
    assert result.table["onset_sec"].tolist() == pytest.approx([0.1, 0.5, 0.9])
    assert result.problems == ["dataset2/annotation/FS_Lick2.xml: dropped 2 repeated event(s)"]


def test_unknown_codes_are_reported_not_guessed(tmp_path):
    _pair(tmp_path, "LP_x", [_event(0.1, "TP"), _event(0.5, "HA"), _event(0.9, "NO", exc="XX")])
    result = ingest_idmt(tmp_path)
    assert result.table["expression_style"].tolist() == ["HA", "NO"]
    assert any("unknown expressionStyle 'TP'" in p for p in result.problems)
    assert any("unknown excitationStyle 'XX'" in p for p in result.problems)


def test_invalid_timing_is_reported(tmp_path):
    _pair(tmp_path, "LP_t", [_event(0.5, offset=0.4), _event(1.0)])
    result = ingest_idmt(tmp_path)
    assert len(result.table) == 1 and any("event 0" in p and "offsetSec" in p for p in result.problems)


def test_audio_file_name_wins_over_the_stem(tmp_path):
    # like the real data set: the XML's name carries a suffix its WAV lacks
    _wav(tmp_path / "dataset2" / "audio" / "AR_Lick3_FN.wav")
    _wav(tmp_path / "dataset2" / "audio" / "AR_Lick3_FN_a.wav")
    write_idmt_xml(tmp_path / "dataset2" / "annotation" / "AR_Lick3_FN_a.xml", "AR_Lick3_FN.wav", [_event(0.2)])
    [source] = ingest_idmt(tmp_path).table["source_audio"]
    assert source == "dataset2/audio/AR_Lick3_FN.wav"


def test_stem_is_used_when_audio_file_name_is_missing(tmp_path):
    _wav(tmp_path / "dataset1" / "Strat" / "audio" / "S_1.wav")
    write_idmt_xml(tmp_path / "dataset1" / "Strat" / "annotation" / "S_1.xml", "renamed.wav", [_event(0.2)])
    result = ingest_idmt(tmp_path)
    assert result.table["source_audio"].tolist() == ["dataset1/Strat/audio/S_1.wav"]
    assert result.table["subset_id"].tolist() == ["dataset1"]


def test_audio_root_and_parquet_output(tmp_path):
    import importlib.util

    _pair(tmp_path / "data", "NY_1", [_event(0.1), _event(0.5, "DN")], subset="dataset3")
    spec = importlib.util.spec_from_file_location("ingest", Path(__file__).parents[1] / "jobs" / "ingest_idmt.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    out = tmp_path / "meta.parquet"
    assert (
        job.main(["--root", str(tmp_path / "data" / "dataset3"), "--out", str(out), "--audio-root", str(tmp_path)]) == 0
    )
    t = read_metadata(out)
    assert t["source_audio"].tolist() == ["data/dataset3/audio/NY_1.wav"] * 2
    assert t["subset_id"].tolist() == ["dataset3"] * 2  # the top folder when no datasetN is below the root


def test_demo_xml_round_trips_through_the_ingester(tiny_demo):
    table = read_metadata(tiny_demo)
    root = tiny_demo.parent
    for rel, rows in table.groupby("source_annotation"):
        audio_name, raw = read_idmt_xml(root / rel)
        assert rows["source_audio"].iloc[0].endswith(audio_name)
        assert [float(e["onsetSec"]) for e in raw] == pytest.approx(rows["onset_sec"].tolist())
        assert [float(e["offsetSec"]) for e in raw] == pytest.approx(rows["offset_sec"].tolist())
        assert [e["expressionStyle"] for e in raw] == rows["expression_style"].tolist()
