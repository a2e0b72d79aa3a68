"""Train-time augmentation, batched on the training device: waveform effects, SpecAugment and mixup.

The waveform effects make a clean note sound as if recorded elsewhere (another guitar's tuning, amp, EQ, room, a
phone, a noisy stage): time stretch, pitch shift, saturation, EQ, reverb, another note of the batch mixed in,
band-limiting, gain and noise. Each has its own switch and per-sample probability in ``AugmentationConfig`` (plus the
master ``enabled``). The effects are pure functions with explicit per-sample parameters (``shift_pitch``,
``saturate``, ``fft_filter`` with ``eq_response`` or ``band_limit_response``, ``synthetic_rir`` and ``add_reverb``,
``mix_in``); ``WaveformAugment`` draws the parameters, runs each effect on the chosen rows only, and acts only
in ``train()`` mode. ``spec_augment`` and ``mixup`` are pure functions the training loop calls only while training.
Randomness comes from the ``generator`` passed in, or torch's global RNG.

Over 500 lines because every effect, its parameter draw and its switch sit together, in the order
``WaveformAugment`` applies them; each effect is a small pure function.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from guitar_cls.config import AugmentationConfig, SpecAugmentConfig

_Changed = tuple[Tensor, Tensor] | None  # (rows [R], their new first n samples [R, n]), or None: nothing changed
_EQ_BAND_HZ = (50.0, 16000.0)  # where the EQ's control points sit (log-spaced)
_PITCH_WINDOW_SEC = 0.05  # pitch shift STFT window: resolves the harmonics of a low E (82 Hz)


def _rand(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Returns ``n`` uniform [0, 1) draws on ``device`` (drawn on the generator's device when one is given)."""
    if generator is None:
        return torch.rand(n, device=device)
    return torch.rand(n, generator=generator, device=generator.device).to(device)


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator | None, device: torch.device) -> Tensor:
    return lo + (hi - lo) * _rand(n, generator, device)


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Returns standard normal draws made on ``device``.

    Bulk draws stay on the device: a generator living elsewhere (the training loop's CPU one) seeds a device generator
    instead, so one seed still drives everything and no large tensor crosses to the GPU.
    """
    if generator is not None and generator.device != device:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
        generator = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(shape, generator=generator, device=device)


def _db_to_amp(db: Tensor) -> Tensor:
    """Returns the amplitude ratio ``10 ** (db / 20)``."""
    return torch.exp(db * (math.log(10.0) / 20.0))


def _valid_mask(lengths: Tensor, n: int) -> Tensor:
    """Returns a bool mask ``[B, n]``: True where the index is below each length."""
    return torch.arange(n, device=lengths.device) < lengths[:, None]


def _zero_padding_(wave: Tensor, lengths: Tensor) -> Tensor:
    """Returns ``wave [B, N]`` with every sample past each row's length set to exactly 0, in place."""
    return wave.masked_fill_(~_valid_mask(lengths.to(wave.device), wave.shape[1]), 0.0)


def _rms(wave: Tensor, lengths: Tensor) -> Tensor:
    """Returns each row's RMS ``[B]`` over its valid samples (the padding is zero)."""
    return torch.linalg.vector_norm(wave, dim=1) / lengths.to(wave.device).clamp(min=1).to(wave.dtype).sqrt()


def _match_rms(out: Tensor, ref: Tensor) -> Tensor:
    """Returns ``out [B, N]`` scaled row by row to the RMS of ``ref`` (both zero-padded alike), in place.

    Loudness stays the gain augmentation's job.
    """
    norm = torch.linalg.vector_norm(out, dim=1).clamp(min=1e-12)
    return out.mul_((torch.linalg.vector_norm(ref, dim=1) / norm)[:, None])


def _fast_fft_len(n: int) -> int:
    """Returns the smallest length >= ``n`` with no prime factor above 7 (fast for pocketfft and cuFFT)."""
    m = max(n, 1)
    while True:
        k = m
        for p in (2, 3, 5, 7):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def _take_rows(wave: Tensor, lengths: Tensor, chosen: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
    """Returns ``(rows [R], wave [R, n], lengths [R])`` of the chosen rows cut to their longest length; None if none."""
    rows = chosen.nonzero().squeeze(1)
    if rows.numel() == 0:
        return None
    lens = lengths[rows]
    return rows, wave[rows, : int(lens.max())], lens


def _princarg(phase: Tensor) -> Tensor:
    """Returns ``phase`` wrapped to ``[-pi, pi)``."""
    return torch.remainder(phase + math.pi, 2 * math.pi) - math.pi


def shift_pitch(wave: Tensor, lengths: Tensor, semitones: Tensor, sample_rate: int) -> Tensor:
    """Returns ``wave [B, N]`` shifted by ``semitones [B]`` with every duration kept (a phase-vocoder pitch shift).

    In the STFT (Hann window of about ``_PITCH_WINDOW_SEC``, hop a quarter of it) each bin ``k`` moves to bin
    ``k + round(k (r - 1))``, ``r = 2 ** (semitones / 12)``, and its phase is advanced by ``(r - 1)`` times its own
    unwrapped phase, so its frequency becomes ``r`` times its instantaneous frequency (Laroche and Dolson's
    peak shifting, with every bin as its own peak). For shifts of a semitone or two a partial's whole spectral lobe
    moves together, which keeps the phase relations across bins: attacks stay sharp and in place, and no frame moves
    in time (larger shifts tear lobes apart). Zero semitones gives the input back. The STFT pads with zeros (a
    reflected attack would smear backwards) and past the end by half a window, so a padded snippet comes out as it
    would alone; samples past each length stay zero.
    """
    n = wave.shape[1]
    dev = wave.device
    n_fft = 2 ** round(math.log2(_PITCH_WINDOW_SEC * sample_rate))
    hop = n_fft // 4
    window = torch.hann_window(n_fft, device=dev, dtype=wave.dtype)
    padded = F.pad(wave, (0, n_fft // 2))  # the last samples see every frame that covers them, padded or not
    spec = torch.stft(padded, n_fft, hop, window=window, pad_mode="constant", return_complex=True)  # (B, F, T)
    n_bins, n_frames = spec.shape[1], spec.shape[2]
    stretch = (2.0 ** (semitones.to(dev, torch.float32) / 12.0) - 1.0)[:, None]  # (B, 1): r - 1
    phase = spec.angle()
    bins = torch.arange(n_bins, device=dev)
    expected = (2 * math.pi * hop / n_fft) * bins.to(wave.dtype)[:, None]  # (F, 1): advance per hop at bin centre
    advance = _princarg(torch.diff(phase, dim=2) - expected) + expected  # (B, F, T - 1)
    unwrapped = torch.cat([phase[:, :, :1], advance], dim=2).cumsum_(2)
    target = bins + torch.round(bins * stretch).long()  # (B, F)
    kept = (target < n_bins)[:, :, None]  # an upward shift pushes the top bins past Nyquist
    mag, moved_phase = spec.abs() * kept, phase + unwrapped * stretch[:, :, None]
    moved = torch.complex(mag * torch.cos(moved_phase), mag * torch.sin(moved_phase))  # torch.polar, 2x faster on CPU
    index = target.clamp(max=n_bins - 1)[:, :, None].expand(-1, -1, n_frames)
    shifted = torch.zeros_like(spec).scatter_add_(1, index, moved)
    out = torch.istft(shifted, n_fft, hop, window=window, length=padded.shape[1])
    return _zero_padding_(out[:, :n], lengths)


def saturate(wave: Tensor, drive_db: Tensor) -> Tensor:
    """Returns ``wave [B, N]`` soft-clipped: ``tanh(g * x / peak) * peak / tanh(g)`` with ``g = 10 ** (drive_db / 20)``.

    The drive is relative to each row's peak, which is kept; quiet parts are lifted by up to ``g / tanh(g)`` (the
    compression of a driven amp). Zeros (the padding) stay zero.
    """
    g = _db_to_amp(drive_db.to(wave.device, wave.dtype))[:, None]  # (B, 1)
    peak = wave.abs().amax(1, keepdim=True).clamp(min=1e-8)
    return torch.tanh(g * wave / peak) * (peak / torch.tanh(g))


def eq_response(freqs: Tensor, gains_db: Tensor, band_hz: tuple[float, float] = _EQ_BAND_HZ) -> Tensor:
    """Returns the magnitude ``[B, F]`` at ``freqs [F]`` Hz of a smooth EQ curve through ``gains_db [B, K]``, K >= 2.

    The K control points sit log-spaced over ``band_hz``; between neighbours the dB curve follows a half cosine in
    log-frequency (flat at the points), outside the band it stays at the end values. Random points make random bells,
    dips, shelves and tilts at once.
    """
    k = gains_db.shape[1]
    lo, hi = band_hz
    pos = torch.log2(freqs.clamp(lo, hi) / lo) * ((k - 1) / math.log2(hi / lo))  # (F,) in [0, K-1]
    i0 = pos.floor().long().clamp(max=k - 2)
    s = (0.5 - 0.5 * torch.cos(torch.pi * (pos - i0))).to(gains_db.dtype)
    return _db_to_amp(torch.lerp(gains_db[:, i0], gains_db[:, i0 + 1], s))  # (B, F)


def band_limit_response(freqs: Tensor, highpass_hz: Tensor, lowpass_hz: Tensor, order: Tensor) -> Tensor:
    """Returns the Butterworth magnitude ``[B, F]`` at ``freqs [F]`` of a high-pass and a low-pass per row.

    ``highpass_hz``, ``lowpass_hz`` and ``order`` are ``[B]``; each side falls ``6 * order`` dB per octave past its
    corner. A high-pass at 0 Hz or a low-pass at ``inf`` is off.
    """
    f = freqs[None, :]
    n2 = 2.0 * order[:, None]
    low = (f / lowpass_hz[:, None]).pow(n2)
    high = (highpass_hz[:, None] / f.clamp(min=1e-3)).pow(n2)
    return ((1.0 + low) * (1.0 + high)).rsqrt_()


def fft_filter(
    wave: Tensor,
    lengths: Tensor,
    response: Callable[[Tensor], Tensor],
    sample_rate: int,
    margin_sec: float = 0.05,
) -> Tensor:
    """Returns ``wave [B, N]`` through the zero-phase filter of magnitude ``response(freqs_hz [F]) -> [B, F]``.

    One rFFT per row, zero-padded by ``margin_sec`` so the impulse response's ends do not wrap round onto the other
    end of the snippet; the ringing past each length is cut (the recording ends there) and the padding stays zero.
    """
    n = wave.shape[1]
    n_fft = _fast_fft_len(n + round(margin_sec * sample_rate))
    freqs = torch.fft.rfftfreq(n_fft, 1.0 / sample_rate, device=wave.device)
    spec = torch.fft.rfft(wave, n=n_fft).mul_(response(freqs).to(wave.dtype))  # (B, n_fft // 2 + 1)
    return _zero_padding_(torch.fft.irfft(spec, n=n_fft)[:, :n], lengths)


def synthetic_rir(
    rt60: Tensor, n_taps: int, sample_rate: int, generator: torch.Generator | None = None, n_early: int = 6
) -> Tensor:
    """Returns unit-energy room impulse responses ``[B, n_taps]`` without the direct sound, one per ``rt60 [B]`` s.

    The late tail is Gaussian noise under an envelope falling 60 dB in ``rt60``, fading in after a random 2-15 ms
    pre-delay; ``n_early`` early reflections are single taps at random 1-40 ms with random sign, together about as
    strong as the tail. Drawn on ``rt60``'s device.
    """
    b, dev = rt60.shape[0], rt60.device
    rt60 = rt60[:, None].float()
    t = torch.arange(n_taps, device=dev) / sample_rate  # (L,) seconds
    predelay = _uniform(b, 0.002, 0.015, generator, dev)[:, None]
    fade_in = ((t - predelay) / 0.005).clamp(0.0, 1.0)
    tail = _randn((b, n_taps), generator, dev) * _db_to_amp(-60.0 * t / rt60) * fade_in  # (B, L)
    tail = tail / tail.norm(dim=1, keepdim=True).clamp(min=1e-8)
    delay = (_uniform(b * n_early, 0.001, 0.040, generator, dev).view(b, n_early) * sample_rate).long()
    delay = delay.clamp(max=n_taps - 1)
    sign = torch.where(_rand(b * n_early, generator, dev).view(b, n_early) < 0.5, -1.0, 1.0)
    amp = sign * _uniform(b * n_early, 0.2, 0.6, generator, dev).view(b, n_early)
    amp = amp * _db_to_amp(-60.0 * delay / sample_rate / rt60)  # decaying like the tail
    rir = tail.scatter_add(1, delay, amp)
    return rir / rir.norm(dim=1, keepdim=True).clamp(min=1e-8)


def add_reverb(wave: Tensor, lengths: Tensor, rir: Tensor, wet: Tensor) -> Tensor:
    """Returns ``(1 - wet) * wave + wet * (wave conv rir)`` ``[B, N]`` per row (``rir [B, L]``, ``wet [B]``).

    Linear convolution by FFT, cut at each length: the reverb tail past the note's end is dropped with the rest of
    the recording, and the padding stays zero.
    """
    n = wave.shape[1]
    n_fft = _fast_fft_len(n + rir.shape[1] - 1)  # no circular wrap
    spec = torch.fft.rfft(wave, n=n_fft) * torch.fft.rfft(rir.to(wave.dtype), n=n_fft)
    reverberant = torch.fft.irfft(spec, n=n_fft)[:, :n]
    w = wet.to(wave.device, wave.dtype)[:, None]
    return _zero_padding_(torch.lerp(wave, reverberant, w), lengths)


def mix_in(wave: Tensor, lengths: Tensor, other: Tensor, level_db: Tensor) -> Tensor:
    """Returns ``wave [B, N]`` plus ``other [B, N]`` cut at each length and scaled to ``level_db [B]`` dB RMS.

    Both RMS are taken over the row's valid samples, so the added part sits ``level_db`` below what it is added to.
    Only the waveform changes: each row keeps its own label.
    """
    other = other.masked_fill(~_valid_mask(lengths.to(wave.device), wave.shape[1]), 0.0)
    level = _db_to_amp(level_db.to(wave.device, wave.dtype))
    gain = level * torch.linalg.vector_norm(wave, dim=1) / torch.linalg.vector_norm(other, dim=1).clamp(min=1e-12)
    return torch.addcmul(wave, other, gain[:, None])


class WaveformAugment(nn.Module):
    """Random recording conditions for zero-padded waveform batches, each effect on its own random subset of rows.

    ``forward(wave [B, N], lengths [B] samples) -> (wave [B, N'], lengths [B])``; identity in eval mode or when the
    master switch is off. Order, from the player to the recording: the note cut short by the next one, time stretch,
    pitch shift, saturation (amp), EQ (amp, cabinet, guitar), reverb (room), another note of the batch mixed in (the
    room), band-limiting (phone, small speaker), gain, noise (so the SNR is relative to the final signal). Saturation,
    EQ, reverb and band-limiting keep each snippet's RMS, so loudness stays the gain augmentation's job. Only the cut
    and the time stretch change lengths; samples past each length stay exactly zero.

    The time stretch resamples the valid part by linear interpolation to ``round(length / rate)`` samples: a rate above
    1 shortens the note. Like playing a tape faster, this shifts the pitch too (by ``12 * log2(rate)`` semitones,
    about +-1.6 for the default 0.9-1.1); a phase vocoder would keep the pitch but smear the attack transients that
    tell dead notes apart. The batch is re-padded to the longest new length (``N'`` may differ from ``N``). The pitch
    shift keeps every length and onset instead: its phase vocoder moves bins, not frames (``shift_pitch``).
    """

    EFFECTS = ("pitch_shift", "saturation", "eq", "reverb", "overlay", "band_limit", "gain", "noise")  # after stretch

    def __init__(self, aug_cfg: AugmentationConfig, sample_rate: int) -> None:
        super().__init__()
        self.cfg = aug_cfg
        self.sample_rate = sample_rate

    def forward(self, wave: Tensor, lengths: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Returns the augmented ``(wave [B, N'], lengths [B])``; unchanged outside training."""
        cfg = self.cfg
        if not self.training or not cfg.enabled:
            return wave, lengths
        given = wave
        if cfg.cut_short.enabled and cfg.cut_short.p > 0:
            wave, lengths = self.cut_short(wave, lengths, generator)
        if cfg.time_stretch.enabled and cfg.time_stretch.p > 0:
            wave, lengths = self.time_stretch(wave, lengths, generator)
        lengths_dev = lengths.to(wave.device)
        out = wave
        for name in self.EFFECTS:
            sub = getattr(cfg, name)
            if not sub.enabled or sub.p <= 0:
                continue
            # Each effect returns the rows it changed and their new first n samples (the rest is padding).
            changed = getattr(self, f"_{name}")(out, lengths_dev, generator)
            if changed is not None:
                rows, part = changed
                out = out.clone() if out is given else out  # one copy for all effects; the input is never written
                out[rows, : part.shape[1]] = part
        return out, lengths

    def _gain(self, wave: Tensor, lengths: Tensor, generator: torch.Generator | None) -> _Changed:
        """Scales each chosen snippet by a random gain in ``[min_db, max_db]`` dB."""
        g = self.cfg.gain
        chosen, db = self._draw(wave, g.p, generator, (g.min_db, g.max_db))
        picked = _take_rows(wave, lengths, chosen)
        if picked is None:
            return None
        rows, x, _ = picked
        return rows, x * _db_to_amp(db[rows]).to(x.dtype)[:, None]

    def _noise(self, wave: Tensor, lengths: Tensor, generator: torch.Generator | None) -> _Changed:
        """Adds white noise at a random SNR (vs. each snippet's RMS over its valid samples)."""
        nz = self.cfg.noise
        chosen, snr_db = self._draw(wave, nz.p, generator, (nz.min_snr_db, nz.max_snr_db))
        picked = _take_rows(wave, lengths, chosen)
        if picked is None:
            return None
        rows, x, n = picked
        std = (_rms(x, n) / _db_to_amp(snr_db[rows])).to(x.dtype)  # (R,)
        white = _randn(tuple(x.shape), generator, x.device).to(x.dtype)
        return rows, _zero_padding_(torch.addcmul(x, white, std[:, None]), n)

    def _pitch_shift(self, wave: Tensor, lengths: Tensor, generator: torch.Generator | None) -> _Changed:
        """Shifts each chosen snippet by up to ``+-max_semitones``, lengths kept (``shift_pitch``)."""
        ps = self.cfg.pitch_shift
        chosen, semitones = self._draw(wave, ps.p, generator, (-ps.max_semitones, ps.max_semitones))
        picked = _take_rows(wave, lengths, chosen)
        if picked is None:
            return None
        rows, x, n = picked
        return rows, shift_pitch(x, n, semitones[rows], self.sample_rate)

    def _saturation(self, wave: Tensor, lengths: Tensor, generator: torch.Generator | None) -> _Changed:
        """Soft-clips each chosen snippet at a random drive (``saturate``), RMS kept."""
        st = self.cfg.saturation
        chosen, drive_db = self._draw(wave, st.p, generator, (st.min_drive_db, st.max_drive_db))
        picked = _take_rows(wave, lengths, chosen)
        if picked is None:
            return None
        rows, x, n = picked
        return rows, _match_rms(saturate(x, drive_db[rows]), x)

    def _eq(self, wave: Tensor, lengths: Tensor, generator: torch.Generator | None) -> _Changed:
        """Filters each chosen snippet by a random smooth EQ curve (``eq_response``), RMS kept."""
        e = self.cfg.eq
        chosen, *gains = self._draw(wave, e.p, generator, *[(-e.max_db, e.max_db)] * e.n_points)
        gains_db = torch.stack(gains, 1)  # (B, n_points)
        picked = _take_rows(wave, lengths, chosen)
        if picked is None:
            return None
        rows, x, n = picked
        band = (_EQ_BAND_HZ[0], min(_EQ_BAND_HZ[1], self.sample_rate / 2))
        response = functools.partial(eq_response, gains_db=gains_db[rows], band_hz=band)
        return rows, _match_rms(fft_filter(x, n, response, self.sample_rate), x)

    def _reverb(self, wave: Tensor, lengths: Tensor, generator: torch.Generator | None) -> _Changed:
        """Puts each chosen snippet in a random synthetic room (RT60, wet share), RMS kept."""
        rv = self.cfg.reverb
        chosen, rt60, wet = self._draw(wave, rv.p, generator, (rv.min_rt60, rv.max_rt60), (rv.min_wet, rv.max_wet))
        picked = _take_rows(wave, lengths, chosen)
        if picked is None:
            return None
        rows, x, n = picked
        n_taps = min(x.shape[1], math.ceil(rv.max_rt60 * self.sample_rate))  # -60 dB by then; the note ends anyway
        rir = synthetic_rir(rt60[rows], n_taps, self.sample_rate, generator)
        return rows, _match_rms(add_reverb(x, n, rir, wet[rows]), x)

    def _overlay(self, wave: Tensor, lengths: Tensor, generator: torch.Generator | None) -> _Changed:
        """Mixes the batch's previous snippet into each chosen one at ``min_db..max_db`` RMS (``mix_in``)."""
        ov = self.cfg.overlay
        chosen, level_db = self._draw(wave, ov.p, generator, (ov.min_db, ov.max_db))
        b = wave.shape[0]
        picked = _take_rows(wave, lengths, chosen) if b > 1 else None  # a lone snippet has no partner
        if picked is None:
            return None
        rows, x, n = picked
        partner = wave[(rows - 1) % b, : x.shape[1]]  # the batch rolled by one
        return rows, mix_in(x, n, partner, level_db[rows])

    def _band_limit(self, wave: Tensor, lengths: Tensor, generator: torch.Generator | None) -> _Changed:
        """Low-passes, high-passes or both (1/3 each) each chosen snippet, RMS kept.

        Corners are log-uniform in ``[min_lowpass_hz, max_lowpass_hz]`` and ``[min_highpass_hz, max_highpass_hz]``;
        slopes 6, 12, 18 or 24 dB per octave (``band_limit_response``).
        """
        bl = self.cfg.band_limit
        log_lp = (math.log(bl.min_lowpass_hz), math.log(bl.max_lowpass_hz))
        log_hp = (math.log(bl.min_highpass_hz), math.log(bl.max_highpass_hz))
        chosen, sides, log_lowpass, log_highpass, order = self._draw(
            wave, bl.p, generator, (0.0, 3.0), log_lp, log_hp, (1.0, 5.0)
        )
        picked = _take_rows(wave, lengths, chosen)
        if picked is None:
            return None
        rows, x, n = picked
        sides = sides[rows].floor()  # 0: low-pass only, 1: high-pass only, 2: both
        lowpass = torch.where(sides == 1, math.inf, log_lowpass[rows].exp())
        highpass = torch.where(sides == 0, 0.0, log_highpass[rows].exp())
        response = functools.partial(
            band_limit_response, highpass_hz=highpass, lowpass_hz=lowpass, order=order[rows].floor()
        )
        return rows, _match_rms(fft_filter(x, n, response, self.sample_rate), x)

    @staticmethod
    def _draw(
        wave: Tensor, p: float, generator: torch.Generator | None, *ranges: tuple[float, float]
    ) -> tuple[Tensor, ...]:
        """Returns ``(chosen [B] bool, *draws [B])``: who gets the effect (probability ``p``), one uniform per range.

        Every row draws every parameter, chosen or not, so the random stream does not depend on who was chosen.
        """
        b, dev = wave.shape[0], wave.device
        chosen = _rand(b, generator, dev) < p
        return (chosen, *(_uniform(b, lo, hi, generator, dev) for lo, hi in ranges))

    def cut_short(
        self, wave: Tensor, lengths: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Returns ``(wave [B, N], lengths)`` with each chosen snippet ending early, as a note the next one cuts short.

        A chosen snippet keeps its first ``U(min_sec, max_sec)`` seconds (if it is longer) and the rest becomes
        padding: the fast passages' short harmonics and ordinary notes then look, by duration, like dead notes, so
        the model has to tell them apart by what sounds in those first tenths of a second. The batch keeps its width.
        """
        cs = self.cfg.cut_short
        chosen, keep_sec = self._draw(wave, cs.p, generator, (cs.min_sec, cs.max_sec))
        keep = (keep_sec * self.sample_rate).round().clamp(min=1).to(lengths.device, lengths.dtype)
        new = torch.where(chosen.to(lengths.device), torch.minimum(lengths, keep), lengths)
        if bool((new == lengths).all()):
            return wave, lengths
        return _zero_padding_(wave.clone(), new.to(wave.device)), new

    def time_stretch(
        self, wave: Tensor, lengths: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Returns ``(wave [B, N'], lengths)`` with each chosen snippet resampled to ``round(length / rate)``."""
        ts = self.cfg.time_stretch
        b = wave.shape[0]
        chosen, rate = self._draw(wave, ts.p, generator, (ts.min_rate, ts.max_rate))
        if not bool(chosen.any()):
            return wave, lengths
        old = lengths.tolist()
        new = [max(1, round(n / r)) if c else n for n, r, c in zip(old, rate.tolist(), chosen.tolist())]
        out = wave.new_zeros(b, max(new))
        for i, (n_old, n_new) in enumerate(zip(old, new)):
            seg = wave[i, :n_old]
            if n_new != n_old:  # (1, 1, n_old) -> (1, 1, n_new)
                seg = F.interpolate(seg[None, None], size=n_new, mode="linear", align_corners=True)[0, 0]
            out[i, :n_new] = seg
        return out, torch.tensor(new, dtype=lengths.dtype, device=lengths.device)


def spec_augment(
    feats: Tensor, lengths: Tensor | None, cfg: SpecAugmentConfig, generator: torch.Generator | None = None
) -> Tensor:
    """Returns ``feats [B, C, F, T]`` with SpecAugment frequency and time masks (value 0) on chosen samples.

    Each chosen sample (probability ``cfg.p``) gets ``cfg.n_masks`` frequency masks of width ``0..freq_mask`` bins and
    as many time masks of width ``0..time_mask`` frames, all inside its valid frames: padding is never touched. Masks
    are filled with 0, the frontend's padding value. ``lengths`` None means every frame is valid.
    """
    if not cfg.enabled or cfg.p <= 0 or cfg.n_masks == 0:
        return feats
    b, _, n_freq, n_time = feats.shape
    dev = feats.device
    lengths = torch.full((b,), n_time, device=dev) if lengths is None else lengths.to(dev).clamp(0, n_time)
    valid = _valid_mask(lengths, n_time)  # (B, T)
    chosen = _rand(b, generator, dev) < cfg.p
    f_idx = torch.arange(n_freq, device=dev)
    t_idx = torch.arange(n_time, device=dev)
    bands = torch.zeros(b, n_freq, dtype=torch.bool, device=dev)  # masked bins, over valid frames only
    spans = torch.zeros(b, n_time, dtype=torch.bool, device=dev)  # masked frames, over every bin
    for _ in range(cfg.n_masks):
        fw = (_rand(b, generator, dev) * (min(cfg.freq_mask, n_freq) + 1)).floor()
        f0 = (_rand(b, generator, dev) * (n_freq - fw + 1)).floor()
        bands |= (f_idx >= f0[:, None]) & (f_idx < (f0 + fw)[:, None])  # (B, F)
        max_tw = torch.minimum(torch.full_like(lengths, cfg.time_mask), lengths)
        tw = (_rand(b, generator, dev) * (max_tw + 1)).floor()
        t0 = (_rand(b, generator, dev) * (lengths - tw + 1)).floor()
        spans |= (t_idx >= t0[:, None]) & (t_idx < (t0 + tw)[:, None])  # (B, T), inside [0, length)
    # The (B, F, T) mask is built once from the separable parts (building it per mask cost ~2x more).
    bands &= chosen[:, None]
    spans &= chosen[:, None]
    masked = (bands[:, :, None] & valid[:, None, :]) | spans[:, None, :]
    return feats.masked_fill(masked[:, None], 0.0)


def mixup(
    x: Tensor,
    y_onehot: Tensor,
    alpha: float,
    lengths: Tensor | None = None,
    generator: torch.Generator | None = None,
    p: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Returns ``(x, y_soft, lengths)`` mixing each sample with a random partner of the batch.

    ``x`` is ``[B, ...]`` (waveforms or features), ``y_onehot`` ``[B, n]``. Each sample gets its own
    ``lam ~ Beta(alpha, alpha)`` (``lam = 1``, no mixing, for the ``1 - p`` share not chosen); ``x = lam x + (1-lam)
    x[perm]`` and likewise for targets, which still sum to 1. Mixed lengths are the elementwise max of the pair.
    """
    b, dev = x.shape[0], x.device
    if generator is None:
        perm = torch.randperm(b, device=dev)
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
    else:
        perm = torch.randperm(b, generator=generator, device=generator.device).to(dev)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device).item())
    # torch's Beta sampler takes no generator; a NumPy one seeded from the torch stream keeps one source of randomness.
    lam_np = np.random.default_rng(seed).beta(alpha, alpha, size=b) if alpha > 0 else np.ones(b)
    lam = torch.as_tensor(lam_np, dtype=torch.float32, device=dev)
    lam = torch.where(_rand(b, generator, dev) < p, lam, torch.ones((), device=dev))
    lam_x = lam.to(x.dtype).view(b, *([1] * (x.ndim - 1)))
    x_mix = lam_x * x + (1.0 - lam_x) * x[perm]
    lam_y = lam.to(y_onehot.dtype if y_onehot.is_floating_point() else torch.float32)[:, None]
    y = y_onehot.to(lam_y.dtype)
    y_mix = lam_y * y + (1.0 - lam_y) * y[perm]
    if lengths is None:
        return x_mix, y_mix, None
    mixed = (lam < 1.0).to(lengths.device)
    lengths_mix = torch.where(mixed, torch.maximum(lengths, lengths[perm.to(lengths.device)]), lengths)
    return x_mix, y_mix, lengths_mix


__all__ = [
    "WaveformAugment",
    "add_reverb",
    "band_limit_response",
    "eq_response",
    "fft_filter",
    "mix_in",
    "mixup",
    "saturate",
    "shift_pitch",
    "spec_augment",
    "synthetic_rir",
]
