"""Note segmentation of a whole recording: attacks found by SuperFlux over per-band noise floors, offsets by decay.

An onset is an attack, not a pitch change. The onset function is the spectral flux of a log-frequency (24 bands per
octave) dB spectrogram whose reference frame is max-filtered across frequency (SuperFlux, Böck & Widmer 2013): a
partial that glides by up to a semitone within the lag (slide, bend, vibrato) finds its old level in a neighbouring
band and adds nothing, while an attack raises many bands at once. Each band counts only the part of its rise above
``dead_db``, so slow swells (beating, a vibrato sweeping across a body resonance) add nothing either. Each band is
clamped to its own noise floor (a low percentile over the recording plus a margin), so hiss, hum and room noise add
no flux however loud they are; all thresholds are in dB and hold for quiet and loud recordings alike.

A peak of the onset function is an onset when it is the largest within ``min_gap_sec`` either side (a pick click and
the harmonic ringing up right after it are one peak), exceeds the local mean of the onset function by ``delta_db``,
and the mean band level rises by ``rise_db`` across it (the energy-rise check: a glide moves energy between bands, an
attack adds it). A note ends at the next onset or where its RMS has decayed ``decay_db`` below its peak or into the
recording's noise floor, whichever comes first.

Known limits: onsets come about 7 ms early (the attack is seen once it enters the 46-ms window); a note that swells
in over 100 ms without a click is found late or not at all; the fret squeaks of a slide on a thin, high string can
read as attacks; a re-attack of a ringing sample (a loop's dip and return) reads as a new note.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OnsetParams:
    """Settings of the onset detector (defaults tuned with ``jobs/benchmark.py segmentation``).

    Attributes:
        window_sec: STFT window (rounded to a power of two in samples: 2048 at 44.1 kHz).
        hop_sec: frame step of the onset function.
        fmin_hz, fmax_hz, bands_per_octave: the log-frequency filterbank.
        lag_sec: the reference frame of the flux lies this far back.
        max_bands: width in bands of the maximum filter across frequency on the reference frame (5 = a semitone
            either way).
        dead_db: the part of a band's rise counted as flux starts above this many dB.
        floor_percentile: a band's noise floor is this percentile of its level over the recording.
        floor_margin_db: band levels are clamped to their floor plus this margin (noise fluctuates below it).
        delta_db: a peak must exceed the mean flux of the surrounding ``avg_sec`` either side by this much.
        min_gap_sec: a peak must be the largest within this distance either side.
        rise_db: the mean band level after the peak (max over ``rise_sec``) must exceed the level before it (min over
            ``rise_sec``) by this much.
    """

    window_sec: float = 0.046
    hop_sec: float = 0.005
    fmin_hz: float = 40.0
    fmax_hz: float = 16000.0
    bands_per_octave: int = 24
    lag_sec: float = 0.01
    max_bands: int = 5
    dead_db: float = 5.0
    floor_percentile: float = 10.0
    floor_margin_db: float = 6.0
    delta_db: float = 0.2
    avg_sec: float = 0.1
    min_gap_sec: float = 0.06
    rise_db: float = 1.0
    rise_sec: float = 0.04


@dataclass(frozen=True)
class OnsetFunction:
    """The onset function of a recording and the band level its peaks are checked against.

    Attributes:
        flux: onset strength per frame ``(T,)``: mean over bands of the rectified rise beyond ``dead_db``, in dB.
        level: mean band level per frame ``(T,)`` in dB above the per-band noise floors (0 in noise or silence).
        hop_sec: seconds between frames; frame ``t`` is centred at ``t * hop_sec``.
    """

    flux: np.ndarray
    level: np.ndarray
    hop_sec: float


def log_filterbank(sr: int, n_fft: int, bands_per_octave: int, fmin: float, fmax: float) -> np.ndarray:
    """Returns triangular filters ``(n_bands, 1 + n_fft // 2)`` with log-spaced centres, each summing to 1.

    Centres that round to the same FFT bin are merged, so the lowest bands are one bin wide and ``n_bands`` depends on
    the frequency resolution (137 at 44.1 kHz with 2048-sample frames).
    """
    fmax = min(fmax, 0.95 * sr / 2)
    n = int(np.log2(fmax / fmin) * bands_per_octave) + 1
    bins = np.unique(np.round(fmin * 2.0 ** (np.arange(n) / bands_per_octave) * n_fft / sr).astype(int))
    bins = bins[bins > 0]
    fb = np.zeros((max(bins.size - 2, 0), 1 + n_fft // 2))
    for i, (lo, mid, hi) in enumerate(zip(bins[:-2], bins[1:-1], bins[2:])):
        fb[i, lo : mid + 1] = np.linspace(0.0, 1.0, mid - lo + 1)
        fb[i, mid : hi + 1] = np.linspace(1.0, 0.0, hi - mid + 1)
    return fb / fb.sum(axis=1, keepdims=True)


def onset_function(wave: np.ndarray, sr: int, params: OnsetParams = OnsetParams()) -> OnsetFunction:
    """Returns the SuperFlux onset function of ``wave (N,)`` over per-band noise floors."""
    import librosa

    p = params
    n_fft = int(2 ** np.round(np.log2(p.window_sec * sr)))
    hop = max(1, int(round(p.hop_sec * sr)))
    spec = np.abs(librosa.stft(wave, n_fft=n_fft, hop_length=hop, center=True, pad_mode="reflect")) ** 2  # (F, T)
    bands = log_filterbank(sr, n_fft, p.bands_per_octave, p.fmin_hz, p.fmax_hz) @ spec  # (B, T) band power
    db = 10.0 * np.log10(bands + 1e-12)
    floor = np.percentile(db, p.floor_percentile, axis=1, keepdims=True) + p.floor_margin_db  # (B, 1)
    db = np.maximum(db, floor)
    lag = max(1, int(round(p.lag_sec * sr / hop)))
    ref = ndimage.maximum_filter1d(db, p.max_bands, axis=0)  # (B, T) a glide within the filter finds its old level
    rise = db[:, lag:] - ref[:, :-lag] - p.dead_db  # (B, T - lag)
    flux = np.concatenate([np.zeros(lag), np.maximum(rise, 0.0).mean(axis=0)])
    return OnsetFunction(flux=flux, level=(db - floor).mean(axis=0), hop_sec=hop / sr)


def pick_onsets(odf: OnsetFunction, params: OnsetParams = OnsetParams()) -> np.ndarray:
    """Returns the onset frames ``(K,)`` of an onset function, in time order (rules in the module docstring)."""
    p = params
    flux, level = odf.flux, odf.level
    gap = max(1, int(round(p.min_gap_sec / odf.hop_sec)))
    avg = max(1, int(round(p.avg_sec / odf.hop_sec)))
    span = max(1, int(round(p.rise_sec / odf.hop_sec)))
    is_peak = (flux > 0) & (flux >= ndimage.maximum_filter1d(flux, 2 * gap + 1, mode="constant"))
    local_mean = ndimage.uniform_filter1d(flux, 2 * avg + 1, mode="constant")
    after = ndimage.maximum_filter1d(level, span + 1, origin=-(span // 2), mode="nearest")  # max of level[t : t+span]
    before = ndimage.minimum_filter1d(level, span + 1, origin=span // 2, mode="nearest")  # min of level[t-span : t]
    ok = np.flatnonzero(is_peak & (flux >= local_mean + p.delta_db) & (after - before >= p.rise_db))
    frames: list[int] = []
    for t in ok:  # equal neighbouring maxima (a plateau) are one peak
        if not frames or t - frames[-1] > gap:
            frames.append(int(t))
    return np.asarray(frames, dtype=np.int64)


def detect_onsets(wave: np.ndarray, sr: int, **params: float) -> np.ndarray:
    """Returns onset times in seconds ``(K,)``, sorted.

    Args:
        wave: mono recording ``(N,)``.
        params: ``OnsetParams`` fields to change (an unknown name raises TypeError).
    """
    p = OnsetParams(**params)
    wave = np.asarray(wave, dtype=np.float32)
    if wave.size < 2 * p.window_sec * sr or not np.any(wave):
        return np.zeros(0)
    odf = onset_function(wave, sr, p)
    times = pick_onsets(odf, p) * odf.hop_sec
    return times[times < wave.size / sr - p.window_sec / 2]  # the last frames see the padding, not a note


def rms_envelope(wave: np.ndarray, hop_length: int, frame_length: int) -> np.ndarray:
    """Returns the frame RMS energy ``(T,)`` of ``wave (N,)`` (librosa framing, centred frames)."""
    import librosa

    return librosa.feature.rms(y=wave, frame_length=frame_length, hop_length=hop_length, center=True)[0]


def detect_notes(
    wave: np.ndarray,
    sr: int,
    *,
    decay_db: float = 40.0,
    gate_db: float = 40.0,
    floor_db: float = 3.0,
    min_note_sec: float = 0.03,
    **onset_params: float,
) -> list[tuple[float, float]]:
    """Returns ``[(onset_sec, offset_sec), ...]``: the notes of a recording, in time order.

    Args:
        wave: mono recording ``(N,)``.
        decay_db: a note ends where its RMS falls this far below the note's peak RMS.
        gate_db: notes whose peak RMS is this far below the recording's peak RMS are dropped (noise, not notes).
        floor_db: a note also ends where its RMS comes within this many dB of the recording's noise floor (the 5th
            percentile of the frame RMS), and notes that never rise further above it are dropped.
        min_note_sec: shorter notes are dropped.
        onset_params: ``OnsetParams`` fields for ``detect_onsets``.
    """
    wave = np.asarray(wave, dtype=np.float32)
    duration = wave.size / sr
    onsets = detect_onsets(wave, sr, **onset_params)
    if onsets.size == 0:
        return []
    hop = max(1, int(round(OnsetParams(**onset_params).hop_sec * sr)))
    energy = 20.0 * np.log10(rms_envelope(wave, hop, 4 * hop) + 1e-9)  # (T,) dB, frame t centred at t * hop
    floor = np.percentile(energy, 5.0) + floor_db
    gate = max(energy.max() - gate_db, floor)
    notes: list[tuple[float, float]] = []
    for i, onset in enumerate(onsets):
        end = float(onsets[i + 1]) if i + 1 < onsets.size else duration
        lo, hi = int(round(onset * sr / hop)), min(int(round(end * sr / hop)), energy.size)
        segment = energy[lo : max(lo + 1, hi - 2)]  # the last 2 frames' windows reach into the next attack
        if segment.size == 0 or segment.max() < gate:
            continue
        peak_at = int(np.argmax(segment))
        quiet = np.flatnonzero(segment[peak_at:] < max(segment[peak_at] - decay_db, floor))
        offset = min(end, (lo + peak_at + int(quiet[0])) * hop / sr) if quiet.size else end
        if offset - onset >= min_note_sec:
            notes.append((float(onset), float(offset)))
    log.debug("detected %d notes in %.2f s", len(notes), duration)
    return notes
