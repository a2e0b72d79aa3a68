"""Batched spectral front ends (log-mel, pseudo-CQT, chroma, HPSS) for padded waveform batches, CPU or GPU.

Feature type is a search dimension, so features are computed on the training device per trial from the cached
waveforms. Every transform takes a zero-padded batch ``wave (B, N)`` plus the true ``lengths (B,)`` in samples and
returns ``(feats (B, C, F, T), frame_lengths (B,))``.

Framing: the STFT is taken with ``center=False`` on the signal padded (with zeros) to at least ``n_fft``; frame ``t``
covers samples ``[t * hop, t * hop + n_fft)``. A snippet of ``n`` samples has

    frame_lengths = 1 + max(n - n_fft, 0) // hop          (see ``frames_for``)

valid frames, none of which reads a sample at or past ``n`` (except the single frame of a snippet shorter than
``n_fft``, which only sees its own zero padding). Samples past ``lengths`` are zeroed before the STFT and every frame
past ``frame_lengths`` is set to exactly 0, so a snippet gives the same valid frames alone or padded in a batch
and models can mask padding. Only the valid frames are transformed and projected (``projected_spectrogram``; a
random batch of notes is mostly padding). While tracing for export, ``block_power_spectrogram`` gives the same values
from real-valued matrix products and a convolution (ONNX has no complex type, and ONNX Runtime's STFT is slow).

Scaling: power spectra are projected (in float32, autocast off), converted to dB with a 1e-10 floor, clipped to
``top_db`` below the snippet's own maximum over its valid frames and mapped to ``[0, 1]`` by
``(db - max) / top_db + 1`` (1 = the snippet's loudest bin, 0 = ``top_db`` quieter or padding).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from guitar_cls.config import FeatureConfig

_AMIN = 1e-10


def frames_for(n_samples: int | Tensor, n_fft: int = 2048, hop_length: int = 128) -> int | Tensor:
    """Returns the number of valid frames of a snippet of ``n_samples`` (``1 + max(n - n_fft, 0) // hop``)."""
    if isinstance(n_samples, Tensor):
        return 1 + torch.clamp(n_samples - n_fft, min=0) // hop_length
    return 1 + max(int(n_samples) - n_fft, 0) // hop_length


def _autocast_off(device: torch.device) -> Any:
    return torch.autocast(device_type=device.type, enabled=False)


def is_tracing() -> bool:
    """Returns whether code is being traced or exported (shapes must not depend on the lengths' values)."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


_UNPADDED: contextvars.ContextVar[bool] = contextvars.ContextVar("guitar_cls_unpadded", default=False)


@contextlib.contextmanager
def unpadded() -> Iterator[None]:
    """Declares that every snippet traced in the enclosed block is unpadded (its length is the batch's length, as
    in a batch of one, or it is zeros past its length up to ``n_fft``), so front ends and ``LengthMasker`` trace no
    masking ops (the one-snippet ONNX graph, ``export.SnippetModel``). Only tracing is affected: eager code checks the
    lengths itself."""
    token = _UNPADDED.set(True)
    try:
        yield
    finally:
        _UNPADDED.reset(token)


def is_unpadded() -> bool:
    """Returns whether the current forward is traced inside ``unpadded()``."""
    return _UNPADDED.get() and is_tracing()


def frame_mask(frame_lengths: Tensor, n_frames: int | Tensor) -> Tensor:
    """Returns a ``(B, T)`` bool mask, True on the valid frames (index < length)."""
    return torch.arange(n_frames, device=frame_lengths.device)[None, :] < frame_lengths[:, None]


def _zero_past(wave: Tensor, lengths: Tensor) -> Tensor:
    """Returns ``wave (B, N)`` as float32 with the samples at or past ``lengths`` set to 0."""
    wave = wave.float()
    return wave * frame_mask(lengths.to(wave.device).long(), wave.shape[-1])


class StftKernels(NamedTuple):
    """The fixed tensors of the STFT over the rows ``band = (lo, hi)``, ``K = hi - lo`` (see ``stft_kernels``).

    ``window (n_fft,)``: periodic Hann, for the valid-frame path. ``dft (2 (K + 2), block)``: cosine then minus sine
    rows of bins ``lo - 1 .. hi`` over one block of ``block = gcd(n_fft, hop)`` samples, times 0.5. ``taps (4 (K +
    2), 1, 1, n_fft // block)``: per bin, the cosine (twice) then the sine (twice) of the phase of each block inside a
    frame (``block_power_spectrogram``).
    """

    window: Tensor
    dft: Tensor
    taps: Tensor


def stft_kernels(n_fft: int, hop_length: int, band: tuple[int, int]) -> StftKernels:
    """Returns the window and block-DFT kernels of the bins ``band = (lo, hi)`` (computed in float64)."""
    block = math.gcd(n_fft, hop_length)
    bins = torch.arange(band[0] - 1, band[1] + 1, dtype=torch.float64)  # one more on each side for the window
    phase = 2 * math.pi / n_fft * bins[:, None] * torch.arange(block, dtype=torch.float64)  # (K + 2, block)
    # halved: the window's 0.5 X[k] - 0.25 (X[k - 1] + X[k + 1]) is then X[k] - 0.5 (...), one multiplication less
    dft = 0.5 * torch.cat([torch.cos(phase), -torch.sin(phase)])
    offsets = block * torch.arange(n_fft // block, dtype=torch.float64)  # first sample of each block in a frame
    phase = 2 * math.pi / n_fft * bins[:, None] * offsets  # (K + 2, n_fft // block)
    cos, sin = torch.cos(phase), torch.sin(phase)
    # X = sum_b (cos - i sin)(re S + i im S): the taps of two depthwise convolutions over the channels [re S, im S]
    taps = torch.cat([cos, cos, sin, sin])[:, None, None, :]
    return StftKernels(torch.hann_window(n_fft), dft.float(), taps.float())


def block_power_spectrogram(
    wave: Tensor, lengths: Tensor, dft: Tensor, taps: Tensor, n_fft: int, hop_length: int
) -> tuple[Tensor, Tensor]:
    """Returns the Hann-windowed power STFT ``(B, K, T)`` of the bins of ``stft_kernels`` and the frame lengths
    ``(B,)``: the values of ``torch.stft(center=False)`` rows ``lo:hi``, from real-valued ops that export to ONNX.

    Every frame of ``n_fft`` samples is ``n_fft // block`` blocks of ``block = gcd(n_fft, hop)`` samples, and the
    frames share blocks (16 each at 2048 / 128). So each block is transformed once (one matrix product: ``dft`` at the
    bins ``lo - 1 .. hi``), a depthwise convolution over blocks sums each frame's blocks with their phase in the frame
    (``taps``), and the Hann window, a sum of three complex exponentials, becomes ``0.5 X[k] - 0.25 (X[k - 1] +
    X[k + 1])`` (``dft`` is halved, so ``X[k] - 0.5 (...)`` here). About as fast as ``torch.stft`` on one CPU thread,
    and 4x faster than ONNX Runtime's STFT. Samples at or past ``lengths`` are zeroed first (inside ``unpadded()``
    the caller has done it: ``export.SnippetModel``); frames past the frame lengths are not zeroed here.
    Needs ``N >= n_fft`` while tracing (shorter batches are zero-padded eagerly).
    """
    wave = wave.float() if is_unpadded() else _zero_past(wave, lengths)  # (B, N)
    n = wave.shape[-1]
    if isinstance(n, int) and n < n_fft:  # (while tracing n is a tensor: the export example is never that short)
        wave = nn.functional.pad(wave, (0, n_fft - n))
        n = n_fft
    block = dft.shape[-1]
    k2 = dft.shape[0] // 2  # K + 2 bins
    n_frames = 1 + (n - n_fft) // hop_length
    wave = wave[:, : (n_frames - 1) * hop_length + n_fft]  # the samples the frames cover: a whole number of blocks
    spec = torch.matmul(dft, wave.reshape(wave.shape[0], -1, block).transpose(1, 2))  # (B, 2 (K + 2), blocks)
    spec = spec[:, :, None, :]  # (B, 2 (K + 2), 1, blocks): [re S; im S]
    stride, groups = (1, hop_length // block), 2 * k2
    # two depthwise convolutions, no channel copies (a concatenated [re, im, im, re] cost ONNX Runtime 10 %)
    # squeeze, not [:, :, 0]: that exports as a Gather, which copies (ONNX Runtime: 0.03 ms each)
    by_cos = nn.functional.conv2d(spec, taps[: 2 * k2], stride=stride, groups=groups).squeeze(2)  # (B, 2 (K + 2), T)
    by_sin = nn.functional.conv2d(spec, taps[2 * k2 :], stride=stride, groups=groups).squeeze(2)
    re = by_cos[:, :k2] + by_sin[:, k2:]  # (B, K + 2, T)
    im = by_cos[:, k2:] - by_sin[:, :k2]
    re = re[:, 1:-1] - 0.5 * (re[:, :-2] + re[:, 2:])  # the Hann window (dft halved): (B, K, T)
    im = im[:, 1:-1] - 0.5 * (im[:, :-2] + im[:, 2:])
    return re.square() + im.square(), frames_for(lengths.to(wave.device).long(), n_fft, hop_length)


def _masked(x: Tensor, frame_lengths: Tensor) -> Tensor:
    """Returns ``x (B, K, T)`` with the frames past ``frame_lengths`` set to 0 (as it is inside ``unpadded()``)."""
    if is_unpadded():
        return x
    return x * frame_mask(frame_lengths, x.shape[-1])[:, None, :]


def power_to_unit_db(power: Tensor, frame_lengths: Tensor, top_db: float) -> Tensor:
    """Returns ``(..., F, T)`` power mapped to ``[0, 1]`` dB relative to each snippet's max; padding frames 0.

    ``power`` is ``(B, C, F, T)`` or ``(B, F, T)``; the reference max is taken per snippet over all its channels'
    valid frames.
    """
    # in units of top_db: 10 log10(p) / top_db = ln(p) * 10 / (ln 10 top_db); out = max(u - max(u) + 1, 0)
    units = torch.log(torch.clamp(power, min=_AMIN)) * (10.0 / (math.log(10.0) * top_db))
    dims = tuple(range(1, power.dim()))
    mask = None
    if is_unpadded():  # every frame valid
        ref = units.amax(dim=dims, keepdim=True)
    else:
        mask = frame_mask(frame_lengths, power.shape[-1])  # (B, T)
        mask = mask.view(mask.shape[0], *([1] * (power.dim() - 2)), mask.shape[1])
        ref = units.masked_fill(~mask, -math.inf).amax(dim=dims, keepdim=True)  # (B, 1, ..., 1)
    out = torch.relu(units - (ref - 1.0))
    return out if mask is None else out * mask


Blocks = tuple[tuple[int, int, int, int], ...]  # (row_lo, row_hi, col_lo, col_hi) of a filter bank's nonzero parts


def basis_blocks(basis: Tensor, rows: int = 16) -> Blocks:
    """Returns the ``(row_lo, row_hi, col_lo, col_hi)`` of groups of ``rows`` consecutive rows of ``basis (K', K)``
    and the columns they use, or one block of the whole bank when that would not halve the multiplications.

    A mel bank is narrow triangles: 16-row blocks do 1/7.6 of the dense product's work (128 mels over 736 STFT rows).
    The pseudo-CQT and chroma banks use every row: one block.
    """
    n_rows, n_cols = basis.shape
    blocks = []
    for r0 in range(0, n_rows, rows):
        used = torch.nonzero(basis[r0 : r0 + rows].abs().sum(dim=0) > 0).flatten()
        c0, c1 = (int(used[0]), int(used[-1]) + 1) if used.numel() else (0, 1)
        blocks.append((r0, min(r0 + rows, n_rows), c0, c1))
    work = sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in blocks)
    return tuple(blocks) if 2 * work <= n_rows * n_cols else ((0, n_rows, 0, n_cols),)


def project(basis: Tensor, spec: Tensor, blocks: Blocks | None = None) -> Tensor:
    """Returns ``basis (K', K) @ spec (..., K, N) -> (..., K', N)`` in float32 with autocast off, multiplying only
    the ``blocks`` of ``basis`` (``basis_blocks``; None: all of it)."""
    with _autocast_off(spec.device):
        basis, spec = basis.float(), spec.float()
        if blocks is None or len(blocks) == 1:
            return torch.matmul(basis, spec)
        parts = [torch.matmul(basis[r0:r1, c0:c1], spec[..., c0:c1, :]) for r0, r1, c0, c1 in blocks]
        return torch.cat(parts, dim=-2)


def _valid_frames_projected(
    wave: Tensor,
    lengths: Tensor,
    window: Tensor,
    basis: Tensor,
    n_fft: int,
    hop_length: int,
    band: tuple[int, int],
    magnitude: bool,
    blocks: Blocks | None = None,
) -> tuple[Tensor, Tensor]:
    """Returns ``basis`` applied to the power (or magnitude) STFT of the valid frames only, scattered into zeros
    ``(B, K, T)``, and the frame lengths ``(B,)``.

    Same values as ``_masked(project(basis, block_power_spectrogram(...)))`` (up to float summation order), but
    only the ``sum(frame_lengths)`` valid frames are windowed, transformed and projected: a random batch of notes is
    mostly padding (median note 0.3 s, padded to the longest, often 3 s), which a dense STFT computes in full.
    """
    wave = wave.float()  # (B, N)
    lengths = lengths.to(wave.device).long()
    n = wave.shape[-1]
    if n < n_fft:
        wave = nn.functional.pad(wave, (0, n_fft - n))
    frame_lengths = frames_for(lengths, n_fft, hop_length)
    n_frames = 1 + (wave.shape[-1] - n_fft) // hop_length  # what torch.stft(center=False) gives
    mask = frame_mask(frame_lengths, n_frames)  # (B, T)
    frames = wave.unfold(-1, n_fft, hop_length)[mask]  # (V, n_fft): the valid frames, gathered (a copy)
    # Only the one frame of a snippet shorter than n_fft reaches past its length: zero what it sees there.
    short = (lengths < n_fft).nonzero().flatten()
    if short.numel():
        rows = torch.cumsum(mask.sum(dim=1), 0)[short] - 1  # its (only) frame
        frames[rows] *= torch.arange(n_fft, device=wave.device)[None, :] < lengths[short, None]
    spec = torch.fft.rfft(frames.mul_(window), dim=-1)[:, band[0] : band[1]]  # (V, K)
    parts = torch.view_as_real(spec)  # (V, F, 2)
    power = parts[..., 0].square() + parts[..., 1].square()  # (V, F); a sum over the last dim of 2 is slow
    if magnitude:
        power = power.sqrt()
    projected = project(basis, power.T, blocks).T  # (V, K')
    out = projected.new_zeros(wave.shape[0], basis.shape[0], n_frames)  # (B, K, T)
    out.transpose(1, 2)[mask] = projected
    return out, frame_lengths


def projected_spectrogram(
    wave: Tensor,
    lengths: Tensor,
    stft: StftKernels,
    basis: Tensor,
    n_fft: int,
    hop_length: int,
    band: tuple[int, int],
    magnitude: bool = False,
    blocks: Blocks | None = None,
) -> tuple[Tensor, Tensor]:
    """Returns ``basis (K', K) @ power STFT`` ``(B, K', T)`` of the rows ``band = (lo, hi)`` (of the magnitude when
    ``magnitude``), frames past ``frame_lengths`` exactly 0, and the frame lengths ``(B,)``.

    Eagerly only the valid frames are computed; while tracing or exporting, ``block_power_spectrogram`` (shapes
    independent of the lengths' values, real-valued ops only).
    """
    if not is_tracing():
        return _valid_frames_projected(wave, lengths, stft.window, basis, n_fft, hop_length, band, magnitude, blocks)
    power, frame_lengths = block_power_spectrogram(wave, lengths, stft.dft, stft.taps, n_fft, hop_length)
    return _masked(project(basis, power.sqrt() if magnitude else power, blocks), frame_lengths), frame_lengths


def logmel(
    wave: Tensor,
    lengths: Tensor,
    *,
    stft: StftKernels,
    basis: Tensor,
    n_fft: int,
    hop_length: int,
    top_db: float,
    band: tuple[int, int],
    blocks: Blocks | None = None,
) -> tuple[Tensor, Tensor]:
    """Returns the scaled log-mel spectrogram ``(B, 1, n_mels, T)`` and frame lengths ``(B,)``.

    ``basis`` is the Slaney mel filter bank (librosa's default) restricted to the STFT rows ``band = (lo, hi)`` it
    uses, ``(n_mels, hi - lo)``, multiplied by its nonzero ``blocks`` (``basis_blocks``); ``stft`` holds the
    window and block-DFT kernels of that band (``stft_kernels``).
    """
    mel, frame_lengths = projected_spectrogram(wave, lengths, stft, basis, n_fft, hop_length, band, blocks=blocks)
    return power_to_unit_db(mel, frame_lengths, top_db)[:, None], frame_lengths


def cqt(
    wave: Tensor,
    lengths: Tensor,
    *,
    stft: StftKernels,
    basis: Tensor,
    n_fft: int,
    hop_length: int,
    top_db: float,
    band: tuple[int, int],
    blocks: Blocks | None = None,
) -> tuple[Tensor, Tensor]:
    """Returns the scaled log pseudo-CQT ``(B, 1, n_bins, T)`` and frame lengths ``(B,)``.

    ``basis`` is the ``(n_bins, n_fft // 2 + 1)`` magnitude response of librosa's constant-Q wavelets sampled at the
    STFT bin frequencies; it is applied to the STFT magnitude (as librosa's ``pseudo_cqt``), then squared.
    """
    mag, frame_lengths = projected_spectrogram(
        wave, lengths, stft, basis, n_fft, hop_length, band, magnitude=True, blocks=blocks
    )
    return power_to_unit_db(mag.square(), frame_lengths, top_db)[:, None], frame_lengths


def chroma(
    wave: Tensor,
    lengths: Tensor,
    *,
    stft: StftKernels,
    basis: Tensor,
    n_fft: int,
    hop_length: int,
    top_db: float,
    band: tuple[int, int],
    blocks: Blocks | None = None,
) -> tuple[Tensor, Tensor]:
    """Returns the chromagram ``(B, 1, n_chroma, T)`` (each frame divided by its max, as librosa) and frame lengths.

    ``basis`` is librosa's ``(n_chroma, n_fft // 2 + 1)`` chroma filter bank; ``top_db`` is unused.
    """
    ch, frame_lengths = projected_spectrogram(wave, lengths, stft, basis, n_fft, hop_length, band, blocks=blocks)
    peak = ch.amax(dim=1, keepdim=True)
    ch = torch.where(peak > _AMIN, ch / peak.clamp(min=_AMIN), torch.zeros_like(ch))
    return ch[:, None], frame_lengths


def _median_filter(x: Tensor, kernel: int, dim: int) -> Tensor:
    """Returns ``x`` median-filtered along ``dim`` with a window of ``kernel`` (zero padded at the edges)."""
    half = kernel // 2
    x = x.transpose(dim, -1)
    padded = nn.functional.pad(x, (half, kernel - 1 - half))
    out = padded.unfold(-1, kernel, 1).median(dim=-1).values
    return out.transpose(dim, -1)


def hpss(
    wave: Tensor,
    lengths: Tensor,
    *,
    stft: StftKernels,
    basis: Tensor,
    n_fft: int,
    hop_length: int,
    top_db: float,
    band: tuple[int, int],
    blocks: Blocks | None = None,
    kernel: int = 17,
) -> tuple[Tensor, Tensor]:
    """Returns harmonic and percussive log-mels ``(B, 2, n_mels, T)`` and frame lengths ``(B,)``.

    Median filtering runs on the mel power (along time for the harmonic part, along mel bins for the percussive
    part; padding frames are zero, so edges look the same alone or in a batch), then soft Wiener masks (power 2)
    split the mel power into the two channels.
    """
    # (B, M, T), padding frames 0 for the median filters
    mel, frame_lengths = projected_spectrogram(wave, lengths, stft, basis, n_fft, hop_length, band, blocks=blocks)
    harm = _median_filter(mel, kernel, dim=-1)
    perc = _median_filter(mel, kernel, dim=-2)
    h2, p2 = harm.square(), perc.square()
    total = (h2 + p2).clamp(min=_AMIN**2)
    stacked = torch.stack([mel * h2 / total, mel * p2 / total], dim=1)  # (B, 2, M, T)
    return power_to_unit_db(stacked, frame_lengths, top_db), frame_lengths


def mel_basis(cfg: FeatureConfig, sample_rate: int) -> Tensor:
    """Returns the ``(n_mels, n_fft // 2 + 1)`` Slaney mel filter bank (same as librosa's default)."""
    import torchaudio.functional as AF

    fb = AF.melscale_fbanks(cfg.n_fft // 2 + 1, cfg.f_min, cfg.f_max, cfg.n_mels, sample_rate, "slaney", "slaney")
    return fb.T.contiguous().float()


def cqt_basis(cfg: FeatureConfig, sample_rate: int) -> Tensor:
    """Returns the ``(n_bins, n_fft // 2 + 1)`` pseudo-CQT basis from ``f_min``; bins whose band reaches Nyquist
    are dropped, so ``n_bins`` may be below ``cqt_bins``."""
    import librosa

    alpha = 2.0 ** (1.0 / cfg.bins_per_octave) - 1.0
    freqs = librosa.cqt_frequencies(cfg.cqt_bins, fmin=cfg.f_min, bins_per_octave=cfg.bins_per_octave)
    freqs = freqs[freqs * (1.0 + 0.5 * alpha) < sample_rate / 2]
    if freqs.size == 0:
        raise ValueError(f"cqt: f_min {cfg.f_min} leaves no bin below Nyquist ({sample_rate / 2})")
    wavelets, _ = librosa.filters.wavelet(freqs=freqs, sr=sample_rate, norm=1, pad_fft=True)  # (K, L) complex
    # FFT size a power-of-two multiple of n_fft, so every STFT bin frequency is sampled exactly.
    n_big = cfg.n_fft * 2 ** max(0, math.ceil(math.log2(max(wavelets.shape[1], cfg.n_fft) / cfg.n_fft)))
    response = np.abs(np.fft.fft(wavelets, n=n_big, axis=1))[:, :: n_big // cfg.n_fft][:, : cfg.n_fft // 2 + 1]
    return torch.from_numpy(response.astype(np.float32))


def chroma_basis(cfg: FeatureConfig, sample_rate: int) -> Tensor:
    """Returns librosa's ``(n_chroma, n_fft // 2 + 1)`` chroma filter bank."""
    import librosa

    fb = librosa.filters.chroma(sr=sample_rate, n_fft=cfg.n_fft, n_chroma=cfg.n_chroma)
    return torch.from_numpy(np.ascontiguousarray(fb, dtype=np.float32))


# name -> (transform, basis builder, channels)
FEATURES: dict[str, tuple[Callable[..., tuple[Tensor, Tensor]], Callable[[FeatureConfig, int], Tensor], int]] = {
    "logmel": (logmel, mel_basis, 1),
    "cqt": (cqt, cqt_basis, 1),
    "chroma": (chroma, chroma_basis, 1),
    "hpss": (hpss, mel_basis, 2),
}


class FeatureFrontend(nn.Module):
    """Holds the STFT kernels and filter bank of one feature type; ``forward(wave (B, N), lengths (B,))`` returns
    ``(feats (B, in_channels, n_bins, T), frame_lengths (B,))``."""

    def __init__(self, cfg: FeatureConfig, sample_rate: int) -> None:
        super().__init__()
        if cfg.name not in FEATURES:
            raise ValueError(f"unsupported feature: {cfg.name!r} (known: {', '.join(FEATURES)})")
        self.cfg = cfg
        self.name = cfg.name
        self.sample_rate = sample_rate
        self.n_fft = cfg.n_fft
        self.hop_length = cfg.hop_length
        self._transform, build_basis, self.in_channels = FEATURES[cfg.name]
        basis = build_basis(cfg, sample_rate)  # (K, n_fft // 2 + 1)
        support = torch.nonzero(basis.abs().sum(dim=0) > 0).flatten()
        # only the STFT rows the filter bank uses are computed (mel 80-8000 Hz: ~72% of them)
        self.band = (int(support[0]), int(support[-1]) + 1) if support.numel() else (0, basis.shape[1])
        self.register_buffer("basis", basis[:, self.band[0] : self.band[1]].contiguous(), persistent=False)
        self.basis_blocks = basis_blocks(self.basis)
        for name, kernel in stft_kernels(cfg.n_fft, cfg.hop_length, self.band)._asdict().items():
            self.register_buffer(f"stft_{name}", kernel, persistent=False)
        self.n_bins = int(basis.shape[0])
        self._extra = {"kernel": cfg.hpss_kernel | 1} if cfg.name == "hpss" else {}

    def frames_for(self, n_samples: int | Tensor) -> int | Tensor:
        """Returns the number of valid frames of a snippet of ``n_samples``."""
        return frames_for(n_samples, self.n_fft, self.hop_length)

    def forward(self, wave: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        with _autocast_off(wave.device):
            return self._transform(
                wave,
                lengths,
                stft=StftKernels(self.stft_window, self.stft_dft, self.stft_taps),
                basis=self.basis,
                n_fft=self.n_fft,
                hop_length=self.hop_length,
                top_db=self.cfg.top_db,
                band=self.band,
                blocks=self.basis_blocks,
                **self._extra,
            )

    def extra_repr(self) -> str:
        return (
            f"{self.name}, in_channels={self.in_channels}, n_bins={self.n_bins}, "
            f"n_fft={self.n_fft}, hop={self.hop_length}"
        )


def make_frontend(features_cfg: FeatureConfig, sample_rate: int) -> FeatureFrontend:
    """Returns the FeatureFrontend for ``features_cfg.name`` (raises ValueError listing ``FEATURES`` if unknown)."""
    return FeatureFrontend(features_cfg, sample_rate)
