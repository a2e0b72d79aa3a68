"""Batch norm over valid frames: a padded training batch normalises and updates its running statistics exactly as the
same notes without padding would."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from guitar_cls.models import build_model
from guitar_cls.models.norm import MaskedBatchNorm2d, mask_batchnorms


class _Mask:
    """A stand-in for LengthMasker's interface: the valid frames of a fixed batch."""

    def __init__(self, lengths: torch.Tensor) -> None:
        self.lengths = lengths
        self.active = True

    def mask_for(self, t: int) -> torch.Tensor:
        return (torch.arange(t)[None, :] < self.lengths[:, None])[:, None, None, :]


def test_training_statistics_count_valid_frames_only():
    torch.manual_seed(0)
    valid = [torch.randn(1, 4, 6, n) * 3 + 2 for n in (5, 9, 3)]
    padded = torch.zeros(3, 4, 6, 9)
    for i, v in enumerate(valid):
        padded[i, ..., : v.shape[-1]] = v
    lengths = torch.tensor([5, 9, 3])
    masked = nn.BatchNorm2d(4)
    assert mask_batchnorms(masked, _Mask(lengths)) == 1 and isinstance(masked, MaskedBatchNorm2d)
    out = masked.train()(padded)

    flat = torch.cat([v.flatten(2) for v in valid], dim=2)  # (1, C, all valid positions)
    mean, var = flat.mean(dim=(0, 2)), flat.var(dim=(0, 2), unbiased=False)
    for i, v in enumerate(valid):
        expected = (v - mean[None, :, None, None]) / torch.sqrt(var + 1e-5)[None, :, None, None]
        torch.testing.assert_close(out[i : i + 1, ..., : v.shape[-1]], expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(masked.running_mean, 0.1 * mean, rtol=1e-4, atol=1e-5)
    unbiased = flat.var(dim=(0, 2), unbiased=True)
    torch.testing.assert_close(masked.running_var, 0.9 + 0.1 * unbiased, rtol=1e-4, atol=1e-5)

    plain = nn.BatchNorm2d(4).train()
    plain(padded)  # the padding drags the plain statistics towards zero
    assert (plain.running_var < masked.running_var).all()


def test_training_parts_follow_the_switch():
    from guitar_cls.config import load_config
    from guitar_cls.train.loop import build_parts

    for on in (True, False):
        cfg = load_config(None, [("training.masked_batchnorm", on), ("model.params", {"base_width": 8})])
        parts = build_parts(cfg, np.ones(3), 10, torch.device("cpu"))
        kinds = {type(m) for m in parts.model.modules() if isinstance(m, nn.BatchNorm2d)}
        assert kinds == ({MaskedBatchNorm2d} if on else {nn.BatchNorm2d})


def test_evaluation_and_unpadded_batches_are_plain_batchnorm():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 5, 7)
    masked, plain = nn.BatchNorm2d(3), nn.BatchNorm2d(3)
    mask = _Mask(torch.tensor([7, 7]))
    mask_batchnorms(masked, mask)
    torch.testing.assert_close(masked.train()(x), plain.train()(x))  # all valid: same statistics
    torch.testing.assert_close(masked.running_var, plain.running_var)
    mask.active = False
    torch.testing.assert_close(masked.eval()(x), plain.eval()(x))
    assert set(masked.state_dict()) == set(plain.state_dict())  # checkpoints load either way


def test_a_models_padded_batch_trains_like_its_notes_alone():
    """One training step on [short note + padding, long note] moves the running statistics exactly as the model's
    own batch norm sees the notes' valid frames: the padding share of the batch no longer matters."""
    torch.manual_seed(2)
    model = build_model("resnet", n_classes=3, in_channels=1, base_width=8, blocks=(1, 1, 1, 1))
    assert mask_batchnorms(model, model.masker) == 12  # stem + 2 per block + 3 shortcuts (build_parts does this)
    short, long = torch.randn(1, 1, 32, 40), torch.randn(1, 1, 32, 120)
    batch = torch.zeros(2, 1, 32, 120)
    batch[0, ..., :40], batch[1] = short[0], long[0]
    a, b = copy.deepcopy(model).train(), copy.deepcopy(model).train()
    a(batch, torch.tensor([40, 120]))
    b(torch.cat([batch[:1], batch[:1]]), torch.tensor([40, 40]))  # only the short note, twice, padded alike
    stem = [m for m in a.modules() if isinstance(m, nn.BatchNorm2d)][0]
    stem_b = [m for m in b.modules() if isinstance(m, nn.BatchNorm2d)][0]
    assert isinstance(stem, MaskedBatchNorm2d)
    c = copy.deepcopy(model).train()
    c(short, torch.tensor([40]))  # the short note alone, no padding at all
    stem_c = [m for m in c.modules() if isinstance(m, nn.BatchNorm2d)][0]
    torch.testing.assert_close(stem_b.running_mean, stem_c.running_mean, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(stem_b.running_var, stem_c.running_var, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(stem.running_var, stem_c.running_var)  # the long note counts too
