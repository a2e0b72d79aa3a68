"""inference: one build from a config, one batched predict (batched == one at a time), latency timing."""

from __future__ import annotations

import numpy as np
import torch
from test_predict import note, tiny_checkpoint

from guitar_cls.config import config_from_dict
from guitar_cls.inference import (
    Waves,
    build_from_config,
    config_latency_ms,
    latency_ms,
    length_sorted_batches,
    mean_per_owner,
    model_kwargs,
    predict_proba,
)
from guitar_cls.train.checkpoint import load_model, read_checkpoint

TINY = {"model": {"name": "resnet", "params": {"base_width": 4, "blocks": [1, 1, 1, 1]}}, "features": {"n_mels": 32}}


def _waves(n: int) -> Waves:
    waves = [note(0.2 + 0.15 * i, f0=110.0 * (1 + i % 3), seed=i) for i in range(n)]
    return Waves(waves, np.array([len(w) for w in waves], dtype=np.int64))


def test_build_from_config_matches_the_config_and_a_checkpoint_rebuilds_it(tmp_path) -> None:
    cfg = config_from_dict(TINY, [("features.name", "hpss")])  # two channels
    model, frontend = build_from_config(cfg)
    model.eval()
    assert frontend.in_channels == 2 and model_kwargs(cfg, 2)["in_channels"] == 2
    assert model(*frontend(torch.zeros(1, 4000), torch.tensor([4000]))).shape == (1, 3)
    path = tiny_checkpoint(tmp_path / "best.pt")
    loaded, _, saved_cfg = load_model(path)
    rebuilt, _ = build_from_config(saved_cfg, kwargs=read_checkpoint(path)["model_kwargs"])
    assert rebuilt.state_dict().keys() == loaded.state_dict().keys()


def test_predict_proba_batched_equals_one_at_a_time_in_input_order(tmp_path) -> None:
    model, frontend, _ = load_model(tiny_checkpoint(tmp_path / "best.pt"))
    data = _waves(7)
    together = predict_proba(model, frontend, data, batch_size=4)
    alone = np.concatenate([predict_proba(model, frontend, Waves([w], data.lengths[i : i + 1])) for i, w in
                            enumerate(data.waves)])  # fmt: skip
    np.testing.assert_allclose(together, alone, atol=1e-4)
    np.testing.assert_allclose(together.sum(axis=1), 1.0, atol=1e-5)
    assert not np.allclose(together, together[::-1])  # rows are the items' own, not the sorted order


def test_short_notes_under_cpu_bf16_predict_as_in_fp32(tmp_path, caplog) -> None:
    """Length-sorted batches of 20-90 ms notes are a few frames wide: under CPU bf16 they must still give fp32's
    probabilities (PyTorch's bf16 strided convs return NaN there unless the model widens the batch)."""
    model, frontend, _ = load_model(tiny_checkpoint(tmp_path / "best.pt"))
    waves = [note(0.02 + 0.01 * i, f0=110.0 * (1 + i % 3), seed=i) for i in range(8)]
    data = Waves(waves, np.array([len(w) for w in waves], dtype=np.int64))
    fp32 = predict_proba(model, frontend, data, batch_size=4)
    with caplog.at_level("WARNING", logger="guitar_cls.inference"):
        bf16 = predict_proba(model, frontend, data, batch_size=4, amp_dtype=torch.bfloat16)
    assert np.isfinite(bf16).all() and not caplog.records
    np.testing.assert_allclose(bf16, fp32, atol=0.05)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with caplog.at_level("WARNING", logger="guitar_cls.inference"):
        predict_proba(model, frontend, data, batch_size=4)
    assert "8 of 8 predictions are not finite" in caplog.text


def test_length_sorted_batches_cover_every_index_once_shortest_first() -> None:
    lengths = np.array([5, 1, 4, 1, 3])
    batches = length_sorted_batches(lengths, 2)
    assert [b.tolist() for b in batches] == [[1, 3], [4, 2], [0]]


def test_mean_per_owner_averages_windows_and_leaves_missing_rows_nan() -> None:
    probs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    out = mean_per_owner(probs, [0, 0, 2], 3)
    np.testing.assert_allclose(out[0], [0.5, 0.5, 0.0])
    assert np.isnan(out[1]).all()
    np.testing.assert_allclose(out[2], [0.0, 0.0, 1.0])


def test_latency_ms_of_a_model_and_of_a_config_restores_threads() -> None:
    cfg = config_from_dict(TINY)
    model, frontend = build_from_config(cfg)
    threads = torch.get_num_threads()
    assert 0 < latency_ms(model, frontend, cfg.data.sample_rate, runs=3, warmup=1) < 5000
    assert torch.get_num_threads() == threads  # restored after timing on one thread
    assert 0 < config_latency_ms(cfg, runs=2, warmup=1) < 5000
