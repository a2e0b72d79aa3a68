"""Per-recording domain randomization: each stage changes the signal, the chain keeps the length, the noise lands at
the drawn SNR, and one seed gives one chain."""

from __future__ import annotations

import numpy as np
import pytest

from guitar_cls.data import randomize

SR = 44100


def _tone(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return sum(np.sin(2 * np.pi * 196.0 * k * t) / k for k in range(1, 8)) * np.exp(-t / 0.5)


@pytest.mark.parametrize("stage", ["random_eq", "band_limit", "saturate", "reverb"])
def test_each_stage_changes_the_signal_and_keeps_the_length(stage):
    x, rng = _tone(), np.random.default_rng(0)
    if stage == "saturate":
        y = randomize.saturate(x, rng)
    elif stage == "reverb":
        y = randomize.reverb(x, SR, rng, wet=0.3)
    else:
        y = getattr(randomize, stage)(x, SR, rng)
    assert y.shape == x.shape and np.all(np.isfinite(y))
    assert np.abs(y - x).max() > 0.01 * np.abs(x).max()


def test_noise_lands_at_the_drawn_snr():
    x = _tone(2.0)
    rng = np.random.default_rng(4)
    noise = randomize.background_noise(x.size, SR, rng)
    assert noise.std() == pytest.approx(1.0, rel=1e-6)
    y, chain = randomize.randomize_recording(np.r_[x, np.zeros(SR)], SR, np.random.default_rng(4))
    assert 10.0 <= chain["snr_db"] <= 40.0 and -26.0 <= chain["peak_dbfs"] <= -1.0
    assert np.abs(y).max() == pytest.approx(10 ** (chain["peak_dbfs"] / 20), rel=0.02)  # rounded to 0.1 dB
    tail = y[-SR // 2 :]  # the silent end holds only the background noise
    snr = 20 * np.log10(randomize.active_rms(y, SR) / np.sqrt(np.mean(tail**2)))
    assert snr == pytest.approx(chain["snr_db"], abs=4.0)


def test_one_seed_one_chain():
    x = _tone()
    a, ca = randomize.randomize_recording(x, SR, np.random.default_rng(1))
    b, cb = randomize.randomize_recording(x, SR, np.random.default_rng(1))
    c, _ = randomize.randomize_recording(x, SR, np.random.default_rng(2))
    assert ca == cb and np.array_equal(a, b) and not np.array_equal(a, c)
