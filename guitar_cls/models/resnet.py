"""The brief's HarmonicsClassifier: a ResNet-18-style CNN over ``[B, C, F, T]`` features with an MLP head.

Layout: 7x7 stride-2 stem + BN + ReLU + 3x3 stride-2 max-pool, four stages of :class:`BasicBlock` with widths
``b, 2b, 4b, 8b`` (strides 1, 2, 2, 2), pooling over valid frames, then the head ``D -> 256 -> 128 -> n_classes``
with ReLU and dropout, where ``D = 8b`` ("avg") or ``16b`` ("avgmax"). With ``base_width=64`` and ``pool="avg"`` the
head is the brief's ``512 -> 256 -> 128 -> 3`` exactly (``resnet_reference``); narrower widths feed their own ``D``
straight into the 256-unit layer (no projection to 512 first). ``embed`` returns the 128-d output of the head's
second layer (after ReLU).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from guitar_cls.models import register_model
from guitar_cls.models.blocks import BasicBlock, LengthMasker, pool_features, widen_for_cpu_bf16


class HarmonicsResNet(nn.Module):
    """ResNet classifier; ``forward(x [B, C, F, T], lengths [B] | None) -> logits [B, n_classes]``."""

    def __init__(
        self,
        n_classes: int = 3,
        in_channels: int = 1,
        base_width: int = 16,
        blocks: Sequence[int] = (2, 2, 2, 2),
        dropout: float = 0.3,
        pool: str = "avg",
    ) -> None:
        super().__init__()
        if len(blocks) != 4 or any(int(n) < 1 for n in blocks):
            raise ValueError(f"resnet: blocks must be four positive counts, got {blocks!r}")
        if pool not in ("avg", "avgmax"):
            raise ValueError(f"resnet: unsupported pool: {pool!r} (known: 'avg', 'avgmax')")
        self.pool = pool
        widths = [base_width, 2 * base_width, 4 * base_width, 8 * base_width]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, base_width, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(base_width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages: list[nn.Module] = []
        in_ch = base_width
        for i, (width, n) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            layers = [BasicBlock(in_ch, width, stride)] + [BasicBlock(width, width) for _ in range(int(n) - 1)]
            stages.append(nn.Sequential(*layers))
            in_ch = width
        self.stages = nn.Sequential(*stages)
        feat_dim = widths[-1] * (2 if pool == "avgmax" else 1)
        self.embedding_dim = 128
        self.neck = nn.Sequential(
            nn.Linear(feat_dim, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(256, 128),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(128, n_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.masker = LengthMasker(self)

    def embed(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Returns the 128-d embedding ``[B, 128]`` of ``x [B, C, F, T]`` (valid frames only)."""
        x, lengths = widen_for_cpu_bf16(x, lengths)
        with self.masker.track(lengths, x.shape[-1]):
            h = self.stages(self.stem(x))  # (B, 8b, F/32, T/32)
            pooled = pool_features(h, self.masker.lengths_for(h.shape[-1]), self.pool)
        return self.neck(pooled)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Returns logits ``[B, n_classes]``."""
        return self.head(self.embed(x, lengths))


@register_model
def resnet(
    n_classes: int = 3,
    in_channels: int = 1,
    base_width: int = 16,
    blocks: Sequence[int] = (2, 2, 2, 2),
    dropout: float = 0.3,
    pool: str = "avg",
) -> HarmonicsResNet:
    """Returns the HarmonicsClassifier ResNet (widths ``b, 2b, 4b, 8b``; ``pool`` is "avg" or "avgmax")."""
    return HarmonicsResNet(n_classes, in_channels, base_width, tuple(blocks), dropout, pool)


@register_model
def resnet_reference(
    n_classes: int = 3,
    in_channels: int = 1,
    base_width: int = 64,
    blocks: Sequence[int] = (2, 2, 2, 2),
    dropout: float = 0.3,
    pool: str = "avg",
) -> HarmonicsResNet:
    """Returns the brief's reference-size ResNet (``resnet`` with ``base_width=64``: head 512 -> 256 -> 128)."""
    return HarmonicsResNet(n_classes, in_channels, base_width, tuple(blocks), dropout, pool)
