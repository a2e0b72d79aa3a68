"""The training loop: small functions returning metric dicts and one ``fit`` that runs plain, under Ray Train or in a
test.

Data arrive as processed waveforms (the featurization cache); augmentation, the feature front end and the model run
on the training device. Batches are bucketed by length so that little padding is computed.

Over 500 lines: the loop's parts (batching, precision, the weight average, validation over DDP ranks, early stopping,
resuming) are small functions that ``fit`` and the benchmarks use one by one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel

from guitar_cls.augment import WaveformAugment, mixup, spec_augment
from guitar_cls.config import Config, TrainingConfig
from guitar_cls.data.schema import LABELS
from guitar_cls.inference import Waves, build_from_config, length_sorted_batches, pad_batch, predict_proba
from guitar_cls.models.norm import mask_batchnorms
from guitar_cls.train.checkpoint import make_payload
from guitar_cls.train.losses import build_loss
from guitar_cls.train.metrics import classification_metrics

log = logging.getLogger(__name__)

METRIC = "val/balanced_accuracy"  # the default metric of early stopping and checkpoint ranking (a space picks its own)
EARLY_STOP_KEY = "early_stopped"  # 1 in the report of the epoch after which early stopping ends training


def best_key(metric: str = METRIC) -> str:
    """Returns the reported key of the best value of ``metric`` so far (the best checkpoint's score)."""
    return "best/" + metric


# report(metrics, latest_payload, best_payload_or_None): called once per epoch on every rank.
ReportFn = Callable[[dict[str, float], dict[str, Any], dict[str, Any] | None], None]


@dataclass
class SnippetSet(Waves):
    """Processed waveforms (unpadded), their lengths in samples (``Waves``) and integer labels."""

    labels: np.ndarray  # (N,) int64

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> SnippetSet:
        """Returns the set built from cache rows (columns ``waveform``, ``length``, ``label``)."""
        waves = [np.asarray(w, dtype=np.float32) for w in df["waveform"]]
        return cls(waves, df["length"].to_numpy(np.int64), df["label"].to_numpy(np.int64))

    def subset(self, idx: np.ndarray) -> SnippetSet:
        return SnippetSet([self.waves[i] for i in idx], self.lengths[idx], self.labels[idx])

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(LABELS))


def bucket_batches(
    lengths: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool,
    rng: np.random.Generator | None = None,
    bucket: bool = True,
    pool: int = 4,
) -> list[np.ndarray]:
    """Returns batches of indices grouped by length, so that little padding is computed.

    Without shuffling the whole set is sorted by length. With shuffling it is split into random pools of
    ``pool * batch_size`` items, each sorted by length and cut into batches: lengths stay close within a batch, while
    batches keep a mix of classes (a fully sorted order makes class-pure batches, since duration differs by class,
    and then batch-norm statistics in training stop matching the running statistics used in evaluation).
    """
    n = len(lengths)
    if not shuffle and bucket:
        return length_sorted_batches(lengths, batch_size)
    if not shuffle:
        return [np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    perm = rng.permutation(n)
    if bucket:
        size = max(1, pool) * batch_size
        perm = np.concatenate([p[np.argsort(lengths[p], kind="stable")] for p in np.split(perm, range(size, n, size))])
    batches = [perm[i : i + batch_size] for i in range(0, n, batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(data: SnippetSet, idx: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (waves (B, N_max) zero-padded, lengths (B,), labels (B,)) on ``device``."""
    return (*pad_batch(data, idx, device), torch.from_numpy(data.labels[idx]).to(device))


@dataclass
class TrainParts:
    """Everything one worker trains with."""

    model: nn.Module
    frontend: nn.Module
    augment: WaveformAugment
    loss: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    feature_caches: dict[str, list] = field(default_factory=dict)  # split prefix -> inference.predict_proba's cache
    ema: AveragedModel | None = None  # the moving average of the weights (training.ema_decay), else None

    @property
    def eval_model(self) -> nn.Module:
        """The network that validates, is checkpointed and registered: the weight average if there is one."""
        return self.ema.module if self.ema is not None else self.model


def build_optimizer(params: Any, tc: TrainingConfig) -> torch.optim.Optimizer:
    """Returns the optimizer named by ``tc.optimizer``.

    Adam/AdamW use the fused kernel when every parameter is a tensor on CPU or CUDA (on CPU an AdamW step over the
    brief's 11M-parameter ResNet takes 7 ms fused against 39 ms with the default per-tensor loops).
    """
    params = list(params)
    fused = bool(params) and all(isinstance(p, torch.Tensor) and p.device.type in ("cpu", "cuda") for p in params)
    if tc.optimizer == "adam":
        return torch.optim.Adam(params, lr=tc.learning_rate, weight_decay=tc.weight_decay, fused=fused or None)
    if tc.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=tc.learning_rate, weight_decay=tc.weight_decay, fused=fused or None)
    if tc.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=tc.learning_rate, momentum=tc.momentum, weight_decay=tc.weight_decay, nesterov=True
        )
    raise ValueError(f"unsupported optimizer: {tc.optimizer!r}")


def build_scheduler(optimizer: torch.optim.Optimizer, tc: TrainingConfig, steps_per_epoch: int) -> Any:
    """Returns the LR scheduler named by ``tc.scheduler`` (stepped per batch for one-cycle, per epoch otherwise)."""
    if tc.scheduler == "none":
        return None
    if tc.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=2)
    if tc.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=tc.epochs, eta_min=tc.learning_rate / 50)
    if tc.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=tc.learning_rate, total_steps=tc.epochs * max(steps_per_epoch, 1)
        )
    raise ValueError(f"unsupported scheduler: {tc.scheduler!r}")


def pick_device(tc: TrainingConfig) -> torch.device:
    """Returns cuda when ``use_gpu`` (or auto with a GPU present), else cpu."""
    want = torch.cuda.is_available() if tc.use_gpu is None else tc.use_gpu
    if want and not torch.cuda.is_available():
        raise RuntimeError("training.use_gpu is true but no CUDA device is visible")
    return torch.device("cuda", torch.cuda.current_device()) if want else torch.device("cpu")


def cpu_bf16_supported() -> bool:
    """Returns whether this CPU computes bf16 natively (AVX-512 BF16 or AMX tiles) and oneDNN can use it.

    Elsewhere bf16 is emulated and slower than fp32, so ``training.amp: null`` keeps fp32 there.
    """
    if not torch.backends.mkldnn.is_available():
        return False
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(probe is not None for probe in probes):
        return any(probe is not None and probe() for probe in probes)
    try:  # an older torch without the probes: the kernel's CPU flags
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(tc: TrainingConfig, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """Returns ``(autocast dtype or None, channels_last)`` for training and evaluation on ``device``.

    ``tc.amp`` None means "where it helps": bf16 on CUDA, and on a CPU with native bf16 (``cpu_bf16_supported``:
    the default resnet's step 1.6x faster on AVX-512 BF16); true forces bf16, false keeps fp32. Channels-last
    follows ``tc.channels_last`` on CUDA only: on CPU it made the brief's ResNet train 15 % faster
    (`benchmark.py train`), but a small fp32 model's training aborted inside PyTorch's CPU kernels (tests/test_loop.py
    toy task), so CPU training stays contiguous.
    """
    if tc.amp is None:
        on = device.type == "cuda" or (device.type == "cpu" and cpu_bf16_supported())
    else:
        on = tc.amp
    return (torch.bfloat16 if on else None), device.type == "cuda" and tc.channels_last


def to_channels_last(
    model: nn.Module, feats: torch.Tensor, frames: torch.Tensor, amp_dtype: torch.dtype | None = None
) -> nn.Module:
    """Returns ``model`` in channels-last memory format, each parameter with the strides of its own gradient.

    Where both formats hold the same memory (one input channel, a 1x1 kernel) the gradient's strides follow the
    layer's input, not the weight. On an H200 (cuDNN 9.19, 2026-12-04) the stem's ``(16, 1, 7, 7)`` weight got a
    contiguous gradient (its input has one channel), so did the squeeze-excitation 1x1 convolutions of EfficientNet and
    MobileNet (1x1 inputs), while ResNet's 1x1 shortcuts and the depthwise ``(C, 1, k, k)`` weights got channels-last
    ones. A weight whose strides differ from its gradient's makes DDP (and Ray Train's ``prepare_model``, which wraps
    in it) warn "Grad strides do not match bucket view strides" and copy that gradient at every step.

    So backward passes of the example ``feats``/``frames`` (eval mode, under the training autocast, no ``.grad``
    touched) show each gradient's strides and the parameter takes them, until none changes: re-striding a weight can
    change the layout of its layer's output and so of the next layer's gradient (the excitation's second convolution
    after its first; one pass left those 8 of EfficientNet's 109 parameters mismatched).
    """
    model = model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    model.eval()
    feats = feats.contiguous(memory_format=torch.channels_last)
    ctx = torch.autocast(device_type=feats.device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
    for _ in range(len(params)):  # each pass fixes at least one parameter or ends
        with ctx:
            out = model(feats, frames)
        grads = torch.autograd.grad(out.float().sum(), params, allow_unused=True)
        changed = [(p, g.stride()) for p, g in zip(params, grads) if g is not None and g.stride() != p.stride()]
        if not changed:
            break
        with torch.no_grad():
            for p, stride in changed:
                p.data = torch.empty_strided(p.shape, stride, dtype=p.dtype, device=p.device).copy_(p)
    model.train(was_training)
    return model


def ema_multi_avg_fn(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor], None]:
    """Returns an ``AveragedModel`` update: ``avg += (1 - d) * (new - avg)`` with ``d = min(decay, (1 + n) / (10 + n))``
    after ``n`` earlier updates, so that the average forgets the random initialisation within the first steps (as
    TensorFlow's and timm's model EMA do). Integer buffers (batch norms' step counts) are copied."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        n = float(n_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - d)
        else:
            for a, c in zip(averaged, current):
                a.copy_(c)

    return update


def build_parts(cfg: Config, class_counts: np.ndarray, steps_per_epoch: int, device: torch.device) -> TrainParts:
    """Returns model, front end, augmentation, loss, optimizer and scheduler for ``cfg`` on ``device``."""
    tc = cfg.training
    model, frontend = build_from_config(cfg, pretrained=True)
    if tc.masked_batchnorm and hasattr(model, "masker"):
        mask_batchnorms(model, model.masker)
    model, frontend = model.to(device), frontend.to(device)
    amp_dtype, channels_last = resolve_precision(tc, device)
    if channels_last:
        sr = cfg.data.sample_rate
        with torch.no_grad():  # one second of quiet noise: an example batch for the gradients' layouts
            example = frontend(torch.randn(2, sr, generator=torch.Generator().manual_seed(0)).mul_(1e-3).to(device),
                               torch.full((2,), sr, device=device))  # fmt: skip
        model = to_channels_last(model, *example, amp_dtype)
    optimizer = build_optimizer(model.parameters(), tc)
    weights_counts = torch.as_tensor(class_counts, dtype=torch.float32)
    ema = None
    if tc.ema_decay is not None:
        ema = AveragedModel(model, multi_avg_fn=ema_multi_avg_fn(tc.ema_decay), use_buffers=True).eval()
    return TrainParts(
        model=model,
        frontend=frontend,
        augment=WaveformAugment(cfg.augmentation, cfg.data.sample_rate).to(device),
        loss=build_loss(tc, weights_counts).to(device),
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, tc, steps_per_epoch),
        device=device,
        amp_dtype=amp_dtype,
        channels_last=channels_last,
        ema=ema,
    )


def _autocast(parts: TrainParts):
    if parts.amp_dtype is None:
        return nullcontext()
    return torch.autocast(device_type=parts.device.type, dtype=parts.amp_dtype)


def _features(parts: TrainParts, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    feats, frames = parts.frontend(waves, lengths)  # (B, C, F, T), (B,)
    if parts.channels_last:
        feats = feats.contiguous(memory_format=torch.channels_last)
    return feats, frames


def train_one_epoch(
    parts: TrainParts, data: SnippetSet, cfg: Config, batches: list[np.ndarray], generator: torch.Generator
) -> dict[str, float]:
    """Runs one epoch over ``batches`` of ``data`` and returns ``{"train/loss", "train/samples_per_s"}``."""
    parts.model.train()
    parts.augment.train()
    aug = cfg.augmentation
    total, count, t0 = 0.0, 0, time.perf_counter()
    for idx in batches:
        waves, lengths, labels = collate(data, idx, parts.device)
        with torch.no_grad():
            waves, lengths = parts.augment(waves, lengths, generator=generator)
            feats, frames = _features(parts, waves, lengths)
            if aug.enabled and aug.spec_augment.enabled:
                feats = spec_augment(feats, frames, aug.spec_augment, generator=generator)
            target: torch.Tensor = labels
            if aug.enabled and aug.mixup.enabled and torch.rand((), generator=generator).item() < aug.mixup.p:
                onehot = nn.functional.one_hot(labels, len(LABELS)).float()
                feats, target, frames = mixup(feats, onehot, aug.mixup.alpha, frames, generator=generator)
        with _autocast(parts):
            logits = parts.model(feats, frames)
        loss = parts.loss(logits.float(), target)
        parts.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(parts.model.parameters(), 5.0)
        parts.optimizer.step()
        if parts.ema is not None:
            parts.ema.update_parameters(parts.model)
        if isinstance(parts.scheduler, torch.optim.lr_scheduler.OneCycleLR):
            parts.scheduler.step()
        total += loss.item() * len(idx)
        count += len(idx)
    seconds = time.perf_counter() - t0
    return {"train/loss": total / max(count, 1), "train/samples_per_s": count / max(seconds, 1e-9)}


@contextmanager
def _exact_batchnorm_averages(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Makes batch norms keep a plain average of the batch statistics while active (momentum None).

    The running statistics start at mean 0 / variance 1; an exponential average with momentum 0.1 needs ~50 steps to
    forget that start, so after a short first epoch the eval-mode network was miscalibrated (the stem sees inputs of
    variance ~0.01) and predicted one class. Averaging the first epoch exactly removes the start-up bias.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] if enabled else []
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_predictions(idx: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns every rank's (indices, probabilities) concatenated and sorted by index (identity without DDP)."""
    rank, world = _world()
    if world == 1:
        return idx, probs
    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, (idx, probs))
    all_idx = np.concatenate([p[0] for p in parts])
    all_probs = np.concatenate([p[1] for p in parts])
    order = np.argsort(all_idx, kind="stable")
    return all_idx[order], all_probs[order]


def split_metrics(parts: TrainParts, data: SnippetSet, prefix: str, batch_size: int) -> dict[str, Any]:
    """Returns metrics of the whole split (every rank predicts its share; predictions are gathered)."""
    rank, world = _world()
    idx = np.arange(rank, len(data), world)
    cache = parts.feature_caches.setdefault(prefix, [])
    probs = predict_proba(
        parts.eval_model, parts.frontend, data.subset(idx), batch_size, parts.device, parts.amp_dtype, cache
    )
    idx, probs = gather_predictions(idx, probs)
    metrics = classification_metrics(data.labels[idx], probs)
    out = {f"{prefix}/{k}": v for k, v in metrics.items() if not isinstance(v, list)}
    for i, true in enumerate(LABELS):  # flattened so that Tune/MLflow can carry it as scalars
        for j, pred in enumerate(LABELS):
            out[f"{prefix}/cm/{true}/{pred}"] = int(metrics["confusion_matrix"][i][j])
    return out


def _shard_indices(n: int, rank: int, world: int, rng: np.random.Generator) -> np.ndarray:
    """Returns this rank's training indices; every rank gets the same count so DDP steps stay in lock-step."""
    perm = rng.permutation(n)
    per_rank = math.ceil(n / world)
    perm = np.concatenate([perm, perm[: per_rank * world - n]])
    return perm[rank::world]


@dataclass
class BestTracker:
    """The early-stopping state: the best value of ``metric`` so far (per ``mode``), its epoch, epochs since."""

    metric: str = METRIC
    mode: str = "max"
    best: float = -math.inf
    best_epoch: int = -1
    since_best: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ValueError(f"unsupported mode: {self.mode!r} (max or min)")
        if self.best_epoch < 0:
            self.best = -math.inf if self.mode == "max" else math.inf

    def update(self, value: float, epoch: int) -> bool:
        """Records one epoch's value; returns whether it improved on the best by more than 1e-6."""
        improved = value > self.best + 1e-6 if self.mode == "max" else value < self.best - 1e-6
        if improved:
            self.best, self.best_epoch, self.since_best = value, epoch, 0
        else:
            self.since_best += 1
        return improved


def _resume(parts: TrainParts, resume: dict[str, Any], tracker: BestTracker) -> int:
    """Loads a latest-checkpoint payload into ``parts`` and ``tracker``; returns the epoch to start from."""
    if parts.ema is not None and resume.get("train_state_dict") is not None:
        parts.model.load_state_dict(resume["train_state_dict"])
        parts.ema.module.load_state_dict(resume["state_dict"])
        parts.ema.n_averaged.fill_(int(resume["extra"]["ema_updates"]))
    else:  # no average saved (or none wanted now): train on from the weights that were checkpointed; a new average
        # (n_averaged 0) starts as a copy of them at its first update
        parts.model.load_state_dict(resume.get("train_state_dict") or resume["state_dict"])
    if resume.get("optimizer"):
        parts.optimizer.load_state_dict(resume["optimizer"])
    if parts.scheduler is not None and resume.get("scheduler"):
        parts.scheduler.load_state_dict(resume["scheduler"])
    tracker.best = resume["best_metric"]
    tracker.best_epoch = resume["extra"].get("best_epoch", -1)
    tracker.since_best = resume["extra"].get("since_best", 0)
    start_epoch = resume["epoch"] + 1
    log.info("resuming at epoch %d (best %s %.4f at epoch %d)", start_epoch, tracker.metric, tracker.best,
             tracker.best_epoch)  # fmt: skip
    return start_epoch


def _step_scheduler(parts: TrainParts, value: float, mode: str) -> None:
    """Steps a per-epoch LR scheduler (plateau on the tracked metric, made "higher is better"); one-cycle steps per
    batch in ``train_one_epoch``."""
    if isinstance(parts.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        parts.scheduler.step(value if mode == "max" else -value)
    elif parts.scheduler is not None and not isinstance(parts.scheduler, torch.optim.lr_scheduler.OneCycleLR):
        parts.scheduler.step()


def run_epoch(
    parts: TrainParts,
    cfg: Config,
    train: SnippetSet,
    val: SnippetSet,
    epoch: int,
    rng: np.random.Generator,
    generator: torch.Generator,
) -> dict[str, Any]:
    """Trains one epoch on this rank's shard, validates on the whole of ``val``; returns the epoch's metrics."""
    tc = cfg.training
    rank, world = _world()
    t0 = time.perf_counter()
    rank_batch = max(1, math.ceil(tc.batch_size / world))
    shard = train.subset(_shard_indices(len(train), rank, world, rng))
    batches = bucket_batches(shard.lengths, rank_batch, shuffle=True, rng=rng, bucket=tc.bucket_batches)
    metrics: dict[str, Any] = {"epoch": epoch}
    with _exact_batchnorm_averages(parts.model, enabled=epoch == 0):
        metrics.update(train_one_epoch(parts, shard, cfg, batches, generator))
    metrics.update(split_metrics(parts, val, "val", tc.batch_size))
    metrics["lr"] = parts.optimizer.param_groups[0]["lr"]
    metrics["epoch_s"] = time.perf_counter() - t0
    return metrics


def _payload(parts: TrainParts, cfg: Config, epoch: int, metrics: dict[str, Any], tracker: BestTracker) -> dict:
    """Returns the checkpoint payload after ``epoch`` (with the early-stopping state a resumed run continues); with a
    weight average its weights are the model's and the raw ones ride along for resuming."""
    extra = {"best_epoch": tracker.best_epoch, "since_best": tracker.since_best, "metric": tracker.metric}
    if parts.ema is not None:
        extra["ema_updates"] = int(parts.ema.n_averaged)
    return make_payload(
        parts.eval_model,
        cfg,
        parts.frontend.in_channels,
        epoch=epoch,
        metrics=metrics,
        best_metric=tracker.best,
        optimizer=parts.optimizer,
        scheduler=parts.scheduler,
        extra=extra,
        train_model=parts.model if parts.ema is not None else None,
    )


def fit(
    cfg: Config,
    train: SnippetSet,
    val: SnippetSet,
    *,
    report: ReportFn | None = None,
    resume: dict[str, Any] | None = None,
    wrap_model: Callable[[nn.Module], nn.Module] | None = None,
    device: torch.device | None = None,
    metric: str = METRIC,
    mode: str = "max",
) -> dict[str, Any]:
    """Trains ``cfg`` on ``train`` with early stopping on ``val`` and returns the summary.

    Args:
        report: called every epoch with (metrics, latest checkpoint payload, best payload or None); the epoch that
            ends training by early stopping carries ``EARLY_STOP_KEY`` = 1.
        resume: a latest-checkpoint payload to continue from (optimizer, scheduler, epoch, early-stopping state).
        wrap_model: e.g. ``ray.train.torch.prepare_model`` for DDP.
        device: defaults to ``pick_device(cfg.training)``.
        metric, mode: the validation metric (a key of the epoch's metrics, e.g. ``val/macro_f1``) that picks the best
            epoch and drives early stopping, and whether higher (``max``) or lower (``min``) is better.

    Returns:
        ``{"best_epoch", "best_metric", "epochs_run", "stopped_early", "history", "best_payload"}``; history holds
        per-epoch metrics.
    """
    tc = cfg.training
    rank, world = _world()
    device = device or pick_device(tc)
    torch.manual_seed(tc.seed)
    # training.batch_size is the global batch: each of the DDP ranks takes its share, so that the number of optimizer
    # steps and the samples per gradient (hence the learning-rate schedule) do not change with num_workers.
    steps = math.ceil(math.ceil(len(train) / world) / max(1, math.ceil(tc.batch_size / world)))
    parts = build_parts(cfg, train.class_counts(), steps, device)
    tracker = BestTracker(metric, mode)
    start_epoch = _resume(parts, resume, tracker) if resume is not None else 0
    rng = np.random.default_rng([tc.seed, start_epoch] if start_epoch else tc.seed)
    if wrap_model is not None:
        parts.model = wrap_model(parts.model)
    generator = torch.Generator(device="cpu").manual_seed(tc.seed * 1000 + rank + start_epoch)
    history: list[dict[str, Any]] = []
    best_payload: dict[str, Any] | None = None
    stopped_early = False
    for epoch in range(start_epoch, tc.epochs):
        metrics = {**run_epoch(parts, cfg, train, val, epoch, rng, generator), "start_epoch": start_epoch}
        if metric not in metrics:
            raise KeyError(f"metric {metric!r} is not among the epoch's metrics ({', '.join(sorted(metrics))})")
        _step_scheduler(parts, metrics[metric], mode)
        improved = tracker.update(metrics[metric], epoch)
        stopped_early = tracker.since_best >= tc.early_stopping_patience
        metrics[best_key(metric)] = tracker.best
        metrics[EARLY_STOP_KEY] = int(stopped_early)
        history.append(metrics)
        if rank == 0:
            log.info("epoch %d  loss %.4f  %s %.4f  (best %.4f @ %d)  %.1fs", epoch, metrics["train/loss"], metric,
                     metrics[metric], tracker.best, tracker.best_epoch, metrics["epoch_s"])  # fmt: skip
        latest = _payload(parts, cfg, epoch, metrics, tracker)
        if improved:
            best_payload = latest
        if report is not None:
            report(metrics, latest, latest if improved else None)
        if stopped_early:
            if rank == 0:
                log.info("early stop: no improvement in %s for %d epochs", metric, tracker.since_best)
            break
    return {
        "best_epoch": tracker.best_epoch,
        "best_metric": tracker.best,
        "epochs_run": len(history),
        "stopped_early": stopped_early,
        "history": history,
        "best_payload": best_payload,
    }
