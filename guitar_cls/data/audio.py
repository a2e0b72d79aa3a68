"""Note segments: read only an event's frames, downmix, resample, normalise and cut into model windows.

Training (through the cache in ``data/pipeline.py``) and prediction on raw audio share ``prepare_waveform``, so
both see the same preprocessing. Bad audio raises ``AudioError`` with a short reason; the pipeline turns it into a
quarantine row.

Resampling costs a bounded amount for any input rate: torchaudio's windowed-sinc kernel is ``(new, orig + 2 * width)``
for the reduced pair ``new/orig = target/sr``, so a rate sharing no factor with the target (22051 Hz -> 22050 Hz:
a 22050 x 22051 kernel, several GB) is resampled with the closest ratio whose terms are at most
``MAX_RESAMPLE_FACTOR`` (``resample_factors``; pitch off by under one cent). Rates outside
``[MIN_SAMPLE_RATE, MAX_SAMPLE_RATE]`` are refused.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from guitar_cls.config import DataConfig

# An event may end this much past the end of its file (annotation rounding) before it counts as bad.
OFFSET_TOLERANCE_SEC = 0.05
_SILENCE_PEAK = 1e-6
_RMS_TARGET = 0.1  # -20 dBFS
MIN_SAMPLE_RATE = 4_000  # Hz; audio at other rates is refused (a header's rate may be anything)
MAX_SAMPLE_RATE = 192_000
# Largest term of the reduced resampling ratio used as it is. Common rates stay exact (44100 -> 22050 Hz is 1:2,
# 48000 -> 22050 is 147:320, 16000 -> 22050 is 441:320, 96000 -> 22050 is 147:640); the kernel then holds at most
# ~1000 x 1000 taps and each input sample costs at most ~1000 multiply-adds.
MAX_RESAMPLE_FACTOR = 1000


class AudioError(ValueError):
    """Audio that cannot be used; ``reason`` is short and stable (it goes to quarantine.csv), ``rows`` the
    metadata rows concerned (when known)."""

    def __init__(self, reason: str, rows: Sequence[int] = ()) -> None:
        self.reason = reason
        self.rows = list(rows)
        super().__init__(f"{reason} (rows {self.rows})" if self.rows else reason)


def _read_open(f: sf.SoundFile, onset_sec: float, offset_sec: float, max_sec: float | None = None) -> np.ndarray:
    """Returns the float32 mono frames ``[onset, offset)`` (at most ``max_sec`` of them) of an open file."""
    sr, n_frames = f.samplerate, f.frames
    if f.channels > 2:
        raise AudioError(f"channel count {f.channels} (expected 1 or 2)")
    if not (math.isfinite(onset_sec) and math.isfinite(offset_sec)) or offset_sec <= onset_sec:
        raise AudioError(f"bad event times onset={onset_sec} offset={offset_sec}")
    duration = n_frames / sr
    start = max(0, int(round(onset_sec * sr)))
    if start >= n_frames:
        raise AudioError(f"onset {onset_sec:.3f}s past the end of the file ({duration:.3f}s)")
    if offset_sec > duration + OFFSET_TOLERANCE_SEC:
        raise AudioError(f"offset {offset_sec:.3f}s past the end of the file ({duration:.3f}s)")
    stop = min(n_frames, int(round(offset_sec * sr)))
    if max_sec is not None:
        stop = min(stop, start + int(math.ceil(max_sec * sr)))
    f.seek(start)
    data = f.read(max(stop - start, 1), dtype="float32", always_2d=True)  # (n, channels)
    return data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]


def read_segment(
    path: str | Path, onset_sec: float, offset_sec: float, max_sec: float | None = None
) -> tuple[np.ndarray, int]:
    """Returns (float32 mono samples of ``[onset_sec, offset_sec)``, file sample rate), reading only those frames
    (and no more than ``max_sec`` seconds of them).

    Raises AudioError for a missing/unreadable file, more than two channels or times outside the file.
    """
    with open_audio(path) as f:
        return _read_open(f, onset_sec, offset_sec, max_sec), f.samplerate


def open_audio(path: str | Path) -> sf.SoundFile:
    """Returns an open SoundFile; raises AudioError('missing file'/'unreadable file: ...')."""
    path = Path(path)
    if not path.is_file():
        raise AudioError("missing file")
    try:
        return sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(f"unreadable file: {e}") from None


def read_segments(
    path: str | Path, spans: Sequence[tuple[float, float]], max_sec: float | None = None
) -> Iterator[tuple[np.ndarray, int] | AudioError]:
    """Yields, for each (onset, offset) span, (mono samples, sr) or the AudioError of that span; opens the file once
    and reads only each span's frames (at most ``max_sec`` seconds).

    A file that cannot be opened yields its AudioError for every span.
    """
    try:
        f = open_audio(path)
    except AudioError as e:
        for _ in spans:
            yield e
        return
    with f:
        for onset, offset in spans:
            try:
                yield _read_open(f, onset, offset, max_sec), f.samplerate
            except AudioError as e:
                yield e
            except (sf.LibsndfileError, RuntimeError, OSError) as e:
                yield AudioError(f"unreadable frames: {e}")


def read_span(onset_sec: float, offset_sec: float, data_cfg: DataConfig) -> tuple[float, float, float | None]:
    """Returns (onset, offset, max seconds to read): the onset shifted by ``onset_offset_sec`` (not below 0); when
    long notes are truncated nothing past ``max_duration`` (plus a few ms of slack) needs reading."""
    onset = max(0.0, onset_sec + data_cfg.onset_offset_sec)
    max_sec = data_cfg.max_duration + 0.01 if data_cfg.long_notes == "truncate" else None
    return onset, offset_sec, max_sec


def _to_mono(wave: np.ndarray) -> np.ndarray:
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim == 2:
        if wave.shape[1] > 2:
            raise AudioError(f"channel count {wave.shape[1]} (expected 1 or 2)")
        wave = wave.mean(axis=1, dtype=np.float32)
    elif wave.ndim != 1:
        raise AudioError(f"waveform of shape {wave.shape} (expected (n,) or (n, channels))")
    return wave


def normalize_wave(wave: np.ndarray, mode: str) -> np.ndarray:
    """Returns ``wave`` scaled to peak 1 (``peak``), RMS 0.1 (``rms``) or unchanged (``none``)."""
    if mode == "peak":
        return wave / np.abs(wave).max()
    if mode == "rms":
        return wave * (_RMS_TARGET / math.sqrt(float(np.mean(np.square(wave, dtype=np.float64)))))
    if mode == "none":
        return wave
    raise ValueError(f"unsupported normalize: {mode!r}")


def check_sample_rate(sr: int) -> None:
    """Raises AudioError unless ``sr`` is within ``[MIN_SAMPLE_RATE, MAX_SAMPLE_RATE]`` Hz."""
    if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise AudioError(f"sample rate {sr} Hz is outside [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz")


def resample_factors(sr: int, target: int) -> tuple[int, int]:
    """Returns ``(orig, new)``: the reduced ratio ``new/orig = target/sr`` when both terms are at most
    ``MAX_RESAMPLE_FACTOR``, else the closest ratio with both terms that small (relative error below 6e-4,
    under one cent, for any rates in the allowed range)."""
    ratio = Fraction(target, sr)
    if ratio.numerator > MAX_RESAMPLE_FACTOR or ratio.denominator > MAX_RESAMPLE_FACTOR:
        # limit_denominator bounds the denominator; approximating the inverse when upsampling bounds both terms
        if ratio <= 1:
            ratio = ratio.limit_denominator(MAX_RESAMPLE_FACTOR)
        else:
            ratio = 1 / (1 / ratio).limit_denominator(MAX_RESAMPLE_FACTOR)
    return ratio.denominator, ratio.numerator


def resample(wave: np.ndarray, sr: int, target: int) -> np.ndarray:
    """Returns the float32 ``(n,)`` wave resampled from ``sr`` to ``target`` Hz (torchaudio's windowed sinc on the
    bounded ratio of ``resample_factors``; raises AudioError for a rate outside the allowed range)."""
    check_sample_rate(sr)
    orig, new = resample_factors(sr, target)
    if orig == new:
        return wave
    import torchaudio.functional as AF

    return AF.resample(torch.from_numpy(np.ascontiguousarray(wave)), orig, new).numpy()


def prepare_waveform(wave: np.ndarray, sr: int, data_cfg: DataConfig) -> tuple[list[np.ndarray], list[int]]:
    """Returns (windows, true lengths): the note resampled to ``data_cfg.sample_rate``, normalised and windowed.

    ``wave`` is ``(n,)`` or ``(n, channels)`` (downmixed). A note shorter than ``min_duration`` becomes one window
    zero-padded at the end to ``min_duration``; one longer than ``max_duration`` is cut to its first
    ``max_duration`` (``long_notes: truncate``) or into consecutive ``max_duration`` windows
    (``long_notes: split``; a tail shorter than ``min_duration`` is dropped). Each window is float32 of
    ``max(length, min_samples)`` samples; ``length`` is the number of real samples in it.

    Raises AudioError for empty, silent or non-finite audio and for a sample rate outside the allowed range.
    """
    check_sample_rate(sr)
    wave = _to_mono(wave)
    if wave.size == 0:
        raise AudioError("empty segment")
    if not np.isfinite(wave).all():
        raise AudioError("non-finite samples (NaN/inf)")
    if np.abs(wave).max() < _SILENCE_PEAK:
        raise AudioError("silent segment")
    target = data_cfg.sample_rate
    wave = resample(wave, sr, target)
    wave = normalize_wave(wave, data_cfg.normalize).astype(np.float32, copy=False)
    min_n = int(round(data_cfg.min_duration * target))
    max_n = int(round(data_cfg.max_duration * target))
    if wave.size <= max_n:
        pieces = [wave]
    elif data_cfg.long_notes == "truncate":
        pieces = [wave[:max_n]]
    else:
        pieces = [wave[i : i + max_n] for i in range(0, wave.size, max_n)]
        pieces = pieces[:1] + [p for p in pieces[1:] if p.size >= min_n]
    windows, lengths = [], []
    for piece in pieces:
        n = piece.size
        if n < min_n:
            piece = np.concatenate([piece, np.zeros(min_n - n, dtype=np.float32)])
        windows.append(np.ascontiguousarray(piece, dtype=np.float32))
        lengths.append(n)
    return windows, lengths


def load_snippet(
    path: str | Path, onset_sec: float, offset_sec: float, data_cfg: DataConfig
) -> tuple[list[np.ndarray], list[int]]:
    """Returns (windows, true lengths) of one annotated note, read from its file (see ``prepare_waveform``)."""
    wave, sr = read_segment(path, *read_span(onset_sec, offset_sec, data_cfg))
    return prepare_waveform(wave, sr, data_cfg)


def pad_windows(waves: Sequence[np.ndarray], min_samples: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (``(B, N)`` float32 batch zero-padded at the end to the longest wave or ``min_samples``, lengths
    ``(B,)``) — the batch shape FeatureFrontend expects."""
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    n = max(int(lengths.max()) if len(waves) else 0, min_samples)
    out = torch.zeros(len(waves), n, dtype=torch.float32)
    for i, w in enumerate(waves):
        out[i, : len(w)] = torch.from_numpy(np.asarray(w, dtype=np.float32))
    return out, lengths
