"""The training loop in-process: batching, builders, learning, determinism and resuming."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from guitar_cls import inference
from guitar_cls.config import config_from_dict
from guitar_cls.inference import predict_proba
from guitar_cls.models import build_model
from guitar_cls.train import loop
from guitar_cls.train.checkpoint import load_model, save_checkpoint
from guitar_cls.train.loop import (
    SnippetSet,
    bucket_batches,
    build_optimizer,
    build_parts,
    build_scheduler,
    collate,
    fit,
    resolve_precision,
)

SR = 22050


def _toy_set(n: int, seed: int) -> SnippetSet:
    """Three easy classes: a pure high tone (0), a noise burst (1), a low tone with harmonics (2)."""
    rng = np.random.default_rng(seed)
    waves, labels = [], []
    for i in range(n):
        label = i % 3
        length = int(SR * rng.uniform(0.5, 1.2))
        t = np.arange(length) / SR
        env = np.exp(-t * rng.uniform(2, 6))
        if label == 0:
            w = np.sin(2 * np.pi * rng.uniform(1500, 2500) * t)
        elif label == 1:
            w = rng.standard_normal(length) * np.exp(-t * 40)
        else:
            f0 = rng.uniform(100, 200)
            w = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
        w = (w * env).astype(np.float32)
        waves.append(w / np.abs(w).max())
        labels.append(label)
    return SnippetSet(waves, np.array([len(w) for w in waves]), np.array(labels))


def _cfg(**training):
    cfg = config_from_dict(
        {
            "model": {"name": "resnet", "params": {"base_width": 8, "blocks": [1, 1, 1, 1]}},
            "features": {"n_mels": 32, "hop_length": 256, "n_fft": 1024},
            "training": {"epochs": 4, "batch_size": 16, "learning_rate": 3e-3, "use_gpu": False, **training},
        }
    )
    return cfg


def test_bucket_batches_cover_every_index_once_and_group_similar_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1000, 60000, 200)
    batches = bucket_batches(lengths, 16, shuffle=True, rng=rng)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(200))

    def padding(bs):  # fraction of the padded batch tensors that is padding
        return 1 - sum(lengths[b].sum() for b in bs) / sum(len(b) * lengths[b].max() for b in bs)

    random = bucket_batches(lengths, 16, shuffle=True, rng=rng, bucket=False)
    assert padding(batches) < 0.25 < 0.35 < padding(random)
    assert padding(bucket_batches(lengths, 16, shuffle=False)) < 0.1  # evaluation: fully sorted
    again = bucket_batches(lengths, 16, shuffle=True, rng=np.random.default_rng(1))
    assert [b.tolist() for b in again] != [b.tolist() for b in batches]


def test_collate_pads_with_zeros_and_keeps_lengths():
    data = SnippetSet([np.ones(5, np.float32), np.ones(3, np.float32)], np.array([5, 3]), np.array([0, 2]))
    waves, lengths, labels = collate(data, np.array([1, 0]), torch.device("cpu"))
    assert waves.shape == (2, 5)
    assert lengths.tolist() == [3, 5] and labels.tolist() == [2, 0]
    assert waves[0, 3:].abs().sum() == 0 and waves[0, :3].sum() == 3


def test_builders_reject_unknown_names():
    tc = _cfg().training
    params = [torch.nn.Parameter(torch.zeros(1))]
    with pytest.raises(ValueError, match="optimizer: 'lion'"):
        build_optimizer(params, dataclasses.replace(tc, optimizer="lion"))
    opt = build_optimizer(params, tc)
    assert opt.defaults["fused"]  # one kernel per step on CPU
    with pytest.raises(ValueError, match="scheduler: 'step'"):
        build_scheduler(opt, dataclasses.replace(tc, scheduler="step"), 10)


def test_loss_falls_and_the_model_learns_the_toy_task():
    train, val = _toy_set(96, 0), _toy_set(30, 1)
    summary = fit(_cfg(epochs=5), train, val)
    losses = [h["train/loss"] for h in summary["history"]]
    assert losses[-1] < 0.7 * losses[0]
    assert summary["best_metric"] > 0.8


def test_same_seed_gives_same_metrics_on_cpu():
    train, val = _toy_set(48, 0), _toy_set(15, 1)
    a = fit(_cfg(epochs=2), train, val)["history"]
    b = fit(_cfg(epochs=2), train, val)["history"]
    keys = ["train/loss", "val/balanced_accuracy", "val/macro_f1"]
    assert [[h[k] for k in keys] for h in a] == [[h[k] for k in keys] for h in b]


def test_resume_continues_after_the_checkpointed_epoch(tmp_path):
    train, val = _toy_set(48, 0), _toy_set(15, 1)
    saved = []
    fit(_cfg(epochs=1), train, val, report=lambda m, latest, best: saved.append(latest))
    resumed = fit(_cfg(epochs=3), train, val, resume=saved[-1])
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]


def test_early_stopping_stops_after_patience_without_improvement():
    train, val = _toy_set(30, 0), _toy_set(9, 1)
    summary = fit(_cfg(epochs=30, learning_rate=1e-7, early_stopping_patience=2, scheduler="none"), train, val)
    assert summary["stopped_early"]
    assert summary["epochs_run"] == summary["best_epoch"] + 3


def test_checkpoint_rebuilds_the_same_predictions(tmp_path):
    train, val = _toy_set(30, 0), _toy_set(9, 1)
    best = {}
    fit(_cfg(epochs=1), train, val, report=lambda m, latest, b: best.update(latest))
    path = save_checkpoint(best, tmp_path / "best.pt")
    model, frontend, cfg = load_model(path)
    assert cfg.model.params["base_width"] == 8
    p1 = predict_proba(model, frontend, val)
    p2 = predict_proba(model, frontend, val, batch_size=1)  # alone vs padded in a batch
    np.testing.assert_allclose(p1, p2, atol=1e-4)
    assert np.allclose(p1.sum(1), 1, atol=1e-5)


@pytest.mark.parametrize(
    ("amp", "supported", "expected"),
    [(None, True, torch.bfloat16), (None, False, None), (True, False, torch.bfloat16), (False, True, None)],
)
def test_amp_null_uses_bf16_on_cpu_only_where_supported(monkeypatch, amp, supported, expected):
    monkeypatch.setattr(loop, "cpu_bf16_supported", lambda: supported)
    cfg = _cfg(amp=amp)
    assert resolve_precision(cfg.training, torch.device("cpu")) == (expected, False)
    parts = build_parts(cfg, np.array([1, 1, 1]), 1, torch.device("cpu"))
    assert parts.amp_dtype == expected and not parts.channels_last
    # CUDA: amp unless disabled, channels-last as configured (a device object needs no GPU)
    cuda = torch.device("cuda")
    assert resolve_precision(cfg.training, cuda) == (None if amp is False else torch.bfloat16, True)


@pytest.mark.parametrize(
    ("mkldnn", "avx512_bf16", "amx", "expected"),
    [(True, True, False, True), (True, False, True, True), (True, False, False, False), (False, True, True, False)],
)
def test_cpu_bf16_detection_needs_onednn_and_a_bf16_unit(monkeypatch, mkldnn, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: mkldnn)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert loop.cpu_bf16_supported() is expected


def _padded_batch(seed: int, garbage: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns features (4, 1, 32, 60) whose frames past the lengths hold ``garbage``, and the lengths."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([60, 41, 17, 5])
    x = torch.rand(4, 1, 32, 60, generator=g)
    pad = torch.arange(60)[None, :] >= lengths[:, None]  # (B, T)
    return x.masked_fill(pad[:, None, None, :], garbage), lengths


def test_bf16_training_step_ignores_padding_exactly():
    """Under bf16 autocast the length masking still zeroes padding exactly: garbage there changes nothing at all."""
    grads, logits = [], []
    for garbage in (0.0, 7.5):
        torch.manual_seed(0)
        model = build_model("resnet", base_width=8, blocks=[1, 1, 1, 1], dropout=0.0)
        x, lengths = _padded_batch(0, garbage)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, lengths)
        torch.nn.functional.cross_entropy(out.float(), torch.tensor([0, 1, 2, 0])).backward()
        logits.append(out.detach())
        grads.append([p.grad.clone() for p in model.parameters()])
    assert logits[0].dtype == torch.bfloat16
    assert torch.equal(logits[0], logits[1])
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def test_bf16_logits_stay_close_to_fp32():
    torch.manual_seed(0)
    model = build_model("resnet", base_width=8, blocks=[1, 1, 1, 1]).eval()
    x, lengths = _padded_batch(1, 0.0)
    with torch.no_grad():
        fp32 = model(x, lengths)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(x, lengths).float()
    torch.testing.assert_close(bf16, fp32, atol=0.05 * fp32.abs().max().item(), rtol=0.0)


@pytest.mark.parametrize("name", ["resnet", "mobilenet_v3_small"])
def test_channels_last_model_gives_the_same_logits(name):
    torch.manual_seed(0)
    model = build_model(name, in_channels=2).eval()
    x, lengths = _padded_batch(2, 0.0)
    x = torch.cat([x, x.flip(2)], dim=1)  # two channels, so that channels-last is a different layout
    with torch.no_grad():
        plain = model(x, lengths)
        cl = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last), lengths)
    torch.testing.assert_close(cl, plain, atol=1e-4, rtol=1e-4)


class _ContiguousGradStem(torch.nn.Module):
    """A one-input-channel stem whose weight gradient comes out with contiguous strides whatever strides the weight
    has, as cuDNN's does for the stems of our models on an H200 (the CPU kernels follow the weight instead)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Parameter(torch.randn(4, 1, 3, 3))
        self.head = torch.nn.Conv2d(4, 3, 3)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        stem = self.stem.clone(memory_format=torch.contiguous_format)
        return self.head(torch.nn.functional.conv2d(x, stem)).mean(dim=(2, 3))


def _grad_stride_mismatches(model: torch.nn.Module, x: torch.Tensor, lengths: torch.Tensor) -> list[str]:
    model.train().zero_grad()
    model(x.contiguous(memory_format=torch.channels_last), lengths).sum().backward()
    return [n for n, p in model.named_parameters() if p.grad is not None and p.grad.stride() != p.stride()]


def test_channels_last_gives_each_weight_the_strides_of_its_gradient():
    # DDP warns "Grad strides do not match bucket view strides" and copies each step where they differ (H200)
    torch.manual_seed(0)
    model = _ContiguousGradStem()
    x, lengths = torch.randn(2, 1, 12, 20), torch.tensor([20, 20])
    plain = model(x, lengths).detach()
    assert _grad_stride_mismatches(_ContiguousGradStem().to(memory_format=torch.channels_last), x, lengths) == ["stem"]
    aligned = loop.to_channels_last(model, x, lengths)
    assert aligned.stem.stride() == (9, 9, 3, 1)  # the gradient's, not channels-last's (9, 1, 3, 1)
    assert aligned.head.weight.is_contiguous(memory_format=torch.channels_last)
    assert _grad_stride_mismatches(aligned, x, lengths) == []
    torch.testing.assert_close(aligned(x, lengths).detach(), plain)  # same weights, other strides


@pytest.mark.parametrize("name", ["resnet", "efficientnet_b0", "mobilenet_v3_small"])
def test_channels_last_alignment_keeps_every_models_outputs_and_grad_layouts(name):
    torch.manual_seed(0)
    model = build_model(name, in_channels=1).eval()
    x, lengths = _padded_batch(2, 0.0)
    with torch.no_grad():
        plain = model(x, lengths)
    aligned = loop.to_channels_last(model, x, lengths, torch.bfloat16)
    assert not aligned.training  # the mode it came in
    with torch.no_grad():
        torch.testing.assert_close(aligned(x.contiguous(memory_format=torch.channels_last), lengths), plain,
                                   atol=1e-4, rtol=1e-4)  # fmt: skip
    assert _grad_stride_mismatches(aligned, x, lengths) == []


def test_validation_features_are_computed_once_and_give_the_same_probabilities(monkeypatch):
    val = _toy_set(20, 3)
    cfg = _cfg(amp=False)
    parts = build_parts(cfg, val.class_counts(), 1, torch.device("cpu"))
    calls = []
    parts.frontend.register_forward_hook(lambda *_: calls.append(1))
    plain = predict_proba(parts.model, parts.frontend, val, 8)
    n_batches = len(calls)
    cache: list = []
    first = predict_proba(parts.model, parts.frontend, val, 8, feature_cache=cache)
    second = predict_proba(parts.model, parts.frontend, val, 8, feature_cache=cache)
    assert len(calls) == 2 * n_batches and len(cache) == n_batches  # the second call read the cache
    np.testing.assert_array_equal(first, plain)
    np.testing.assert_array_equal(second, plain)
    monkeypatch.setattr(inference, "FEATURE_CACHE_BYTES", 0)  # too big to keep: computed every time
    small: list = []
    predict_proba(parts.model, parts.frontend, val, 8, feature_cache=small)
    assert small == [] and len(calls) == 3 * n_batches


def test_the_metric_given_picks_the_best_epoch_and_ends_on_its_patience():
    train, val = _toy_set(30, 0), _toy_set(9, 1)
    seen = []
    summary = fit(
        _cfg(epochs=4, early_stopping_patience=10),
        train,
        val,
        metric="val/macro_f1",
        report=lambda m, latest, best: seen.append((m, best)),
    )
    f1 = [h["val/macro_f1"] for h in summary["history"]]
    assert summary["best_metric"] == pytest.approx(max(f1))
    assert f1[summary["best_epoch"]] == pytest.approx(max(f1)) and summary["best_epoch"] == f1.index(max(f1))
    assert summary["history"][-1]["best/val/macro_f1"] == pytest.approx(max(f1))
    assert summary["best_payload"]["epoch"] == summary["best_epoch"]
    assert all(m["early_stopped"] == 0 for m, _ in seen)
    loss = fit(_cfg(epochs=3), train, val, metric="train/loss", mode="min")
    losses = [h["train/loss"] for h in loss["history"]]
    assert loss["best_metric"] == pytest.approx(min(losses))


def test_the_epoch_that_ends_training_early_says_so():
    train, val = _toy_set(30, 0), _toy_set(9, 1)
    seen = []
    cfg = _cfg(epochs=30, learning_rate=1e-7, early_stopping_patience=2, scheduler="none")
    summary = fit(cfg, train, val, report=lambda m, latest, best: seen.append(m["early_stopped"]))
    assert summary["stopped_early"] and seen[-1] == 1 and set(seen[:-1]) == {0}


def test_weight_average_warms_up_then_follows_its_decay():
    net = torch.nn.Linear(1, 1, bias=False)
    ema = torch.optim.swa_utils.AveragedModel(net, multi_avg_fn=loop.ema_multi_avg_fn(0.9), use_buffers=True)
    with torch.no_grad():
        net.weight.fill_(0.0)
        ema.update_parameters(net)  # the first update copies
        net.weight.fill_(1.0)
        ema.update_parameters(net)  # n = 1: decay (1 + 1) / (10 + 1), not 0.9
    assert ema.module.weight.item() == pytest.approx(1 - 2 / 11)
    for _ in range(200):
        ema.update_parameters(net)
    before = ema.module.weight.item()
    with torch.no_grad():
        net.weight.fill_(2.0)
    ema.update_parameters(net)  # n > 80: the configured 0.9
    assert ema.module.weight.item() == pytest.approx(before + 0.1 * (2.0 - before))


def test_weight_average_is_what_validates_and_is_checkpointed():
    train, val = _toy_set(48, 0), _toy_set(15, 1)
    saved = []
    cfg = _cfg(epochs=2, ema_decay=0.9, amp=False)
    summary = fit(cfg, train, val, report=lambda m, latest, best: saved.append(latest))
    last = saved[-1]
    assert last["extra"]["ema_updates"] == 2 * 3  # 48 notes in batches of 16, two epochs
    raw, avg = last["train_state_dict"], last["state_dict"]
    assert any(not torch.equal(raw[k], avg[k]) for k in avg if avg[k].is_floating_point())
    model, frontend = inference.build_from_config(cfg, kwargs=last["model_kwargs"])
    for state, same in ((avg, True), (raw, False)):
        model.load_state_dict(state)
        ece = loop.classification_metrics(val.labels, predict_proba(model, frontend, val))["ece"]
        assert (ece == pytest.approx(summary["history"][-1]["val/ece"], abs=1e-6)) is same


def test_resume_restores_the_raw_weights_and_their_average():
    train, val = _toy_set(48, 0), _toy_set(15, 1)
    saved = []
    fit(_cfg(epochs=1, ema_decay=0.9), train, val, report=lambda m, latest, best: saved.append(latest))
    parts = build_parts(_cfg(epochs=3, ema_decay=0.9), train.class_counts(), 3, torch.device("cpu"))
    assert loop._resume(parts, saved[-1], loop.BestTracker()) == 1
    for net, key in ((parts.model, "train_state_dict"), (parts.ema.module, "state_dict")):
        assert all(torch.equal(v, saved[-1][key][k]) for k, v in net.state_dict().items())
    assert int(parts.ema.n_averaged) == saved[-1]["extra"]["ema_updates"] == 3
    assert (
        saved[-1]["train_state_dict"] is not None
        and fit(_cfg(epochs=1), train, val)["best_payload"]["train_state_dict"] is None
    )
