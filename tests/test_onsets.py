"""Onset/offset segmentation on a synthetic recording with known note times."""

from __future__ import annotations

import numpy as np
import pytest

from guitar_cls.onsets import detect_notes, detect_onsets

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


def test_onsets_within_30ms() -> None:
    found = detect_onsets(_recording(), SR)
    assert len(found) >= len(ONSETS)
    for t in ONSETS:
        assert np.min(np.abs(found - t)) < 0.03, (t, found)


def test_notes_match_onsets_and_offsets() -> None:
    notes = detect_notes(_recording(), SR)
    assert len(notes) == len(ONSETS), notes  # noise before the first note is gated out
    onsets = np.array([n[0] for n in notes])
    np.testing.assert_allclose(onsets, ONSETS, atol=0.03)
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
