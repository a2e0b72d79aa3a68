"""Classifier: training's preprocessing on raw audio, files, folders, long notes; the prediction tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from torch import nn

from guitar_cls.config import config_from_dict
from guitar_cls.data.audio import AudioError
from guitar_cls.data.schema import LABELS
from guitar_cls.predict import PROB_COLUMNS, Classifier, is_model_uri, predict_files, predict_recording, wav_files

SR = 22050


def tiny_checkpoint(path: Path, *, seed: int = 0, model: str = "resnet", **data: object) -> Path:
    """Writes a random-weight checkpoint of a tiny model (peaked outputs: the last layer is scaled up)."""
    from guitar_cls.features import make_frontend
    from guitar_cls.models import build_model
    from guitar_cls.train.checkpoint import make_payload, save_checkpoint

    params = {"base_width": 4, "blocks": [1, 1, 1, 1]} if model == "resnet" else {}
    cfg = config_from_dict({"model": {"name": model, "params": params}, "features": {"n_mels": 32}, "data": data})
    torch.manual_seed(seed)
    frontend = make_frontend(cfg.features, cfg.data.sample_rate)
    net = build_model(model, in_channels=frontend.in_channels, **params)
    if model != "resnet":  # torchvision inits vanish through eval-mode batch norm: set its statistics from data
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = None  # cumulative average over the calibration batches
        net.train()
        with torch.no_grad():
            for i in range(2):
                waves = torch.from_numpy(np.stack([note(0.6, f0=100.0 + 60 * i + 7 * j, seed=j) for j in range(4)]))
                net(*frontend(waves, torch.full((4,), waves.shape[1])))
    net.eval()
    last = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(40.0 if model == "resnet" else 0.5)  # peaked outputs, so that differences show
    payload = make_payload(net, cfg, frontend.in_channels, epoch=0, metrics={}, best_metric=0.0)
    return save_checkpoint(payload, path)


def note(seconds: float, sr: int = SR, f0: float = 196.0, decay: float = 0.3, seed: int = 0) -> np.ndarray:
    """Returns a plucked-string-like note ``(n,)`` float32."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    tone = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) / h for h in range(1, 8))
    return (0.3 * tone * np.exp(-t / decay)).astype(np.float32)


@pytest.fixture(scope="module")
def clf(tmp_path_factory: pytest.TempPathFactory) -> Classifier:
    return Classifier.load(tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt"))


def test_probabilities_are_distributions(clf: Classifier) -> None:
    probs = clf.classify_waves([(note(0.3), SR), (note(1.0, f0=440), SR), (note(4.0, decay=1.0), SR)])
    assert probs.shape == (3, len(LABELS))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.ptp(probs, axis=0).max() > 1e-3  # different notes, different outputs


def test_same_preprocessing_for_scale_rate_and_channels(clf: Classifier) -> None:
    wave = note(0.8)
    base = clf.classify_waves([(wave, SR)])
    quiet = clf.classify_waves([(0.05 * wave, SR)])  # peak normalisation
    stereo = clf.classify_waves([(np.stack([wave, wave], axis=1), SR)])  # downmix
    np.testing.assert_allclose(quiet, base, atol=1e-5)
    np.testing.assert_allclose(stereo, base, atol=1e-5)
    hi = note(0.8, sr=44100)  # the same note at 44.1 kHz is resampled to the model's rate
    np.testing.assert_allclose(clf.classify_waves([(hi, 44100)]), base, atol=0.02)


def test_batched_equals_one_at_a_time(clf: Classifier) -> None:
    items = [(note(s, f0=f), SR) for s, f in ((0.2, 110), (1.3, 220), (2.7, 330), (5.0, 82))]
    together = clf.classify_waves(items)
    alone = np.concatenate([clf.classify_waves([it]) for it in items])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_files_and_events_match_waves(clf: Classifier, tmp_path: Path) -> None:
    rec = np.concatenate([note(1.0, f0=110, seed=1), note(1.5, f0=330, seed=2)])
    sf.write(tmp_path / "rec.wav", rec, SR, subtype="FLOAT")
    sf.write(tmp_path / "one.wav", rec[:SR], SR, subtype="FLOAT")
    by_event = clf.classify_files([tmp_path / "rec.wav"] * 2, [0.0, 1.0], [1.0, 2.5])
    by_wave = clf.classify_waves([(rec[:SR], SR), (rec[SR:], SR)])
    np.testing.assert_allclose(by_event, by_wave, atol=1e-5)
    whole = clf.classify_files([tmp_path / "one.wav"])  # no onsets: the whole file
    np.testing.assert_allclose(whole, by_wave[:1], atol=1e-5)


def test_long_notes_average_their_windows(tmp_path: Path) -> None:
    split = Classifier.load(tiny_checkpoint(tmp_path / "best.pt", long_notes="split", max_duration=3.0))
    t = np.arange(int(7.0 * SR)) / SR
    wave = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)  # same peak in every window
    n = 3 * SR
    pieces = [(wave[:n], SR), (wave[n : 2 * n], SR), (wave[2 * n :], SR)]  # 3 s, 3 s, 1 s
    expected = split.classify_waves(pieces).mean(axis=0, keepdims=True)
    np.testing.assert_allclose(split.classify_waves([(wave, SR)]), expected, atol=1e-5)
    truncating = Classifier(
        split.model, split.frontend, config_from_dict(split.cfg.to_dict(), [("data.long_notes", "truncate")])
    )
    np.testing.assert_allclose(truncating.classify_waves([(wave, SR)]), split.classify_waves(pieces[:1]), atol=1e-5)


def test_predict_files_expands_folders_and_reports_errors(clf: Classifier, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    sf.write(tmp_path / "a.wav", note(0.6), SR)
    sf.write(tmp_path / "sub" / "b.WAV", note(0.9, f0=300), SR)
    sf.write(tmp_path / "silent.wav", np.zeros(SR, dtype=np.float32), SR)
    (tmp_path / "notes.txt").write_text("not audio")
    assert [p.name for p in wav_files([tmp_path])] == ["a.wav", "silent.wav", "b.WAV"]
    table = predict_files(clf, [tmp_path])
    assert list(table.columns) == ["path", "label", "confidence", *PROB_COLUMNS, "error"]
    ok = table[table["error"] == ""]
    assert len(ok) == 2 and set(ok["label"]) <= set(LABELS)
    probs = ok[list(PROB_COLUMNS)].to_numpy()
    np.testing.assert_allclose(ok["confidence"], probs.max(axis=1))
    assert [LABELS[i] for i in probs.argmax(axis=1)] == list(ok["label"])
    bad = table[table["path"].str.endswith("silent.wav")].iloc[0]
    assert bad["error"] == "silent segment" and pd.isna(bad["prob_harmonic"]) and pd.isna(bad["label"])
    with pytest.raises(AudioError, match="silent"):
        clf.classify_files([tmp_path / "silent.wav"])


def test_predict_recording_finds_each_note(clf: Classifier, tmp_path: Path) -> None:
    rec = np.concatenate([np.zeros(SR // 4), note(0.8, f0=110), note(0.8, f0=220), note(1.0, f0=330)])
    sf.write(tmp_path / "rec.wav", rec.astype(np.float32), SR)
    table = predict_recording(clf, tmp_path / "rec.wav")
    assert list(table.columns[:3]) == ["onset_sec", "offset_sec", "label"]
    np.testing.assert_allclose(table["onset_sec"], [0.25, 1.05, 1.85], atol=0.03)
    np.testing.assert_allclose(table[list(PROB_COLUMNS)].sum(axis=1), 1.0, atol=1e-5)


def test_model_uri_detection() -> None:
    assert is_model_uri("models:/guitar-note-classifier@champion") and is_model_uri("runs:/abc/model")
    assert not is_model_uri("outputs/runs/x/checkpoint") and not is_model_uri("C:\\ckpt\\best.pt")


@pytest.mark.slow
def test_predict_job_smoke(tmp_path: Path) -> None:
    import subprocess
    import sys

    cmd = [sys.executable, "jobs/predict.py", "--smoke-test", "--csv", str(tmp_path / "p.csv")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(tmp_path / "p.csv")
    assert len(table) == 3 and set(table["label"]) <= set(LABELS)  # one row per demo recording file
