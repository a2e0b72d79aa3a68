"""Training losses: class-weighted cross-entropy / focal loss over hard or soft (mixup) targets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from guitar_cls.config import TrainingConfig
from guitar_cls.data.schema import LABEL_TO_INDEX, LABELS


def class_weights(counts: Sequence[int] | Mapping[str | int, int] | np.ndarray | Tensor) -> Tensor:
    """Returns balanced class weights ``n / (k * count)`` as a float32 tensor ``[k]``.

    ``counts`` is per class in ``LABELS`` order, or a mapping from label name (or index) to count (missing labels
    count 0). A class with no examples gets weight 0: it never appears as a target anyway.
    """
    if isinstance(counts, Mapping):
        arr = np.zeros(len(LABELS))
        for key, value in counts.items():
            arr[LABEL_TO_INDEX[key] if isinstance(key, str) else int(key)] = value
    else:
        arr = np.asarray(counts.tolist() if isinstance(counts, Tensor) else counts, dtype=np.float64)
    if arr.ndim != 1 or (arr < 0).any():
        raise ValueError(f"class counts must be a 1-d sequence of non-negative numbers, got {counts!r}")
    k, n = len(arr), arr.sum()
    weights = np.divide(n, k * arr, out=np.zeros_like(arr), where=arr > 0)
    return torch.as_tensor(weights, dtype=torch.float32)


class FocalLoss(nn.Module):
    """Focal loss ``-sum_c w_c t_c (1 - p_c)^gamma log p_c`` over hard ``[B]`` or soft ``[B, n]`` targets.

    With ``gamma=0`` it is (label-smoothed, class-weighted) cross-entropy and, for hard targets, equals
    ``F.cross_entropy(logits, y, weight, label_smoothing)``: the batch mean is weighted, dividing by the summed weight
    of the (unsmoothed) targets, ``sum_i sum_c w_c y_ic``. Soft targets use the same normaliser.
    """

    def __init__(self, gamma: float = 2.0, weight: Tensor | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if gamma < 0 or not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"FocalLoss: need gamma >= 0 and 0 <= label_smoothing < 1, got {gamma}, {label_smoothing}")
        self.gamma = float(gamma)
        self.label_smoothing = float(label_smoothing)
        self.weight: Tensor | None
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Returns the scalar loss of ``logits [B, n]`` against ``target`` (``[B]`` class ids or ``[B, n]`` probs)."""
        n = logits.shape[-1]
        logp = F.log_softmax(logits.float(), dim=-1)  # (B, n)
        y = F.one_hot(target.long(), n).float() if target.ndim == 1 else target.float()
        t = y * (1.0 - self.label_smoothing) + self.label_smoothing / n if self.label_smoothing else y
        w = torch.ones(n, device=logits.device) if self.weight is None else self.weight.to(logits.device)
        terms = -t * logp * w  # (B, n)
        if self.gamma:
            terms = terms * (1.0 - logp.exp()).clamp(min=0).pow(self.gamma)
        return terms.sum() / (y * w).sum().clamp(min=torch.finfo(torch.float32).tiny)


def build_loss(
    training_cfg: TrainingConfig, class_counts: Sequence[int] | Mapping[str | int, int] | Tensor
) -> nn.Module:
    """Returns the loss named by ``training_cfg.loss`` ("ce" or "focal") with its class weights and smoothing.

    Both accept hard ``[B]`` and soft ``[B, n]`` targets ("ce" is ``FocalLoss`` with ``gamma=0``).

    Raises:
        ValueError: for an unsupported loss or class-weighting name.
    """
    if training_cfg.class_weights == "balanced":
        weight = class_weights(class_counts)
    elif training_cfg.class_weights == "none":
        weight = None
    else:
        raise ValueError(f"unsupported class_weights: {training_cfg.class_weights!r} (known: 'balanced', 'none')")
    if training_cfg.loss == "ce":
        return FocalLoss(0.0, weight, training_cfg.label_smoothing)
    if training_cfg.loss == "focal":
        return FocalLoss(training_cfg.focal_gamma, weight, training_cfg.label_smoothing)
    raise ValueError(f"unsupported loss: {training_cfg.loss!r} (known: 'ce', 'focal')")
