"""Per-recording domain randomization for the demo data: the signal chain between a guitar and a WAV file.

A model that hears one clean signal chain learns that chain. Real recordings differ in pickup or microphone
(tone curve), amplifier (band limit, saturation), room (reverb), and in noise (mains hum, hiss, room rumble) and
level. ``randomize_recording`` draws one such chain per recording, from one generator, and applies it to the dry
mix of both demo sources (synthesized and sample-based), so that neither source keeps a fingerprint of its own.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import signal


def biquad_peaking(f: float, q: float, gain_db: float, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns RBJ peaking-EQ coefficients ``(b, a)``."""
    a_lin = 10 ** (gain_db / 40)
    w = 2 * math.pi * f / sr
    alpha = math.sin(w) / (2 * q)
    b = np.array([1 + alpha * a_lin, -2 * math.cos(w), 1 - alpha * a_lin])
    a = np.array([1 + alpha / a_lin, -2 * math.cos(w), 1 - alpha / a_lin])
    return b / a[0], a / a[0]


def _biquad_shelf(f: float, gain_db: float, sr: int, high: bool) -> tuple[np.ndarray, np.ndarray]:
    """Returns RBJ low/high-shelf coefficients ``(b, a)`` (slope 1)."""
    a_lin = 10 ** (gain_db / 40)
    w = 2 * math.pi * f / sr
    cw, alpha = math.cos(w), math.sin(w) / 2 * math.sqrt(2)
    s = 1 if high else -1
    sq = 2 * math.sqrt(a_lin) * alpha
    b = a_lin * np.array([(a_lin + 1) + s * (a_lin - 1) * cw + sq, -2 * s * ((a_lin - 1) + s * (a_lin + 1) * cw),
                          (a_lin + 1) + s * (a_lin - 1) * cw - sq])  # fmt: skip
    a = np.array([(a_lin + 1) - s * (a_lin - 1) * cw + sq, 2 * s * ((a_lin - 1) - s * (a_lin + 1) * cw),
                  (a_lin + 1) - s * (a_lin - 1) * cw - sq])  # fmt: skip
    return b / a[0], a / a[0]


def random_eq(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Returns ``x (N,)`` through a random tone curve: 2-4 peaking bands (+-9 dB) and a low and a high shelf."""
    for _ in range(int(rng.integers(2, 5))):
        f = math.exp(rng.uniform(math.log(120.0), math.log(min(7000.0, 0.4 * sr))))
        b, a = biquad_peaking(f, rng.uniform(0.5, 3.0), rng.uniform(-9.0, 9.0), sr)
        x = signal.lfilter(b, a, x)
    b, a = _biquad_shelf(rng.uniform(100.0, 300.0), rng.uniform(-8.0, 6.0), sr, high=False)
    x = signal.lfilter(b, a, x)
    b, a = _biquad_shelf(rng.uniform(2500.0, 6000.0), rng.uniform(-12.0, 6.0), sr, high=True)
    return signal.lfilter(b, a, x)


def band_limit(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Returns ``x`` band-limited like a small amp, a phone or a cheap microphone (random high- and low-pass)."""
    lo = rng.uniform(50.0, 250.0)
    hi = min(rng.uniform(2500.0, 9000.0), 0.45 * sr)
    sos = signal.butter(int(rng.integers(1, 4)), [lo, hi], btype="bandpass", fs=sr, output="sos")
    return signal.sosfilt(sos, x)


def saturate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Returns ``x`` through an amp-like soft clipper (random drive and asymmetry), at the input's peak level."""
    peak = np.abs(x).max() + 1e-12
    drive = rng.uniform(1.5, 8.0)
    bias = rng.uniform(0.0, 0.3)
    y = np.tanh(drive * x / peak + bias) - math.tanh(bias)
    return y * peak / (np.abs(y).max() + 1e-12)


def room_impulse_response(sr: int, rng: np.random.Generator) -> np.ndarray:
    """Returns a random room impulse response ``(M,)``: early reflections over an exponentially decaying,
    high-frequency-damped noise tail (RT60 0.1-1.2 s), unit energy, direct sound at index 0."""
    rt60 = math.exp(rng.uniform(math.log(0.1), math.log(1.2)))
    n = int(rt60 * sr)
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    damp = rng.uniform(0.3, 0.85)
    tail = signal.lfilter([1 - damp], [1, -damp], tail)  # walls absorb the highs
    tail[: int(rng.uniform(0.005, 0.03) * sr)] = 0.0  # the tail starts after the first reflections
    ir = tail / (np.sqrt(np.sum(tail**2)) + 1e-12)
    for _ in range(int(rng.integers(2, 7))):
        ir[int(rng.uniform(0.002, 0.04) * sr)] += rng.uniform(0.1, 0.6)
    ir[0] = 1.0
    return ir


def reverb(x: np.ndarray, sr: int, rng: np.random.Generator, wet: float) -> np.ndarray:
    """Returns ``x`` plus ``wet`` times ``x`` convolved with a random room (same length as ``x``)."""
    ir = room_impulse_response(sr, rng)
    ir[0] = 0.0
    return x + wet * signal.fftconvolve(x, ir)[: x.size]


def background_noise(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Returns unit-RMS background noise ``(n,)``: a random mix of mains hum (50/60 Hz and harmonics), white hiss
    and brownish room rumble."""
    t = np.arange(n) / sr
    mains = rng.choice([50.0, 60.0])
    hum = sum(rng.uniform(0.2, 1.0) / h * np.sin(2 * np.pi * mains * h * t + rng.uniform(0, 2 * np.pi))
              for h in (1, 2, 3, 4, 5, 7))  # fmt: skip
    hiss = rng.standard_normal(n)
    rumble = signal.lfilter([1.0], [1.0, -0.995], rng.standard_normal(n))
    parts = [hum, hiss, rumble]
    weights = rng.dirichlet(np.ones(3))
    out = sum(w * p / (np.std(p) + 1e-12) for w, p in zip(weights, parts))
    return out / (np.std(out) + 1e-12)


def active_rms(x: np.ndarray, sr: int) -> float:
    """Returns the RMS of the loudest 30 % of 50-ms frames of ``x``: the level of the playing, not of the pauses."""
    hop = max(1, int(0.05 * sr))
    n = x.size // hop
    if n == 0:
        return float(np.sqrt(np.mean(x**2))) if x.size else 0.0
    frames = np.sqrt(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1))
    top = np.sort(frames)[-max(1, int(0.3 * n)) :]
    return float(np.sqrt(np.mean(top**2)))


def randomize_recording(x: np.ndarray, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, float]]:
    """Returns ``x (N,)`` through one random signal chain, and the chain's settings (for the annotation).

    Chain: tone curve (p 0.9), band limit (p 0.4), saturation (p 0.3), room reverb (p 0.7, wet 0.05-0.5),
    background noise at 10-40 dB SNR against the playing's level, and a peak level between -26 and -1 dBFS
    (level +-12 dB around the middle; with the WAV's own level this spans +-20 dB of loudness).
    """
    chain: dict[str, float] = {}
    if rng.random() < 0.9:
        x = random_eq(x, sr, rng)
        chain["eq"] = 1.0
    if rng.random() < 0.4:
        x = band_limit(x, sr, rng)
        chain["band_limit"] = 1.0
    if rng.random() < 0.3:
        x = saturate(x, rng)
        chain["saturation"] = 1.0
    if rng.random() < 0.7:
        chain["reverb_wet"] = round(float(wet := rng.uniform(0.05, 0.5)), 3)
        x = reverb(x, sr, rng, wet)
    snr_db = float(rng.uniform(10.0, 40.0))
    chain["snr_db"] = round(snr_db, 1)
    level = active_rms(x, sr)
    x = x + level * 10 ** (-snr_db / 20) * background_noise(x.size, sr, rng)
    peak_db = float(rng.uniform(-26.0, -1.0))
    chain["peak_dbfs"] = round(peak_db, 1)
    return x * 10 ** (peak_db / 20) / (np.abs(x).max() + 1e-12), chain
