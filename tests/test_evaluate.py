"""Evaluation: metrics on a hand-made case, split selection, the output folder (atomic) and the job."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from test_predict import SR, note, tiny_checkpoint

from guitar_cls import evaluate as ev
from guitar_cls.data.schema import COLUMNS, FLAG_COLUMNS, LABELS
from guitar_cls.data.splits import make_splits
from guitar_cls.outputs import MARKER, OutputFolderError
from guitar_cls.predict import PROB_COLUMNS, Classifier

OUTPUTS = {
    "metrics.json",
    "confusion_matrix.png",
    "calibration.png",
    "predictions.csv",
    "errors.csv",
    "breakdown.csv",
    MARKER,
}


def metadata(rows: list[dict]) -> pd.DataFrame:
    """Returns a schema-complete metadata table from partial rows (label flags filled in)."""
    df = pd.DataFrame(rows)
    df["subset_id"] = "test"
    df["source_annotation"] = df["source_audio"].str.replace(".wav", ".xml")
    df["duration_sec"] = df["offset_sec"] - df["onset_sec"]
    for col in ("string_number", "fret_number"):
        df[col] = np.nan
    for name, flag in FLAG_COLUMNS.items():
        df[flag] = df["label_category"] == name
    for col in ("pitch_midi", "excitation_style", "expression_style"):
        if col not in df:
            df[col] = None
    return df[list(COLUMNS)]


def test_report_on_known_predictions() -> None:
    cases = [  # source_audio, event_index, onset, offset, label, pitch, excitation, expression
        ("a.wav", 0, 0.0, 0.05, "harmonic", 45, "PK", "HA"),
        ("a.wav", 1, 1.0, 1.3, "harmonic", 50, "PK", "HA"),
        ("b.wav", 0, 0.0, 0.7, "dead_note", 62, "MU", "DN"),
        ("b.wav", 1, 1.0, 2.5, "general_note", 75, "FS", "NO"),
        ("c.wav", 0, 0.0, 2.5, "general_note", None, None, "NO"),
        ("c.wav", 1, 3.0, 3.2, "dead_note", 50, "PK", "DN"),
    ]
    keys = (
        "source_audio",
        "event_index",
        "onset_sec",
        "offset_sec",
        "label_category",
        "pitch_midi",
        "excitation_style",
        "expression_style",
    )
    meta = metadata([dict(zip(keys, c)) for c in cases])
    probs = np.array(
        [[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.1, 0.6, 0.3], [0.1, 0.1, 0.8], [0.3, 0.5, 0.2], [np.nan] * 3]
    )
    errors = [""] * 5 + ["silent segment"]
    metrics, predictions, error_rows, breakdown = ev.evaluation_report(meta, probs, errors)

    # usable rows: truth h h d g g, predicted h d d g d
    assert metrics["n_events"] == 5 and metrics["n_unusable"] == 1
    assert metrics["accuracy"] == pytest.approx(0.6)
    assert metrics["balanced_accuracy"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    assert metrics["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [0, 1, 1]]
    assert metrics["recall/dead_note"] == 1.0 and metrics["precision/dead_note"] == pytest.approx(1 / 3)
    # every confidence in its own bin: ECE = mean |correct - confidence|
    assert metrics["ece"] == pytest.approx((0.1 + 0.7 + 0.4 + 0.2 + 0.5) / 5)
    assert metrics["most_confused"] == [
        {"true": "harmonic", "predicted": "dead_note", "count": 1},
        {"true": "general_note", "predicted": "dead_note", "count": 1},
    ]

    assert list(predictions["predicted"][:5]) == ["harmonic", "dead_note", "dead_note", "general_note", "dead_note"]
    assert list(predictions["correct"]) == [True, False, True, True, False, False]
    assert predictions["error"].iloc[5] == "silent segment" and pd.isna(predictions["predicted"].iloc[5])

    kinds = error_rows.groupby("kind", sort=False)
    assert list(kinds.get_group("high_confidence_mistake")["row"]) == [1, 4]
    assert list(kinds.get_group("low_confidence_correct")["row"]) == [2, 3, 0]
    assert list(kinds.get_group("confused_pair")["count"]) == [1, 1]

    by = breakdown.set_index(["factor", "bucket"])
    assert by.loc[("duration_sec", "[1.0, 2.0)"), "n"] == 1 and by.loc[("duration_sec", "[1.0, 2.0)"), "accuracy"] == 1
    assert by.loc[("pitch_range", "unknown"), "n"] == 1  # row 4 has no pitch; row 5 is unusable
    assert by.loc[("pitch_range", "C3-B3 (48-59)"), "n"] == 1
    assert by.loc[("expression_style", "HA"), "accuracy"] == 0.5
    assert by.loc[("subset_id", "test"), "n"] == 5  # results by source (the demo's synth / samples)
    assert by.loc[("excitation_style", "unknown"), "n_general_note"] == 1
    assert by.groupby(level="factor")["n"].sum().eq(5).all()  # each factor partitions the usable rows
    assert metrics["breakdown"]["expression_style/HA"]["n"] == 2


def test_select_split_saved_and_recomputed() -> None:
    rows = [
        {
            "source_audio": f"r{i}.wav",
            "event_index": j,
            "onset_sec": j,
            "offset_sec": j + 0.5,
            "label_category": LABELS[(i + j) % 3],
        }
        for i in range(9)
        for j in range(3)
    ]
    df = metadata(rows)
    in_test = df["source_audio"].isin(["r0.wav", "r4.wav"])
    saved = df[["source_audio", "event_index"]].assign(split=np.where(in_test, "test", "train"))
    test = ev.select_split(df, "test", splits=saved)
    assert set(test["source_audio"]) == {"r0.wav", "r4.wav"} and len(test) == 6
    assert ev.select_split(df, "all", splits=saved) is df
    recomputed = ev.select_split(df, "test", fractions=(0.5, 0.2, 0.3), seed=7)
    expected = make_splits(df, (0.5, 0.2, 0.3), seed=7)
    assert list(recomputed.index) == list(df.index[expected == "test"])
    with pytest.raises(ValueError, match="none of these events"):
        ev.select_split(df, "test", splits=saved.assign(source_audio="elsewhere.wav"))


@pytest.fixture()
def small_set(tmp_path: Path) -> tuple[Path, Path]:
    """Returns (metadata.csv, checkpoint) for 3 recordings of 3 notes; the run's splits.csv puts rec2 in test."""
    rows = []
    (tmp_path / "audio").mkdir()
    for r in range(3):
        wave = np.concatenate([note(0.6, f0=110 * (k + 1) + 20 * r, seed=r * 3 + k) for k in range(3)])
        sf.write(tmp_path / "audio" / f"rec{r}.wav", wave, SR)
        rows += [
            {
                "source_audio": f"audio/rec{r}.wav",
                "event_index": k,
                "onset_sec": 0.6 * k,
                "offset_sec": 0.6 * k + 0.55,
                "label_category": LABELS[k],
                "pitch_midi": 40 + 10 * k,
                "excitation_style": "PK",
                "expression_style": ("HA", "DN", "NO")[k],
            }
            for k in range(3)
        ]
    past_the_end = {"source_audio": "audio/rec0.wav", "event_index": 9, "onset_sec": 50.0, "offset_sec": 51.0}
    rows.append({**past_the_end, "label_category": "harmonic"})  # unusable audio
    path = tmp_path / "metadata.csv"
    metadata(rows).to_csv(path, index=False)
    ckpt = tiny_checkpoint(tmp_path / "run" / "checkpoint" / "best.pt")
    splits = pd.DataFrame(
        {
            "source_audio": [f"audio/rec{r}.wav" for r in range(3) for _ in range(3)],
            "event_index": [k for _ in range(3) for k in range(3)],
            "split": ["train"] * 3 + ["val"] * 3 + ["test"] * 3,
        }
    )
    splits.to_csv(tmp_path / "run" / "splits.csv", index=False)
    return path, ckpt


def test_evaluate_writes_every_output(small_set: tuple[Path, Path], tmp_path: Path) -> None:
    meta_path, ckpt = small_set
    clf = Classifier.load(ckpt.parent)
    metrics = ev.evaluate(clf, meta_path, tmp_path, tmp_path / "eval")
    assert {p.name for p in (tmp_path / "eval").iterdir()} == OUTPUTS
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["split"] == "all" and saved["n_events"] == 9 and saved["n_unusable"] == 1
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "micro_f1", "mcc", "ece", "f1/harmonic", "breakdown"):
        assert key in saved
    predictions = pd.read_csv(tmp_path / "eval" / "predictions.csv", keep_default_na=False)
    assert len(predictions) == 10 and "past the end" in predictions["error"].iloc[9]
    # the probabilities are the Classifier's on the same events
    expected = clf.classify_files(
        [tmp_path / p for p in predictions["source_audio"][:9]],
        predictions["onset_sec"][:9],
        predictions["offset_sec"][:9],
    )
    np.testing.assert_allclose(predictions[list(PROB_COLUMNS)][:9].astype(float), expected, atol=1e-6)
    assert metrics["accuracy"] == pytest.approx(float(np.mean(expected.argmax(1) == np.tile([0, 1, 2], 3))))

    # --split test: the run's splits.csv (found beside the checkpoint) selects rec2
    ev.evaluate(ckpt, meta_path, tmp_path, tmp_path / "eval", split="test")
    predictions = pd.read_csv(tmp_path / "eval" / "predictions.csv")
    assert list(predictions["source_audio"].unique()) == ["audio/rec2.wav"] and len(predictions) == 3


def test_failed_evaluation_leaves_previous_output(
    small_set: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    meta_path, ckpt = small_set
    clf = Classifier.load(ckpt)
    out = tmp_path / "out"
    ev.evaluate(clf, meta_path, tmp_path, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args: object, **kw: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(ev, "plot_reliability", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        ev.evaluate(clf, meta_path, tmp_path, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp folder left behind
    with pytest.raises(RuntimeError):
        ev.evaluate(clf, meta_path, tmp_path, tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()


def test_out_that_is_not_an_evaluation_is_refused_and_user_files_survive(
    small_set: tuple[Path, Path], tmp_path: Path
) -> None:
    """Issue 10.1: ``--out`` on a folder holding a notes file used to delete it."""
    meta_path, ckpt = small_set
    clf = Classifier.load(ckpt)
    out = tmp_path / "notes"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(OutputFolderError, match="--overwrite"):
        ev.evaluate(clf, meta_path, tmp_path, out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    ev.evaluate(clf, meta_path, tmp_path, out, overwrite=True)  # our files beside the user's
    assert {p.name for p in out.iterdir()} == OUTPUTS | {"notes.txt"}
    ev.evaluate(clf, meta_path, tmp_path, out, split="test")  # now a previous evaluation: replaced, notes kept
    assert (out / "notes.txt").read_text() == "keep me"
    assert len(pd.read_csv(out / "predictions.csv")) == 3


@pytest.mark.slow
def test_evaluate_job_smoke(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "jobs/evaluate.py", "--smoke-test", "--out", str(tmp_path / "e")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = json.loads(done.stdout.strip().splitlines()[-1])
    assert line["n_events"] > 0 and 0 <= line["balanced_accuracy"] <= 1
    assert {p.name for p in (tmp_path / "e").iterdir()} == OUTPUTS
