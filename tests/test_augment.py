"""Augmentations: each changes the input when on, nothing when off or in eval; padding and targets stay sound."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from guitar_cls.augment import WaveformAugment, mixup, spec_augment
from guitar_cls.config import AugmentationConfig, SpecAugmentConfig

SR = 8000
KINDS = ("gain", "noise", "time_stretch")


def _only(kind: str | None, p: float = 1.0, **kw) -> AugmentationConfig:
    """Returns a config with only ``kind`` switched on (probability ``p``)."""
    cfg = AugmentationConfig()
    for k in KINDS:
        sub = getattr(cfg, k)
        setattr(cfg, k, dataclasses.replace(sub, enabled=(k == kind), p=p if k == kind else sub.p))
    if kind is not None and kw:
        setattr(cfg, kind, dataclasses.replace(getattr(cfg, kind), **kw))
    return cfg


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([4000, 2500, 1200])
    wave = torch.randn(3, 4000, generator=g) * 0.3
    return wave * (torch.arange(4000) < lengths[:, None]), lengths


@pytest.mark.parametrize("kind", KINDS)
def test_waveform_augment_changes_input_when_on(kind: str) -> None:
    wave, lengths = _batch()
    aug = WaveformAugment(
        _only(kind, p=1.0, **({"min_rate": 1.2, "max_rate": 1.3} if kind == "time_stretch" else {})), SR
    ).train()
    out, out_len = aug(wave, lengths, generator=torch.Generator().manual_seed(1))
    if kind == "time_stretch":
        assert ((out_len >= torch.round(lengths / 1.3)) & (out_len <= torch.round(lengths / 1.2))).all()
        assert out.shape[1] == int(out_len.max())
    else:
        assert torch.equal(out_len, lengths)
        assert out.shape == wave.shape
        assert not torch.allclose(out, wave)
    valid = torch.arange(out.shape[1]) < out_len[:, None]
    assert (out[~valid] == 0).all()  # padding stays exactly zero


@pytest.mark.parametrize("kind", KINDS)
def test_waveform_augment_is_identity_when_off(kind: str) -> None:
    wave, lengths = _batch()
    for cfg in (_only(kind, p=0.0), _only(None), dataclasses.replace(_only(kind, p=1.0), enabled=False)):
        out, out_len = WaveformAugment(cfg, SR).train()(wave, lengths)
        assert torch.equal(out, wave) and torch.equal(out_len, lengths)
    out, out_len = WaveformAugment(_only(kind, p=1.0), SR).eval()(wave, lengths)
    assert torch.equal(out, wave) and torch.equal(out_len, lengths)


def test_gain_is_in_range_and_noise_hits_the_snr() -> None:
    wave, lengths = _batch()
    aug = WaveformAugment(_only("gain", p=1.0, min_db=6.0, max_db=6.0), SR).train()
    out, _ = aug(wave, lengths)
    torch.testing.assert_close(out, wave * 10 ** (6 / 20))
    aug = WaveformAugment(_only("noise", p=1.0, min_snr_db=20.0, max_snr_db=20.0), SR).train()
    out, _ = aug(wave, lengths, generator=torch.Generator().manual_seed(3))
    for i, n in enumerate(lengths.tolist()):
        signal = wave[i, :n].pow(2).mean()
        noise = (out[i, :n] - wave[i, :n]).pow(2).mean()
        assert 10 * torch.log10(signal / noise) == pytest.approx(20.0, abs=0.5)


def test_time_stretch_keeps_the_shape_of_a_ramp() -> None:
    lengths = torch.tensor([1000])
    wave = torch.linspace(0, 1, 1000)[None]
    aug = WaveformAugment(_only("time_stretch", p=1.0, min_rate=0.5, max_rate=0.5), SR).train()
    out, out_len = aug(wave, lengths)
    assert out_len.tolist() == [2000]
    torch.testing.assert_close(out[0], torch.linspace(0, 1, 2000), atol=1e-5, rtol=0)


def test_generator_makes_waveform_augment_reproducible() -> None:
    wave, lengths = _batch()
    aug = WaveformAugment(AugmentationConfig(), SR).train()
    a = aug(wave, lengths, generator=torch.Generator().manual_seed(7))
    b = aug(wave, lengths, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def _feats() -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([50, 30, 9])
    feats = torch.rand(3, 2, 16, 50) + 1.0  # strictly positive, so a mask (0) is visible
    feats = torch.where(torch.arange(50) < lengths[:, None, None, None], feats, torch.full_like(feats, 7.0))
    return feats, lengths


def test_spec_augment_masks_valid_frames_only() -> None:
    feats, lengths = _feats()
    cfg = SpecAugmentConfig(enabled=True, p=1.0, freq_mask=6, time_mask=20, n_masks=2)
    for seed in range(20):
        out = spec_augment(feats, lengths, cfg, generator=torch.Generator().manual_seed(seed))
        padding = ~(torch.arange(50) < lengths[:, None])  # (B, T)
        assert torch.equal(
            out[padding[:, None, None, :].expand_as(out)],
            feats[padding[:, None, None, :].expand_as(feats)],
        )  # sentinel 7.0 untouched
        changed = out != feats
        assert ((out == 0) | ~changed).all()  # masks write zeros, nothing else changes
        # Masks span whole channels: the same positions in both channels.
        assert torch.equal(changed[:, 0], changed[:, 1])
    assert (spec_augment(feats, lengths, cfg, generator=torch.Generator().manual_seed(0)) != feats).any()


def test_spec_augment_off_is_identity() -> None:
    feats, lengths = _feats()
    for cfg in (SpecAugmentConfig(enabled=False, p=1.0), SpecAugmentConfig(p=0.0), SpecAugmentConfig(n_masks=0)):
        assert torch.equal(spec_augment(feats, lengths, cfg), feats)


def test_mixup_targets_sum_to_one_and_lengths_are_pair_max() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 1, 4, 10)
    y = torch.nn.functional.one_hot(torch.arange(8) % 3, 3).float()
    lengths = torch.arange(3, 11)
    x_mix, y_mix, l_mix = mixup(x, y, alpha=0.4, lengths=lengths, generator=g)
    torch.testing.assert_close(y_mix.sum(1), torch.ones(8))
    assert not torch.allclose(x_mix, x)
    # Recover each sample's partner and weight from the targets and check x and lengths against them.
    g2 = torch.Generator().manual_seed(0)
    perm = torch.randperm(8, generator=g2)
    lam = 1 - (y_mix - y).abs().sum(1) / (y - y[perm]).abs().sum(1).clamp(min=1e-9)
    for i in range(8):
        if not torch.equal(y[i], y[perm[i]]):
            torch.testing.assert_close(x_mix[i], lam[i] * x[i] + (1 - lam[i]) * x[perm[i]], atol=1e-5, rtol=0)
        assert l_mix[i] == max(lengths[i], lengths[perm[i]])


def test_mixup_with_p_zero_changes_nothing() -> None:
    x = torch.randn(6, 20)
    y = torch.nn.functional.one_hot(torch.arange(6) % 3, 3).float()
    lengths = torch.arange(10, 16)
    x_mix, y_mix, l_mix = mixup(x, y, alpha=0.4, lengths=lengths, p=0.0)
    assert torch.equal(x_mix, x) and torch.equal(y_mix, y) and torch.equal(l_mix, lengths)
