"""Augmentations: each changes the input when on, nothing when off or in eval; padding and targets stay sound.

Grouped by property: every waveform effect through ``WaveformAugment`` (changes, identity, lengths and padding,
reproducibility), then each pure effect function against what it claims (pitch, spectrum, decay, level), and batched
against one snippet at a time.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from guitar_cls.augment import (
    WaveformAugment,
    add_reverb,
    band_limit_response,
    eq_response,
    fft_filter,
    mix_in,
    mixup,
    saturate,
    shift_pitch,
    spec_augment,
    synthetic_rir,
)
from guitar_cls.config import AugmentationConfig, SpecAugmentConfig, load_config

SR = 8000
KINDS = (
    "gain",
    "noise",
    "cut_short",
    "time_stretch",
    "pitch_shift",
    "saturation",
    "eq",
    "reverb",
    "overlay",
    "band_limit",
)
KEEP_LENGTH = tuple(k for k in KINDS if k not in ("cut_short", "time_stretch"))
CHANGES_ON = {"time_stretch": {"min_rate": 1.2, "max_rate": 1.3}, "cut_short": {"min_sec": 0.1, "max_sec": 0.15}}
LEVEL_KEPT = ("saturation", "eq", "reverb", "band_limit")  # RMS-compensated


def _only(kind: str | None, p: float = 1.0, **kw) -> AugmentationConfig:
    """Returns a config with only ``kind`` switched on (probability ``p``)."""
    cfg = AugmentationConfig()
    for k in KINDS:
        sub = getattr(cfg, k)
        setattr(cfg, k, dataclasses.replace(sub, enabled=(k == kind), p=p if k == kind else sub.p))
    if kind is not None and kw:
        setattr(cfg, kind, dataclasses.replace(getattr(cfg, kind), **kw))
    return cfg


def _all_on(p: float = 1.0) -> AugmentationConfig:
    cfg = AugmentationConfig()
    for k in KINDS:
        setattr(cfg, k, dataclasses.replace(getattr(cfg, k), enabled=True, p=p))
    return cfg


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([4000, 2500, 1200])
    wave = torch.randn(3, 4000, generator=g) * 0.3
    return wave * (torch.arange(4000) < lengths[:, None]), lengths


def _sine(freq: float, n: int, sr: int = SR) -> torch.Tensor:
    return torch.sin(2 * math.pi * freq * torch.arange(n) / sr)


def _peak_hz(x: torch.Tensor, sr: int = SR) -> float:
    spec = torch.fft.rfft(x * torch.hann_window(len(x), periodic=False)).abs()
    return float(spec.argmax()) * sr / len(x)


def _band_db(x: torch.Tensor, lo: float, hi: float, sr: int = SR) -> float:
    """Returns the energy of ``x`` between ``lo`` and ``hi`` Hz, in dB."""
    spec = torch.fft.rfft(x * torch.hann_window(len(x), periodic=False)).abs().pow(2)
    f = torch.fft.rfftfreq(len(x), 1 / sr)
    return 10 * math.log10(float(spec[(f >= lo) & (f <= hi)].sum()) + 1e-20)


def _rms(x: torch.Tensor) -> float:
    return float(x.pow(2).mean().sqrt())


# --- WaveformAugment: every effect --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_waveform_augment_changes_input_when_on(kind: str) -> None:
    wave, lengths = _batch()
    aug = WaveformAugment(_only(kind, p=1.0, **CHANGES_ON.get(kind, {})), SR).train()
    out, out_len = aug(wave, lengths, generator=torch.Generator().manual_seed(1))
    if kind == "time_stretch":
        assert ((out_len >= torch.round(lengths / 1.3)) & (out_len <= torch.round(lengths / 1.2))).all()
        assert out.shape[1] == int(out_len.max())
    elif kind == "cut_short":  # every note ends 0.1-0.15 s in; what it keeps is untouched, the batch keeps its width
        assert ((out_len >= 0.1 * SR) & (out_len <= 0.15 * SR)).all()
        assert out.shape == wave.shape
        for i, n in enumerate(out_len.tolist()):
            assert torch.equal(out[i, :n], wave[i, :n])
    else:
        assert torch.equal(out_len, lengths)
        assert out.shape == wave.shape
        for i, n in enumerate(lengths.tolist()):  # p = 1: every snippet changes
            assert (out[i, :n] - wave[i, :n]).abs().max() > 1e-3, f"{kind}: row {i} unchanged"
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


def test_all_effects_together_keep_lengths_padding_and_input() -> None:
    wave, lengths = _batch()
    before = wave.clone()
    cfg = _all_on()
    cfg.time_stretch = dataclasses.replace(cfg.time_stretch, enabled=False)
    cfg.cut_short = dataclasses.replace(cfg.cut_short, enabled=False)
    out, out_len = WaveformAugment(cfg, SR).train()(wave, lengths, generator=torch.Generator().manual_seed(2))
    assert torch.equal(wave, before)  # the input batch is never written
    assert out.shape == wave.shape and torch.equal(out_len, lengths)
    assert torch.isfinite(out).all()
    assert (out[~(torch.arange(4000) < lengths[:, None])] == 0).all()


@pytest.mark.parametrize("kind", LEVEL_KEPT)
def test_level_compensated_effects_keep_each_rms(kind: str) -> None:
    wave, lengths = _batch()
    out, _ = WaveformAugment(_only(kind, p=1.0), SR).train()(wave, lengths, generator=torch.Generator().manual_seed(4))
    for i, n in enumerate(lengths.tolist()):
        assert _rms(out[i, :n]) == pytest.approx(_rms(wave[i, :n]), rel=1e-4)


def test_probability_picks_a_share_of_the_rows() -> None:
    g = torch.Generator().manual_seed(0)
    wave = torch.randn(400, 800, generator=g)
    lengths = torch.full((400,), 800)
    for kind in KEEP_LENGTH:
        out, _ = WaveformAugment(_only(kind, p=0.3), SR).train()(wave, lengths, generator=g)
        changed = (out != wave).any(1).float().mean().item()
        assert 0.22 < changed < 0.38, kind


def test_generator_makes_waveform_augment_reproducible() -> None:
    wave, lengths = _batch()
    for cfg in (AugmentationConfig(), _all_on()):
        aug = WaveformAugment(cfg, SR).train()
        a = aug(wave, lengths, generator=torch.Generator().manual_seed(7))
        b = aug(wave, lengths, generator=torch.Generator().manual_seed(7))
        c = aug(wave, lengths, generator=torch.Generator().manual_seed(8))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_waveform_augment_on_gpu_with_the_loops_cpu_generator() -> None:
    wave, lengths = _batch()
    aug = WaveformAugment(_all_on(), SR).train()
    out, out_len = aug(wave.cuda(), lengths.cuda(), generator=torch.Generator().manual_seed(3))
    again, _ = aug(wave.cuda(), lengths.cuda(), generator=torch.Generator().manual_seed(3))
    assert out.is_cuda and torch.equal(out, again)
    assert (out[~(torch.arange(out.shape[1], device="cuda") < out_len[:, None])] == 0).all()


def test_default_config_turns_the_robustness_effects_on_moderately() -> None:
    cfg = load_config().augmentation
    assert cfg == AugmentationConfig()  # default.yaml and the dataclass agree
    for kind in ("pitch_shift", "saturation", "eq", "reverb", "overlay", "band_limit"):
        sub = getattr(cfg, kind)
        assert sub.enabled and 0.2 <= sub.p <= 0.4, kind


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


def test_cut_short_only_shortens_notes_longer_than_the_drawn_length() -> None:
    wave, lengths = _batch()  # 0.5, 0.31 and 0.15 s
    aug = WaveformAugment(_only("cut_short", p=1.0, min_sec=0.2, max_sec=0.2), SR).train()
    out, out_len = aug(wave, lengths)
    assert out_len.tolist() == [1600, 1600, 1200]
    assert torch.equal(out[2], wave[2])
    assert (out[:2, 1600:] == 0).all() and torch.equal(out[:2, :1600], wave[:2, :1600])


def test_time_stretch_keeps_the_shape_of_a_ramp() -> None:
    lengths = torch.tensor([1000])
    wave = torch.linspace(0, 1, 1000)[None]
    aug = WaveformAugment(_only("time_stretch", p=1.0, min_rate=0.5, max_rate=0.5), SR).train()
    out, out_len = aug(wave, lengths)
    assert out_len.tolist() == [2000]
    torch.testing.assert_close(out[0], torch.linspace(0, 1, 2000), atol=1e-5, rtol=0)


def test_overlay_adds_the_previous_snippet_at_the_drawn_level() -> None:
    wave, lengths = _batch()
    aug = WaveformAugment(_only("overlay", p=1.0, min_db=-12.0, max_db=-12.0), SR).train()
    out, _ = aug(wave, lengths)
    for i, n in enumerate(lengths.tolist()):
        added = out[i, :n] - wave[i, :n]
        partner = wave[i - 1, :n]  # row 0 gets the last row
        scale = float(added @ partner / (partner @ partner))
        torch.testing.assert_close(added, scale * partner, atol=1e-5, rtol=0)
        assert 20 * math.log10(_rms(added) / _rms(wave[i, :n])) == pytest.approx(-12.0, abs=1e-3)
    lone, _ = aug(wave[:1], lengths[:1])
    assert torch.equal(lone, wave[:1])  # no partner, no change


# --- the pure effects: what each claims --------------------------------------------------------------------------


@pytest.mark.parametrize("semitones", [1.0, -1.0, 0.5])
def test_shift_pitch_moves_a_sine_and_keeps_length_and_onset(semitones: float) -> None:
    n, onset = 8000, 4000
    x = (_sine(440.0, n) * (torch.arange(n) >= onset))[None]
    out = shift_pitch(x, torch.tensor([n]), torch.tensor([semitones]), SR)
    assert out.shape == x.shape
    assert _peak_hz(out[0, onset:]) == pytest.approx(440.0 * 2 ** (semitones / 12), abs=2.0)
    rise = int((out[0].abs() > 0.5).nonzero()[0])
    assert abs(rise - onset) <= 64  # a resampled tape would move it by ~225 samples per semitone
    assert (out[0, : onset - 512] == 0).all()  # pre-echo stays within one STFT window
    assert _rms(out[0, onset:]) == pytest.approx(_rms(x[0, onset:]), rel=0.1)  # within 1 dB


def test_shift_pitch_keeps_an_attack_at_the_start() -> None:
    n = 4000
    x = torch.randn(1, n, generator=torch.Generator().manual_seed(0)) * torch.exp(-torch.arange(n) / 80.0)  # 10 ms
    for semitones in (1.0, -1.0):
        out = shift_pitch(x, torch.tensor([n]), torch.tensor([semitones]), SR)[0]
        energy = out.pow(2).cumsum(0)
        assert float(energy[160] / energy[-1]) > 0.95  # as in the input (0.99): the burst is not smeared out


def test_shift_pitch_by_zero_is_the_identity() -> None:
    wave, lengths = _batch()
    torch.testing.assert_close(shift_pitch(wave, lengths, torch.zeros(3), SR), wave, atol=1e-4, rtol=0)


def test_saturate_keeps_the_peak_and_adds_odd_harmonics() -> None:
    x = (0.5 * _sine(200.0, 8000))[None]
    out = saturate(x, torch.tensor([12.0]))
    assert float(out.abs().max()) == pytest.approx(0.5, rel=1e-5)
    torch.testing.assert_close(saturate(-x, torch.tensor([12.0])), -out)
    assert _band_db(x[0], 590, 610) - _band_db(x[0], 190, 210) < -80  # a clean sine
    assert _band_db(out[0], 590, 610) - _band_db(out[0], 190, 210) > -25  # third harmonic
    crest = [float(y.abs().max() / y.pow(2).mean().sqrt()) for y in (saturate(x, torch.tensor([18.0])), out, x)]
    assert crest[0] < crest[1] < crest[2]  # more drive, more compression


def test_eq_response_passes_through_its_control_points() -> None:
    gains = torch.tensor([[6.0, -6.0, 3.0, 0.0], [-2.0, 4.0, -8.0, 1.0]])
    lo, hi = 50.0, 3200.0
    points = lo * (hi / lo) ** (torch.arange(4) / 3)  # log-spaced
    freqs = torch.cat([points, torch.tensor([10.0, 3999.0])])
    db = 20 * torch.log10(eq_response(freqs, gains, (lo, hi)))
    torch.testing.assert_close(db[:, :4], gains, atol=1e-3, rtol=0)
    torch.testing.assert_close(db[:, 4:], gains[:, [0, -1]], atol=1e-3, rtol=0)  # flat outside the band
    mid = 20 * torch.log10(eq_response(torch.sqrt(points[:-1] * points[1:]), gains, (lo, hi)))
    torch.testing.assert_close(mid, (gains[:, :-1] + gains[:, 1:]) / 2, atol=1e-3, rtol=0)  # halfway in log-f


def test_eq_filter_scales_a_sine_by_the_curve() -> None:
    gains = torch.tensor([[9.0, 9.0, -9.0, -9.0]])
    lo, hi = 100.0, 3000.0
    x = (_sine(150.0, 8000) + _sine(2500.0, 8000))[None]
    out = fft_filter(x, torch.tensor([8000]), lambda f: eq_response(f, gains, (lo, hi)), SR)
    assert _band_db(out[0], 140, 160) - _band_db(x[0], 140, 160) == pytest.approx(9.0, abs=0.3)
    assert _band_db(out[0], 2490, 2510) - _band_db(x[0], 2490, 2510) == pytest.approx(-9.0, abs=0.3)


def test_band_limit_response_corners_slopes_and_off() -> None:
    freqs = torch.tensor([100.0, 200.0, 400.0, 1000.0, 2000.0, 4000.0])
    hp, lp, order = torch.tensor([200.0]), torch.tensor([2000.0]), torch.tensor([2.0])
    db = 20 * torch.log10(band_limit_response(freqs, hp, lp, order))[0]
    assert float(db[1]) == pytest.approx(-3.01, abs=0.05) and float(db[4]) == pytest.approx(-3.01, abs=0.05)
    assert float(db[5] - db[4]) == pytest.approx(-12.0 + 3.0, abs=1.0)  # 12 dB/octave, from -3 dB at the corner
    assert float(db[0]) < -11.0 and abs(float(db[3])) < 0.3
    off = band_limit_response(freqs, torch.zeros(1), torch.tensor([math.inf]), order)
    assert torch.equal(off, torch.ones_like(off))


def test_band_limit_filter_removes_what_lies_past_the_corners() -> None:
    x = (_sine(80.0, 8000) + _sine(700.0, 8000) + _sine(3500.0, 8000))[None]
    hp, lp, order = torch.tensor([300.0]), torch.tensor([1200.0]), torch.tensor([4.0])
    out = fft_filter(x, torch.tensor([8000]), lambda f: band_limit_response(f, hp, lp, order), SR)
    assert _band_db(out[0], 690, 710) - _band_db(x[0], 690, 710) == pytest.approx(0.0, abs=0.2)
    assert _band_db(out[0], 70, 90) - _band_db(x[0], 70, 90) < -40  # 24 dB/octave, 1.9 octaves below
    assert _band_db(out[0], 3490, 3510) - _band_db(x[0], 3490, 3510) < -35  # 1.5 octaves above


def test_synthetic_rir_decays_at_its_rt60() -> None:
    rt60 = torch.tensor([0.3, 0.8])
    rir = synthetic_rir(rt60, 8000, SR, generator=torch.Generator().manual_seed(0))
    assert rir.shape == (2, 8000)
    torch.testing.assert_close(rir.norm(dim=1), torch.ones(2))
    assert (rir[:, :8] == 0).all()  # no direct sound: reflections start after 1 ms
    win = int(0.05 * SR)

    def energy_db(row: int, start_sec: float) -> float:
        s = int(start_sec * SR)
        return 10 * math.log10(float(rir[row, s : s + win].pow(2).sum()))

    for row, t60 in enumerate(rt60.tolist()):  # 60 dB per rt60, measured between 0.1 s and 0.2 s
        assert energy_db(row, 0.1) - energy_db(row, 0.2) == pytest.approx(60 * 0.1 / t60, abs=3.0)
    again = synthetic_rir(rt60, 8000, SR, generator=torch.Generator().manual_seed(0))
    assert torch.equal(rir, again)


def test_add_reverb_of_an_impulse_is_the_mix_of_dry_and_rir() -> None:
    rir = synthetic_rir(torch.tensor([0.2, 0.2]), 600, SR, generator=torch.Generator().manual_seed(1))
    x = torch.zeros(2, 1000)
    x[:, 0] = 1.0
    lengths = torch.tensor([1000, 400])
    wet = torch.tensor([0.3, 0.6])
    out = add_reverb(x, lengths, rir, wet)
    expected = wet[:, None] * torch.nn.functional.pad(rir, (0, 400))
    expected[:, 0] += 1 - wet
    expected[1, 400:] = 0  # cut at the length
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_mix_in_scales_the_other_to_the_level_and_cuts_it() -> None:
    wave, lengths = _batch()
    other = torch.randn(3, 4000, generator=torch.Generator().manual_seed(5))  # not zero-padded
    out = mix_in(wave, lengths, other, torch.tensor([-6.0, -20.0, -10.0]))
    for i, (n, db) in enumerate(zip(lengths.tolist(), [-6.0, -20.0, -10.0])):
        added = out[i, :n] - wave[i, :n]
        assert 20 * math.log10(_rms(added) / _rms(wave[i, :n])) == pytest.approx(db, abs=1e-3)
        assert (out[i, n:] == 0).all()


# --- batched == one snippet at a time -----------------------------------------------------------------------------


def _per_item_cases() -> dict:
    g = torch.Generator().manual_seed(9)
    rir = synthetic_rir(torch.tensor([0.2, 0.5, 0.3]), 800, SR, generator=g)
    eq_gains = torch.tensor([[6.0, -6.0, 3.0, 0.0, -4.0], [-2.0, 4.0, -8.0, 1.0, 0.0], [0.0, 9.0, 0.0, -9.0, 2.0]])
    hp, lp, order = (
        torch.tensor([0.0, 150.0, 300.0]),
        torch.tensor([2000.0, math.inf, 3000.0]),
        torch.tensor([4.0, 2, 1]),
    )
    return {
        "shift_pitch": lambda x, n, i: shift_pitch(x, n, torch.tensor([0.7, -0.4, 1.0])[i], SR),
        "saturate": lambda x, n, i: saturate(x, torch.tensor([0.0, 9.0, 18.0])[i]),
        "eq": lambda x, n, i: fft_filter(x, n, lambda f: eq_response(f, eq_gains[i]), SR),
        "band_limit": lambda x, n, i: fft_filter(x, n, lambda f: band_limit_response(f, hp[i], lp[i], order[i]), SR),
        "reverb": lambda x, n, i: add_reverb(x, n, rir[i], torch.tensor([0.2, 0.5, 0.8])[i]),
    }


@pytest.mark.parametrize("name", ["shift_pitch", "saturate", "eq", "band_limit", "reverb"])
def test_effects_batched_equal_one_at_a_time(name: str) -> None:
    effect = _per_item_cases()[name]
    wave, lengths = _batch()
    batched = effect(wave, lengths, slice(None))
    assert batched.shape == wave.shape
    for i, n in enumerate(lengths.tolist()):
        single = effect(wave[i : i + 1, :n], lengths[i : i + 1], slice(i, i + 1))  # no padding at all
        torch.testing.assert_close(batched[i, :n], single[0], atol=1e-4, rtol=1e-4)
        assert (batched[i, n:] == 0).all()


# --- SpecAugment and mixup ---------------------------------------------------------------------------------------


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
