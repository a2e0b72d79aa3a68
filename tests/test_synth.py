"""Synthetic demo data: layout and format, classes in every recording type, determinism, and the physics of
harmonics, dead notes and palm mutes (checked on the rendered signals)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from guitar_cls.benchmarks.duration import duration_baseline
from guitar_cls.data import synth
from guitar_cls.data.schema import LABELS, read_metadata, validate_metadata


def test_tiny_demo_layout_and_format(tiny_demo):
    root = tiny_demo.parent
    for source in synth.SOURCES:  # 12 recordings split evenly between the synthesized and the sample-based source
        wavs = sorted((root / source / "audio").glob("*.wav"))
        xmls = sorted((root / source / "annotation").glob("*.xml"))
        assert len(wavs) == len(xmls) == 6
        assert [w.stem for w in wavs] == [x.stem for x in xmls]
        info = sf.info(wavs[0])
        assert (info.samplerate, info.channels, info.subtype) == (44100, 1, "PCM_16")
    df = read_metadata(tiny_demo)
    assert validate_metadata(df, root) == []
    assert df["source_audio"].nunique() == 12
    assert df.groupby("source_audio").size().min() >= 5  # several events per recording
    assert set(df["subset_id"]) == set(synth.SOURCES)  # evaluation can break results down by source
    for source in synth.SOURCES:
        assert set(df.loc[df["subset_id"] == source, "label_category"]) == set(LABELS)
    assert {p.split("_")[1] for p in df["source_audio"].str.rsplit("/", n=1).str[-1]} >= {"Lick", "NH", "DN"}


def test_events_are_separated_by_gaps_and_inside_the_audio(tiny_demo):
    df = read_metadata(tiny_demo)
    root = tiny_demo.parent
    for rel, rows in df.groupby("source_audio"):
        onsets = rows["onset_sec"].to_numpy()
        assert np.all(np.diff(onsets) > 0.02)
        assert rows["offset_sec"].max() < sf.info(root / rel).duration


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_deterministic_per_seed(tmp_path):
    a = synth.make_demo_dataset(tmp_path / "a", n_recordings=3, seed=5)
    b = synth.make_demo_dataset(tmp_path / "b", n_recordings=3, seed=5)
    c = synth.make_demo_dataset(tmp_path / "c", n_recordings=3, seed=6)
    assert _digest(a.parent) == _digest(b.parent)
    assert _digest(a.parent) != _digest(c.parent)


def _note(tech: str, fret: int, duration: float = 1.0, string: int = 5) -> synth._Note:
    pitch = synth.TUNING[string] + (round(12 * np.log2(synth.HARMONIC_NODES[fret])) if tech == "harmonic" else fret)
    return synth._Note(tech, string, fret, float(pitch), 0.0, duration, "PK", 1.0)


def _power_spectrum(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns (frequencies, power) of the Hann-windowed signal."""
    return np.fft.rfftfreq(y.size, 1 / synth.SAMPLE_RATE), np.abs(np.fft.rfft(y * np.hanning(y.size))) ** 2


def _band_energy(y: np.ndarray, hz: float, width: float = 0.03) -> float:
    f, spec = _power_spectrum(y)
    return float(spec[(f > hz * (1 - width)) & (f < hz * (1 + width))].sum())


@pytest.mark.parametrize("fret", [12, 7, 5])
def test_natural_harmonic_rings_on_node_partials_after_the_open_string_dies(fret):
    node = synth.HARMONIC_NODES[fret]
    open_hz = synth._midi_hz(synth.TUNING[5])
    g = synth.GUITARS[3]  # steel acoustic: no pickup comb
    sr = synth.SAMPLE_RATE
    early, late = [], []
    for seed in range(6):
        y = synth._render_note(_note("harmonic", fret, 1.5), g, (), np.random.default_rng(seed))
        head, body = y[int(0.005 * sr) : int(0.06 * sr)], y[int(0.8 * sr) : int(1.4 * sr)]
        early.append(_band_energy(head, open_hz) / _band_energy(head, node * open_hz))
        late.append(_band_energy(body, open_hz) / _band_energy(body, node * open_hz))
    assert max(late) < 0.01  # once the touching finger has damped them, only the node's partials ring
    assert np.median(early) > 0.01  # but the pluck excites the whole string: its root is heard at first
    plucked = synth._render_note(_note("pluck", 0), g, (), np.random.default_rng(0))
    pb = plucked[int(0.1 * sr) : int(0.9 * sr)]
    assert _band_energy(pb, open_hz) > 0.01 * _band_energy(pb, node * open_hz)  # a plucked note keeps its root


def _overtone_ratio_db(y: np.ndarray, hz: float) -> float:
    """Energy above 2.5 x ``hz`` over the energy at ``hz`` (dB), 50-600 ms after the onset."""
    f, spec = _power_spectrum(y[int(0.05 * synth.SAMPLE_RATE) : int(0.6 * synth.SAMPLE_RATE)])
    return float(10 * np.log10(spec[f > 2.5 * hz].sum() / spec[np.abs(f - hz) <= 0.04 * hz].sum()))


def test_harmonics_are_neither_purer_nor_brighter_than_plucked_notes_of_their_pitch():
    # recorded harmonics are as rich in overtones as fretted notes of the same pitch; a synthesizer that makes them
    # purer teaches a cue that recorded audio does not have
    rng = np.random.default_rng(3)
    diffs = []
    for i in range(60):
        g = synth.GUITARS[i % len(synth.GUITARS)]
        pickup = list(g.pickups.values())[i % len(g.pickups)]
        h = synth._make_note("harmonic", rng)
        strings = [s for s in synth.TUNING if 0 <= h.pitch - synth.TUNING[s] <= 14]
        if not strings:
            continue
        s = int(rng.choice(strings))
        p = synth._make_note("pluck", rng, string=s, fret=int(h.pitch - synth.TUNING[s]))
        hz = synth._midi_hz(h.pitch)
        ratios = [
            _overtone_ratio_db(synth._body(synth._render_note(replace(n, duration=0.7), g, pickup, rng), g, rng), hz)
            for n in (h, p)
        ]
        diffs.append(ratios[0] - ratios[1])
    assert len(diffs) > 40
    assert abs(np.median(diffs)) < 3.0  # dB
    assert np.mean(np.array(diffs) > 0) > 0.3  # and plenty of harmonics brighter than the note


def test_partials_are_stretched_by_inharmonicity():
    f0 = np.full(synth.SAMPLE_RATE, 100.0)
    y = synth._partials(f0, np.array([20.0]), np.array([1.0]), np.array([0.1]), 1e-3, np.random.default_rng(0))
    spec = np.abs(np.fft.rfft(y))
    peak = np.fft.rfftfreq(y.size, 1 / synth.SAMPLE_RATE)[spec.argmax()]
    assert peak == pytest.approx(20 * 100 * np.sqrt(1 + 1e-3 * 400), abs=2)  # 2039 Hz, not 2000


def test_dead_note_is_percussive_and_palm_mute_is_pitched_and_dull():
    g, rng = synth.GUITARS[0], np.random.default_rng(1)
    pickup = g.pickups["neck"]
    sr = synth.SAMPLE_RATE
    dead = synth._render_note(_note("dead", 5, 0.2), g, pickup, rng)
    assert np.sum(dead[: int(0.05 * sr)] ** 2) > 0.9 * np.sum(dead**2)  # energy in the first 50 ms
    mute = synth._render_note(_note("palm_mute", 5, 0.3), g, pickup, rng)
    ring = synth._render_note(_note("pluck", 5, 0.3), g, pickup, rng)
    f0 = synth._midi_hz(synth.TUNING[5] + 5)

    def centroid(y: np.ndarray) -> float:
        y = y[: int(0.2 * sr)]
        power = np.abs(np.fft.rfft(y)) ** 2
        return float((np.fft.rfftfreq(y.size, 1 / sr) * power).sum() / power.sum())

    assert centroid(mute) < centroid(ring)
    seg = mute[int(0.02 * sr) : int(0.15 * sr)]
    assert _band_energy(seg, f0) > 10 * _band_energy(seg, 1.5 * f0, width=0.01)  # still a pitched note


def test_duration_alone_does_not_separate_the_classes(tiny_demo):
    result = duration_baseline(read_metadata(tiny_demo), folds=3)
    assert result["balanced_accuracy"] <= 0.75  # the full demo set measures <= 0.70 (README)
    assert result["n_recordings"] == 12 and result["folds"] == 3


def test_fast_passages_cut_harmonics_short():
    rng = np.random.default_rng(0)
    notes = [n for _ in range(5) for n in synth._plan_recording("FH", rng)]
    assert {n.technique for n in notes} == {"harmonic"}
    durations = np.array([n.duration for n in notes])
    assert durations.max() <= 0.4 and durations.min() >= 0.1
    gaps = np.array([b.onset - (a.onset + a.duration) for a, b in zip(notes, notes[1:]) if b.onset > a.onset])
    assert np.all(gaps < 0.05)  # the next note follows at once


def test_only_the_generators_own_folder_is_overwritten(tmp_path):
    user = tmp_path / "IDMT-SMT-GUITAR_V2"
    (user / "dataset2" / "audio").mkdir(parents=True)
    (user / "dataset2" / "audio" / "take.wav").write_bytes(b"the user's recording")
    with pytest.raises(FileExistsError, match="not written by the demo generator"):
        synth.make_demo_dataset(user, n_recordings=2, seed=0)
    assert (user / "dataset2" / "audio" / "take.wav").read_bytes() == b"the user's recording"
    assert sorted(p.name for p in user.iterdir()) == ["dataset2"]  # nothing written beside it either

    demo = tmp_path / "demo"
    synth.make_demo_dataset(demo, n_recordings=2, seed=0)
    (demo / "notes.txt").write_text("mine")
    meta = synth.make_demo_dataset(demo, n_recordings=2, seed=1)  # a second run replaces its own files only
    assert (demo / "notes.txt").read_text() == "mine"
    assert len(read_metadata(meta)["source_audio"].unique()) == 2


def test_make_demo_data_job(tmp_path, capsys):
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("make_demo", Path(__file__).parents[1] / "jobs" / "make_demo_data.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    assert job.main(["--out", str(tmp_path), "--recordings", "3", "--seed", "2"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["n_events"] == len(read_metadata(tmp_path / "metadata.csv")) and sum(line["per_class"].values()) > 0
