"""Losses: balanced weights, focal == weighted CE at gamma 0, soft targets, the builder's errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from guitar_cls.config import TrainingConfig
from guitar_cls.train.losses import FocalLoss, build_loss, class_weights


def test_class_weights_are_balanced() -> None:
    # n = 100, k = 3: 100 / (3 * count)
    torch.testing.assert_close(class_weights([50, 25, 25]), torch.tensor([2 / 3, 4 / 3, 4 / 3]))
    torch.testing.assert_close(class_weights({"dead_note": 10, "harmonic": 30}), torch.tensor([40 / 90, 40 / 30, 0.0]))
    with pytest.raises(ValueError):
        class_weights([3, -1, 2])


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_focal_with_gamma_zero_is_weighted_cross_entropy(smoothing: float) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 3, generator=g) * 3
    y = torch.randint(0, 3, (16,), generator=g)
    w = torch.tensor([0.5, 2.0, 1.0])
    got = FocalLoss(0.0, w, label_smoothing=smoothing)(logits, y)
    torch.testing.assert_close(got, F.cross_entropy(logits, y, weight=w, label_smoothing=smoothing))
    # One-hot soft targets are the hard targets.
    torch.testing.assert_close(FocalLoss(0.0, w, smoothing)(logits, F.one_hot(y, 3).float()), got)


def test_focal_down_weights_easy_examples() -> None:
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.2, 0.0, 0.0]])  # an easy and a hard example of class 0
    y = torch.tensor([0, 0])
    p = logits.softmax(-1)[:, 0]
    expected = (-((1 - p) ** 2) * p.log()).mean()  # by hand, gamma = 2, no weights
    torch.testing.assert_close(FocalLoss(2.0)(logits, y), expected)
    ce = F.cross_entropy(logits, y, reduction="none")
    focal = FocalLoss(2.0)(logits[:1], y[:1])
    assert focal < 0.01 * ce[0]  # the easy one nearly vanishes


def test_soft_targets_match_the_mixture_of_hard_losses() -> None:
    logits = torch.randn(4, 3)
    a, b = torch.tensor([0, 1, 2, 0]), torch.tensor([1, 1, 0, 2])
    lam = 0.3
    soft = lam * F.one_hot(a, 3).float() + (1 - lam) * F.one_hot(b, 3).float()
    expected = lam * F.cross_entropy(logits, a) + (1 - lam) * F.cross_entropy(logits, b)
    torch.testing.assert_close(build_loss(TrainingConfig(class_weights="none"), [1, 1, 1])(logits, soft), expected)


def test_build_loss_uses_config() -> None:
    cfg = TrainingConfig(loss="focal", focal_gamma=1.5, class_weights="balanced", label_smoothing=0.05)
    loss = build_loss(cfg, [10, 20, 70])
    assert isinstance(loss, FocalLoss) and loss.gamma == 1.5 and loss.label_smoothing == 0.05
    torch.testing.assert_close(loss.weight, class_weights([10, 20, 70]))
    assert build_loss(dataclasses.replace(cfg, class_weights="none"), [1, 2, 3]).weight is None
    assert build_loss(dataclasses.replace(cfg, loss="ce"), [1, 2, 3]).gamma == 0.0


def test_build_loss_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="'hinge'"):
        build_loss(dataclasses.replace(TrainingConfig(), loss="hinge"), [1, 1, 1])
    with pytest.raises(ValueError, match="'inverse_sqrt'"):
        build_loss(dataclasses.replace(TrainingConfig(), class_weights="inverse_sqrt"), [1, 1, 1])
