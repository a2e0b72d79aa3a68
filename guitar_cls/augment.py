"""Train-time augmentation, batched on the training device: waveform gain/noise/stretch, SpecAugment and mixup.

Each augmentation has its own switch and per-sample probability in ``AugmentationConfig`` (plus the master
``enabled``). ``WaveformAugment`` acts only in ``train()`` mode; ``spec_augment`` and ``mixup`` are pure functions the
training loop calls only while training. Randomness comes from the ``generator`` passed in, or torch's global RNG.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from guitar_cls.config import AugmentationConfig, SpecAugmentConfig


def _rand(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Returns ``n`` uniform [0, 1) draws on ``device`` (drawn on the generator's device when one is given)."""
    if generator is None:
        return torch.rand(n, device=device)
    return torch.rand(n, generator=generator, device=generator.device).to(device)


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator | None, device: torch.device) -> Tensor:
    return lo + (hi - lo) * _rand(n, generator, device)


def _valid_mask(lengths: Tensor, n: int) -> Tensor:
    """Returns a bool mask ``[B, n]``: True where the index is below each length."""
    return torch.arange(n, device=lengths.device) < lengths[:, None]


class WaveformAugment(nn.Module):
    """Random gain, additive noise at a random SNR and time stretch on zero-padded waveform batches.

    ``forward(wave [B, N], lengths [B] samples) -> (wave [B, N'], lengths [B])``; identity in eval mode or when the
    master switch is off. Order: stretch, then gain, then noise (so the SNR is relative to the final signal). Samples
    past each length stay exactly zero.

    The time stretch resamples the valid part by linear interpolation to ``round(length / rate)`` samples: a rate above
    1 shortens the note. Like playing a tape faster, this shifts the pitch too (by ``12 * log2(rate)`` semitones,
    about +-1.6 for the default 0.9-1.1); a phase vocoder would keep the pitch but smear the attack transients that
    tell dead notes apart. The batch is re-padded to the longest new length (``N'`` may differ from ``N``).
    """

    def __init__(self, aug_cfg: AugmentationConfig, sample_rate: int) -> None:
        super().__init__()
        self.cfg = aug_cfg
        self.sample_rate = sample_rate

    def forward(self, wave: Tensor, lengths: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Returns the augmented ``(wave [B, N'], lengths [B])``; unchanged outside training."""
        cfg = self.cfg
        if not self.training or not cfg.enabled:
            return wave, lengths
        if cfg.time_stretch.enabled and cfg.time_stretch.p > 0:
            wave, lengths = self.time_stretch(wave, lengths, generator)
        if cfg.gain.enabled and cfg.gain.p > 0:
            wave = self.gain(wave, lengths, generator)
        if cfg.noise.enabled and cfg.noise.p > 0:
            wave = self.noise(wave, lengths, generator)
        return wave, lengths

    def gain(self, wave: Tensor, lengths: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Returns ``wave`` with each chosen sample scaled by a random gain in ``[min_db, max_db]`` dB."""
        g = self.cfg.gain
        b, dev = wave.shape[0], wave.device
        chosen = _rand(b, generator, dev) < g.p
        db = torch.where(chosen, _uniform(b, g.min_db, g.max_db, generator, dev), torch.zeros((), device=dev))
        return wave * (10.0 ** (db / 20.0)).to(wave.dtype)[:, None]

    def noise(self, wave: Tensor, lengths: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Returns ``wave`` plus white noise at a random SNR (vs. each snippet's RMS over its valid samples)."""
        nz = self.cfg.noise
        b, n, dev = wave.shape[0], wave.shape[1], wave.device
        chosen = _rand(b, generator, dev) < nz.p
        snr_db = _uniform(b, nz.min_snr_db, nz.max_snr_db, generator, dev)
        valid = _valid_mask(lengths.to(dev), n).to(wave.dtype)  # (B, N)
        rms = ((wave**2 * valid).sum(1) / lengths.to(dev).clamp(min=1).to(wave.dtype)).sqrt()  # (B,)
        std = torch.where(chosen, rms / 10.0 ** (snr_db / 20.0), torch.zeros((), device=dev)).to(wave.dtype)
        if generator is None:
            white = torch.randn(wave.shape, device=dev, dtype=wave.dtype)
        else:
            white = torch.randn(wave.shape, generator=generator, device=generator.device).to(dev, wave.dtype)
        return wave + white * std[:, None] * valid

    def time_stretch(
        self, wave: Tensor, lengths: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Returns ``(wave [B, N'], lengths)`` with each chosen snippet resampled to ``round(length / rate)``."""
        ts = self.cfg.time_stretch
        b, dev = wave.shape[0], wave.device
        chosen = _rand(b, generator, dev) < ts.p
        rate = _uniform(b, ts.min_rate, ts.max_rate, generator, dev)
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
    masked = torch.zeros(b, n_freq, n_time, dtype=torch.bool, device=dev)
    f_idx = torch.arange(n_freq, device=dev)
    t_idx = torch.arange(n_time, device=dev)
    for _ in range(cfg.n_masks):
        fw = (_rand(b, generator, dev) * (min(cfg.freq_mask, n_freq) + 1)).floor()
        f0 = (_rand(b, generator, dev) * (n_freq - fw + 1)).floor()
        band = (f_idx >= f0[:, None]) & (f_idx < (f0 + fw)[:, None])  # (B, F)
        masked |= band[:, :, None] & valid[:, None, :]
        max_tw = torch.minimum(torch.full_like(lengths, cfg.time_mask), lengths)
        tw = (_rand(b, generator, dev) * (max_tw + 1)).floor()
        t0 = (_rand(b, generator, dev) * (lengths - tw + 1)).floor()
        span = (t_idx >= t0[:, None]) & (t_idx < (t0 + tw)[:, None])  # (B, T), inside [0, length)
        masked |= span[:, None, :]
    masked &= chosen[:, None, None]
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


__all__ = ["WaveformAugment", "mixup", "spec_augment"]
