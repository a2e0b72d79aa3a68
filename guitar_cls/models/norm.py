"""Batch norm over valid frames only: the training statistics of a padded batch must not count the padding.

A random batch of notes mixes 0.5-s and 3-s snippets, so most of its time frames can be padding. Plain
``nn.BatchNorm2d`` in training mode averages over every frame: with 80 % padding (zeros after a masked conv) the batch
mean shrinks towards 0 and the variance by up to 5x, so the same note is normalised differently from batch to batch
and the running statistics (used in evaluation) average those biased values. :class:`MaskedBatchNorm2d` computes the
mean and variance over the valid frames of the batch (the ``LengthMasker``'s mask at the layer's time resolution),
updates the running statistics from them, and normalises every position with them. Without padding, in evaluation
mode and while tracing it is ``nn.BatchNorm2d`` itself; its parameters and buffers keep their names, so checkpoints
load either way.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class MaskedBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training statistics count the valid frames of a padded batch only.

    ``masker`` (set by ``LengthMasker``) gives the ``(B, 1, 1, T)`` mask of valid frames at the input's resolution.
    """

    masker: Any = None  # the LengthMasker of the model (not a submodule: it is no nn.Module)

    def forward(self, x: Tensor) -> Tensor:
        masker = self.masker
        if not self.training or masker is None or not masker.active or torch.jit.is_tracing():
            return super().forward(x)
        mask = masker.mask_for(x.shape[-1]).to(x.dtype)  # (B, 1, 1, T)
        count = mask.sum(dtype=torch.float32) * x.shape[-2]  # valid positions per channel
        masked = x * mask  # in x's dtype (bf16 under autocast); the sums accumulate in fp32
        mean = masked.sum(dim=(0, 2, 3), dtype=torch.float32) / count  # (C,)
        var = ((masked * x).sum(dim=(0, 2, 3), dtype=torch.float32) / count - mean * mean).clamp(min=0.0)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            self._update_running(mean.detach(), var.detach(), count.detach())
        scale = torch.rsqrt(var + self.eps)
        if self.affine:
            scale = scale * self.weight
        shift = -mean * scale + (self.bias if self.affine else 0.0)
        return x * scale.to(x.dtype)[None, :, None, None] + shift.to(x.dtype)[None, :, None, None]

    @torch.no_grad()
    def _update_running(self, mean: Tensor, var: Tensor, count: Tensor) -> None:
        """Updates the running statistics as ``nn.BatchNorm2d`` does (unbiased variance; cumulative average when
        ``momentum`` is None)."""
        assert self.num_batches_tracked is not None and self.running_mean is not None and self.running_var is not None
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * count / (count - 1).clamp(min=1)
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)


def mask_batchnorms(root: nn.Module, masker: Any) -> int:
    """Turns every plain ``nn.BatchNorm2d`` under ``root`` into a :class:`MaskedBatchNorm2d` reading ``masker``
    (in place: same parameters and buffers). Returns how many."""
    n = 0
    for module in root.modules():
        if type(module) is nn.BatchNorm2d or isinstance(module, MaskedBatchNorm2d):
            module.__class__ = MaskedBatchNorm2d
            module.masker = masker
            n += 1
    return n
