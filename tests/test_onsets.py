"""Onset/offset segmentation: one note per played note on synthetic recordings with known note times.

Pitch changes without a new attack (slides, bends, vibrato) stay one note, a harmonic's pick click and its ring are one
note, and noise floors or the recording level do not add or remove notes.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy import signal

from guitar_cls.onsets import detect_notes, detect_onsets, log_filterbank

SR = 22050
ONSETS = (0.25, 0.9, 1.45, 2.3, 2.65)
FAST_DECAY = 2  # this note dies out long before the next onset


def _recording(seed: int = 0) -> np.ndarray:
    """Returns 3.5 s of a monophonic line of plucked-string-like notes at ONSETS over a -60 dB noise floor.

    Each note rings until the next one stops it (5 ms fade), as on one string.
    """
    rng = np.random.default_rng(seed)
    wave = 1e-3 * rng.standard_normal(int(3.5 * SR))
    bounds = [*ONSETS, len(wave) / SR]
    for k, (t0, t1) in enumerate(zip(bounds[:-1], bounds[1:])):
        start, stop = int(t0 * SR), int(t1 * SR)
        t = np.arange(stop - start) / SR
        f0 = 110 * 2 ** (k / 5)
        tone = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6))
        envelope = np.exp(-t / (0.05 if k == FAST_DECAY else 0.3)) * np.minimum(1, t / 0.002)
        envelope *= np.minimum(1, (t[-1] - t) / 0.005)
        wave[start:stop] += 0.5 * tone * envelope
    return wave.astype(np.float32)


def _note(
    semitones: np.ndarray, f0: float = 196.0, decay: float = 0.8, partials: tuple[int, ...] = tuple(range(1, 13))
) -> np.ndarray:
    """Returns a plucked tone ``(N,)`` whose pitch follows ``f0 * 2 ** (semitones / 12)`` (one value per sample)."""
    t = np.arange(semitones.size) / SR
    phase = 2 * np.pi * np.cumsum(f0 * 2.0 ** (semitones / 12.0)) / SR  # (N,) fundamental phase
    tone = sum(np.sin(h * phase) / h for h in partials if h * f0 * 2 ** (semitones.max() / 12) < 0.45 * SR)
    return tone * np.exp(-t / decay) * np.minimum(1.0, t / 0.002) * np.minimum(1.0, (t[-1] - t) / 0.005)


def _click(rng: np.random.Generator, peak: float) -> np.ndarray:
    """Returns a pick click ``(30 ms,)``: 2-6 kHz noise decaying in 2 ms."""
    t = np.arange(int(0.03 * SR)) / SR
    sos = signal.butter(2, [2000, 6000], btype="bandpass", fs=SR, output="sos")
    burst = signal.sosfilt(sos, rng.standard_normal(t.size) * np.exp(-t / 0.002))
    return peak * burst / np.abs(burst).max()


def _mix(parts: list[tuple[float, np.ndarray]], seconds: float, seed: int = 0, noise_db: float = -60.0) -> np.ndarray:
    """Returns ``seconds`` of white noise at ``noise_db`` with each ``(onset_sec, wave)`` added (peak 0.5)."""
    rng = np.random.default_rng(seed)
    out = 10 ** (noise_db / 20) * rng.standard_normal(int(seconds * SR))
    for onset, wave in parts:
        i = int(onset * SR)
        out[i : i + wave.size] += 0.5 * wave[: out.size - i] / np.abs(wave).max()
    return out.astype(np.float32)


def _onsets(notes: list[tuple[float, float]]) -> np.ndarray:
    return np.array([a for a, _ in notes])


# -- the basics
def test_onsets_within_30ms() -> None:
    found = detect_onsets(_recording(), SR)
    assert len(found) == len(ONSETS), found
    np.testing.assert_allclose(found, ONSETS, atol=0.03)


def test_notes_match_onsets_and_offsets() -> None:
    notes = detect_notes(_recording(), SR)
    assert len(notes) == len(ONSETS), notes  # noise before the first note is gated out
    np.testing.assert_allclose(_onsets(notes), ONSETS, atol=0.03)
    for i, (onset, offset) in enumerate(notes):
        assert offset > onset
        if i + 1 < len(notes) and i != FAST_DECAY:
            assert offset == pytest.approx(notes[i + 1][0])  # a ringing note ends at the next onset
    # the fast note decays 40 dB (4.6 time constants of 50 ms) long before the next onset
    fast_on, fast_off = notes[FAST_DECAY]
    assert 0.15 < fast_off - fast_on < 0.4
    assert fast_off < notes[FAST_DECAY + 1][0] - 0.2
    assert notes[-1][1] == pytest.approx(3.5, abs=0.01)


def test_silence_has_no_notes() -> None:
    assert detect_notes(np.zeros(SR, dtype=np.float32), SR) == []
    noise = np.random.default_rng(0).standard_normal(2 * SR).astype(np.float32) * 0.1
    assert detect_notes(noise, SR) == []  # a noise floor alone, however loud, has no attacks


def test_two_plucks_300ms_apart_are_two_notes() -> None:
    t = np.zeros(int(1.0 * SR))
    wave = _mix([(0.4, _note(t, f0=220.0)), (0.7, _note(t, f0=262.0))], 1.6)
    notes = detect_notes(wave, SR)
    assert len(notes) == 2, notes
    np.testing.assert_allclose(_onsets(notes), [0.4, 0.7], atol=0.03)
    assert notes[0][1] == pytest.approx(0.7, abs=0.03)  # the first rings until the second


def test_unknown_parameter_raises() -> None:
    with pytest.raises(TypeError, match="delta"):
        detect_onsets(_recording(), SR, delta=0.1)


def test_log_filterbank_rows_sum_to_one_and_centres_rise() -> None:
    fb = log_filterbank(44100, 2048, 24, 40.0, 16000.0)  # (B, 1025)
    np.testing.assert_allclose(fb.sum(axis=1), 1.0)
    assert 120 < fb.shape[0] < 160  # merged one-bin bands below ~500 Hz
    assert np.all(np.diff(fb.argmax(axis=1)) > 0)


# -- pitch changes without an attack stay one note
def _slide(kind: str, seconds: float = 1.6) -> np.ndarray:
    """Returns the pitch track (semitones per sample) of a 12-semitone slide, a 2-semitone bend or a vibrato."""
    t = np.arange(int(seconds * SR)) / SR
    if kind == "glissando":  # continuous over an octave in 0.8 s
        return 12 * np.clip((t - 0.2) / 0.8, 0, 1)
    if kind == "fretted":  # fret by fret: one semitone every 60 ms, each step in 10 ms
        s = np.clip((t - 0.2) / 0.06, 0, 12)
        return np.floor(s) + np.clip((s - np.floor(s) - 0.8) / 0.17, 0, 1)
    if kind == "bend":  # up 2 semitones and back
        up = np.clip((t - 0.15) / 0.15, 0, 1)
        down = np.clip((t - 0.8) / 0.2, 0, 1)
        return 2 * (up * up * (3 - 2 * up) - down * down * (3 - 2 * down))
    return 0.5 * np.sin(2 * np.pi * 6.0 * t) * np.clip((t - 0.1) / 0.2, 0, 1)  # vibrato, a semitone wide


@pytest.mark.parametrize("kind", ["glissando", "fretted", "bend", "vibrato"])
def test_slide_bend_and_vibrato_are_one_note(kind: str) -> None:
    wave = _mix([(0.3, _note(_slide(kind), f0=147.0))], 2.4, noise_db=-50.0)
    notes = detect_notes(wave, SR)
    assert len(notes) == 1, notes
    assert notes[0][0] == pytest.approx(0.3, abs=0.03)
    assert notes[0][1] > 1.2  # the note is not cut at a pitch change


@pytest.mark.parametrize("technique", ["slide", "bend", "vibrato"])
@pytest.mark.parametrize("seed", [0, 1])
def test_demo_synth_expressive_notes_are_one_note(technique: str, seed: int) -> None:
    from guitar_cls.data import synth

    rng = np.random.default_rng(seed)
    note = synth._make_note(technique, rng)
    note.duration = max(note.duration, 1.0)
    guitar = synth.GUITARS[seed]
    y = synth._render_note(note, guitar, next(iter(guitar.pickups.values())), rng)
    sr = synth.SAMPLE_RATE
    wave = 1e-3 * rng.standard_normal(int((note.duration + 1.0) * sr))
    i = int(0.3 * sr)
    wave[i : i + y.size] += 0.5 * y[: wave.size - i]
    notes = detect_notes(wave.astype(np.float32), sr)
    assert len(notes) == 1, (note, notes)
    assert notes[0][0] == pytest.approx(0.3, abs=0.03)


# -- harmonics: a loud click and a quiet ring are one note
def _harmonic(rng: np.random.Generator, seconds: float, f0: float, click: float = 2.0) -> np.ndarray:
    """Returns a natural harmonic: a click ``click`` times the ring's peak, then even partials swelling in 20 ms."""
    t = np.arange(int(seconds * SR)) / SR
    ring = _note(np.zeros(t.size), f0=f0, decay=0.3, partials=(2, 4, 6, 8))
    ring *= np.clip(t / 0.02, 0, 1) ** 2  # the ring builds up after the pick leaves the string
    ring /= np.abs(ring).max()
    ring[: int(0.03 * SR)] += _click(rng, click)[: t.size]
    return ring


def test_harmonic_with_loud_click_is_one_note() -> None:
    rng = np.random.default_rng(0)
    wave = _mix([(0.3, _harmonic(rng, 1.2, 165.0))], 2.0)
    notes = detect_notes(wave, SR)
    assert len(notes) == 1, notes
    assert notes[0][0] == pytest.approx(0.3, abs=0.03)
    assert notes[0][1] > 0.6


def test_fast_run_of_harmonics_is_one_note_each() -> None:
    rng = np.random.default_rng(1)
    onsets = 0.3 + 0.2 * np.arange(6)  # each rings 0.2 s until the next stops it
    pitches = (165.0, 196.0, 147.0, 220.0, 165.0, 247.0)
    parts = [(t, _harmonic(rng, 0.2, f0, click=rng.uniform(1.5, 3.0))) for t, f0 in zip(onsets, pitches)]
    notes = detect_notes(_mix(parts, 2.0), SR)
    assert len(notes) == len(onsets), notes
    np.testing.assert_allclose(_onsets(notes), onsets, atol=0.03)


# -- noise floors and level
@pytest.mark.parametrize("gain", [0.01, 1.0])
def test_noise_floor_and_level_do_not_change_the_notes(gain: float) -> None:
    rng = np.random.default_rng(2)
    t = np.arange(int(3.5 * SR)) / SR
    clean = _recording(seed=2)
    hum = sum(np.sin(2 * np.pi * 50 * h * t) / h for h in (1, 2, 3, 5))
    hiss = rng.standard_normal(t.size)
    noise = hum / np.std(hum) + hiss
    noisy = clean + np.std(clean) * 10 ** (-15 / 20) * noise / np.std(noise)  # 15 dB SNR
    notes = detect_notes((gain * noisy).astype(np.float32), SR)
    assert len(notes) == len(ONSETS), notes
    np.testing.assert_allclose(_onsets(notes), ONSETS, atol=0.03)


# -- the benchmark
def test_segmentation_benchmark_smoke_prints_its_json_line() -> None:
    cmd = [sys.executable, "jobs/benchmark.py", "segmentation", "--smoke-test"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    line = json.loads(done.stdout.strip().splitlines()[-1])
    assert line["benchmark"] == "segmentation" and line["n_recordings"] == 2 and line["n_notes"] > 0
    for key in ("f_measure", "precision", "recall"):
        assert 0.0 <= line[key] <= 1.0
    assert line["f_measure"] > 0.5
