"""Feature front ends: known-tone peaks, masking of padding, batch consistency, shapes per registered feature."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from guitar_cls.config import FeatureConfig
from guitar_cls.features import FEATURES, block_power_spectrogram, frames_for, make_frontend, stft_kernels

SR = 22050


def _sine(freq: float, seconds: float) -> torch.Tensor:
    t = np.arange(int(seconds * SR)) / SR
    return torch.tensor(np.sin(2 * np.pi * freq * t), dtype=torch.float32)


def test_logmel_sine_peaks_in_the_right_mel_bin() -> None:
    import librosa

    cfg = FeatureConfig()
    fe = make_frontend(cfg, SR)
    feats, _ = fe(_sine(1000.0, 1.0)[None], torch.tensor([SR]))
    centres = librosa.mel_frequencies(cfg.n_mels + 2, fmin=cfg.f_min, fmax=cfg.f_max)[1:-1]
    expected = int(np.argmin(np.abs(centres - 1000.0)))
    peak = feats[0, 0].mean(dim=-1).argmax().item()
    assert abs(peak - expected) <= 1
    assert feats.max().item() == pytest.approx(1.0)
    assert feats.min().item() >= 0.0


def test_logmel_matches_librosa_melspectrogram() -> None:
    import librosa

    cfg = FeatureConfig()
    wave = _sine(440.0, 0.6) + 0.1 * torch.randn(int(0.6 * SR), generator=torch.Generator().manual_seed(0))
    feats, fl = make_frontend(cfg, SR)(wave[None], torch.tensor([wave.numel()]))
    mel = librosa.feature.melspectrogram(
        y=wave.numpy(), sr=SR, n_fft=2048, hop_length=128, n_mels=128, fmin=80, fmax=8000, center=False
    )
    db = librosa.power_to_db(mel, ref=np.max, top_db=cfg.top_db) / cfg.top_db + 1.0
    assert fl.item() == db.shape[1]
    np.testing.assert_allclose(feats[0, 0].numpy(), db, atol=2e-3)


def test_cqt_and_chroma_find_the_note() -> None:
    wave = _sine(440.0, 1.0)[None]
    n = torch.tensor([SR])
    cqt = make_frontend(FeatureConfig(name="cqt"), SR)
    k = cqt(wave, n)[0][0, 0].mean(-1).argmax().item()
    assert abs(80.0 * 2 ** (k / 12) - 440.0) < 440.0 * 0.03  # within half a semitone
    chroma = make_frontend(FeatureConfig(name="chroma"), SR)
    assert chroma(wave, n)[0][0, 0].mean(-1).argmax().item() == 9  # A, counting from C


@pytest.mark.parametrize("name", list(FEATURES))
def test_alone_equals_padded_batch_and_padding_is_zero(name: str) -> None:
    fe = make_frontend(FeatureConfig(name=name), SR)
    g = torch.Generator().manual_seed(1)
    short = _sine(330.0, 0.5) * torch.linspace(1, 0, int(0.5 * SR))
    long = torch.randn(int(1.3 * SR), generator=g)
    alone, fl_alone = fe(short[None], torch.tensor([short.numel()]))
    batch = torch.full((2, long.numel()), 3.0)  # garbage past the short snippet's length must not leak in
    batch[0, : short.numel()] = short
    batch[1] = long
    feats, fl = fe(batch, torch.tensor([short.numel(), long.numel()]))
    t = int(fl_alone[0])
    assert fl[0] == t == frames_for(short.numel(), fe.n_fft, fe.hop_length) == alone.shape[-1]
    assert fl[1] == feats.shape[-1] == fe.frames_for(long.numel())
    assert feats.shape[1:3] == (fe.in_channels, fe.n_bins)
    assert torch.allclose(feats[0, :, :, :t], alone[0], atol=1e-5)
    assert torch.equal(feats[0, :, :, t:], torch.zeros_like(feats[0, :, :, t:]))


def test_frames_for_formula_and_short_snippets() -> None:
    assert frames_for(2048) == 1 and frames_for(100) == 1 and frames_for(2048 + 128) == 2
    assert frames_for(2048 + 127) == 1
    assert frames_for(torch.tensor([100, 11025])).tolist() == [1, 1 + (11025 - 2048) // 128]
    fe = make_frontend(FeatureConfig(), SR)
    feats, fl = fe(torch.ones(1, 300), torch.tensor([300]))
    assert feats.shape[-1] == 1 and fl.tolist() == [1]


def test_unknown_feature_raises_listing_known() -> None:
    cfg = FeatureConfig()
    cfg.name = "mfcc"
    with pytest.raises(ValueError, match="logmel"):
        make_frontend(cfg, SR)


@pytest.mark.parametrize("name", list(FEATURES))
def test_valid_frame_path_equals_the_dense_stft(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eager mode transforms only the valid frames; tracing/export uses the dense STFT: same features either way."""
    import guitar_cls.features as features

    fe = make_frontend(FeatureConfig(name=name), SR)
    g = torch.Generator().manual_seed(2)
    lengths = torch.tensor([900, 2048, 2175, 11025, int(1.7 * SR)])  # below, at and just past n_fft, longer
    batch = torch.randn(len(lengths), int(lengths.max()), generator=g) * 0.3
    sparse, fl_sparse = fe(batch, lengths)
    monkeypatch.setattr(features, "is_tracing", lambda: True)
    dense, fl_dense = fe(batch, lengths)
    assert torch.equal(fl_sparse, fl_dense)
    torch.testing.assert_close(sparse, dense, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n", [300, 2047, 2048, 2100])
def test_snippets_near_n_fft_ignore_garbage_padding(n: int) -> None:
    """A snippet shorter than n_fft has one frame reaching into the padding; what the batch holds there is ignored."""
    fe = make_frontend(FeatureConfig(), SR)
    short = torch.randn(n, generator=torch.Generator().manual_seed(3))
    alone, fl_alone = fe(short[None], torch.tensor([n]))
    batch = torch.full((2, 3 * SR // 2), 5.0)
    batch[0, :n] = short
    feats, fl = fe(batch, torch.tensor([n, batch.shape[1]]))
    t = int(fl_alone[0])
    assert fl[0] == t
    torch.testing.assert_close(feats[0, :, :, :t], alone[0], atol=1e-5, rtol=0)
    assert torch.equal(feats[0, :, :, t:], torch.zeros_like(feats[0, :, :, t:]))


def test_front_end_stays_fp32_under_bf16_autocast() -> None:
    fe = make_frontend(FeatureConfig(), SR)
    wave = _sine(440.0, 0.8)[None] * 0.5
    n = torch.tensor([wave.shape[1]])
    plain, _ = fe(wave, n)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, _ = fe(wave, n)
    assert mixed.dtype == torch.float32
    assert torch.equal(plain, mixed)


@pytest.mark.parametrize(
    ("n_fft", "hop", "band"),
    [(2048, 128, (7, 744)), (1024, 96, (0, 513)), (512, 512, (3, 40)), (256, 64, (1, 129))],
    ids=["default", "hop-not-dividing", "no-overlap", "to-nyquist"],
)
def test_block_stft_equals_torch_stft(n_fft: int, hop: int, band: tuple[int, int]) -> None:
    """The export path's STFT (blocks of gcd(n_fft, hop) samples) gives torch.stft's Hann power, band edges included."""
    g = torch.Generator().manual_seed(4)
    lengths = torch.tensor([n_fft + 5 * hop + 7, 3 * n_fft + 1])
    wave = torch.randn(2, int(lengths.max()), generator=g)
    k = stft_kernels(n_fft, hop, band)
    power, fl = block_power_spectrogram(wave, lengths, k.dft, k.taps, n_fft, hop)
    zeroed = wave * (torch.arange(wave.shape[1]) < lengths[:, None])
    ref = torch.stft(zeroed.double(), n_fft, hop, window=torch.hann_window(n_fft, dtype=torch.float64), center=False,
                     return_complex=True)[:, band[0] : band[1]].abs().square()  # fmt: skip
    assert power.shape == ref.shape and fl.tolist() == [frames_for(int(n), n_fft, hop) for n in lengths]
    torch.testing.assert_close(power.double(), ref, atol=1e-5 * float(ref.max()), rtol=1e-4)


def test_mel_bank_is_multiplied_by_its_blocks_only() -> None:
    """The mel bank's blocks cover every nonzero entry (same product as dense), and do a fraction of its work."""
    from guitar_cls.features import basis_blocks, project

    fe = make_frontend(FeatureConfig(), SR)
    blocks = fe.basis_blocks
    assert len(blocks) > 1 and [b[0] for b in blocks[1:]] == [b[1] for b in blocks[:-1]]  # consecutive rows
    assert sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in blocks) * 4 < fe.basis.numel()
    spec = torch.rand(2, fe.basis.shape[1], 7, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(project(fe.basis, spec, blocks), fe.basis @ spec, atol=1e-6, rtol=1e-5)
    chroma = make_frontend(FeatureConfig(name="chroma"), SR).basis
    assert basis_blocks(chroma) == ((0, chroma.shape[0], 0, chroma.shape[1]),)  # dense: one block
