"""One way to build and run a model: ``build_from_config`` and the batched ``predict_proba``.

Training (``train.loop``: the model it trains, its validation), checkpoints (``train.checkpoint.load_model``),
prediction, evaluation, serving and the latency benchmark all build through ``build_from_config`` and predict through
``predict_proba``: the feature front end of ``cfg.features`` and the registered model of ``cfg.model``, fed
length-sorted, zero-padded batches of waveforms. Where the model comes from (a checkpoint, an MLflow URI) is
``predict.Classifier``'s business; this module only needs a ``Config``.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from guitar_cls.config import Config
from guitar_cls.data.schema import LABELS
from guitar_cls.features import FeatureFrontend, make_frontend
from guitar_cls.models import build_model

log = logging.getLogger(__name__)

FEATURE_CACHE_BYTES = 512 * 2**20  # validation features kept between epochs up to this size

# (indices, feats (B, C, F, T), frame lengths (B,)): one batch of the front end, as predict_proba's cache holds them
FeatureBatch = tuple[np.ndarray, torch.Tensor, torch.Tensor]


def model_kwargs(cfg: Config, in_channels: int) -> dict[str, Any]:
    """Returns the keyword arguments ``build_model`` gets for ``cfg`` (a checkpoint stores them verbatim)."""
    return {"n_classes": len(LABELS), "in_channels": in_channels, **cfg.model.params}


def build_from_config(
    cfg: Config, *, kwargs: dict[str, Any] | None = None, pretrained: bool = False
) -> tuple[nn.Module, FeatureFrontend]:
    """Returns ``(model, feature front end)`` of ``cfg`` with fresh weights (seeded by the caller's torch seed).

    Args:
        kwargs: the model's keyword arguments as a checkpoint stored them (default: ``model_kwargs(cfg, ...)``).
        pretrained: load ``cfg.model.pretrained`` weights into the model (training only; a checkpoint's state dict
            replaces them anyway).
    """
    frontend = make_frontend(cfg.features, cfg.data.sample_rate)
    kw = model_kwargs(cfg, frontend.in_channels) if kwargs is None else dict(kwargs)
    if pretrained and cfg.model.pretrained:
        kw["pretrained"] = cfg.model.pretrained
    return build_model(cfg.model.name, **kw), frontend


@dataclass
class Waves:
    """Unpadded 1-D waveforms and their lengths in samples: what ``predict_proba`` classifies."""

    waves: list[np.ndarray]
    lengths: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.waves)


def length_sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Returns batches of indices in order of length (stable), so that a batch pads little."""
    order = np.argsort(lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(lengths), batch_size)]


def pad_batch(data: Waves, idx: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (waves ``(B, N_max)`` zero-padded at the end, lengths ``(B,)``) of ``data[idx]`` on ``device``."""
    lengths = data.lengths[idx]
    out = np.zeros((len(idx), int(lengths.max())), dtype=np.float32)
    for row, i in enumerate(idx):
        out[row, : data.lengths[i]] = data.waves[i][: data.lengths[i]]
    return torch.from_numpy(out).to(device, non_blocking=True), torch.from_numpy(lengths).to(device)


def _feature_batches(frontend: nn.Module, data: Waves, batch_size: int, device: torch.device) -> Iterator[FeatureBatch]:
    """Yields ``(indices, feats (B, C, F, T), frame_lengths (B,))`` over ``data`` in length-sorted batches."""
    for idx in length_sorted_batches(data.lengths, batch_size):
        yield (idx, *frontend(*pad_batch(data, idx, device)))


def _feature_bytes(frontend: nn.Module, data: Waves, batch_size: int) -> int:
    """Returns the size of every padded fp32 feature batch of ``data`` (what ``feature_cache`` would hold)."""
    n_frames = getattr(frontend, "frames_for", None)
    if n_frames is None:
        return FEATURE_CACHE_BYTES + 1
    per_frame = 4 * frontend.in_channels * frontend.n_bins
    return sum(
        len(idx) * int(n_frames(int(data.lengths[idx].max()))) * per_frame
        for idx in length_sorted_batches(data.lengths, batch_size)
    )


@torch.no_grad()
def predict_proba(
    model: nn.Module,
    frontend: nn.Module,
    data: Waves,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    feature_cache: list[FeatureBatch] | None = None,
) -> np.ndarray:
    """Returns class probabilities ``(N, n_classes)`` for ``data`` (any ``Waves``, e.g. a ``SnippetSet``) in its own
    order; model and front end are put in eval mode.

    ``feature_cache``: a list owned by the caller for a ``data`` that does not change (validation): filled with the
    front end's batches on the first call when they fit in ``FEATURE_CACHE_BYTES``, then read instead of recomputing
    them (the front end is fixed and no augmentation applies outside training).
    """
    device = torch.device(device)
    model.eval()
    frontend.eval()
    out = np.zeros((len(data), len(LABELS)), dtype=np.float32)
    if feature_cache == [] and _feature_bytes(frontend, data, batch_size) <= FEATURE_CACHE_BYTES:
        feature_cache.extend(_feature_batches(frontend, data, batch_size, device))
    batches = feature_cache or _feature_batches(frontend, data, batch_size, device)
    ctx = torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
    for idx, feats, frames in batches:
        with ctx:
            logits = model(feats, frames)
        out[idx] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
    bad = int((~np.isfinite(out).all(axis=1)).sum())
    if bad:  # argmax would read them as the first label
        log.warning("%d of %d predictions are not finite (NaN or inf logits; amp %s)", bad, len(out), amp_dtype)
    return out


def mean_per_owner(probs: np.ndarray, owner: Sequence[int], n: int) -> np.ndarray:
    """Returns ``(n, n_classes)``: the mean of the rows of ``probs`` ``(W, n_classes)`` per owner index (a note cut
    into several windows), NaN for an owner without rows."""
    out = np.full((n, len(LABELS)), np.nan, dtype=np.float32)
    owner_arr = np.asarray(owner)
    for i in np.unique(owner_arr):
        out[i] = probs[owner_arr == i].mean(axis=0)
    return out


def median_ms(fn: Callable[[], object], *, runs: int = 20, warmup: int = 3, threads: int = 1) -> float:
    """Returns the median wall time in ms of ``runs`` calls of ``fn`` after ``warmup`` untimed ones, on ``threads``
    torch CPU threads (restored afterwards)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        times = []
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            fn()
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1000.0)
    finally:
        torch.set_num_threads(previous)
    return float(statistics.median(times))


def latency_ms(
    model: nn.Module,
    frontend: nn.Module,
    sample_rate: int,
    *,
    seconds: float = 1.0,
    runs: int = 20,
    warmup: int = 3,
    threads: int = 1,
) -> float:
    """Returns the median single-snippet CPU latency in ms (features + model) for ``seconds`` of audio, on
    ``threads`` CPU threads with model and front end moved to CPU in eval mode."""
    model, frontend = model.cpu().eval(), frontend.cpu().eval()
    n = int(round(seconds * sample_rate))
    wave = torch.from_numpy(np.random.default_rng(0).standard_normal((1, n)).astype(np.float32) * 0.1)
    lengths = torch.tensor([n])

    @torch.inference_mode()
    def classify() -> torch.Tensor:
        return model(*frontend(wave, lengths))

    return median_ms(classify, runs=runs, warmup=warmup, threads=threads)


def config_latency_ms(cfg: Config, *, seed: int = 0, **kw: Any) -> float:
    """Returns ``latency_ms`` of a random-weight model built from ``cfg`` (latency does not depend on the weights:
    what a sweep records per trial before training it)."""
    torch.manual_seed(seed)
    model, frontend = build_from_config(cfg)
    return latency_ms(model, frontend, cfg.data.sample_rate, **kw)
