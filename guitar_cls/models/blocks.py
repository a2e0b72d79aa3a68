"""Building blocks shared by the model families: length masking, masked pooling, the residual block.

Every model takes zero-padded batches ``[B, C, F, T]`` plus the valid frame count of each snippet. To give a snippet
the same prediction alone as inside a padded batch, :class:`LengthMasker` installs hooks on a module tree:

- every ``Conv2d`` input is zeroed past the valid length (forward pre-hook), so a convolution sees exactly the zeros
  its own padding would give the snippet alone (convs one frame wide without time padding need no mask: the 1x1
  convs inside squeeze-excitation on pooled ``[B, C, 1, 1]`` tensors, a ResNet's strided 1x1 shortcut);
- every ``MaxPool2d`` input is set to ``-inf`` past the valid length (the value max-pool padding uses), and its output
  past the new valid length is zeroed again so training-mode batch norm never sees ``-inf``;
- after each conv/pool the valid length at the new time resolution follows the convolution formula
  ``L_out = floor((L_in + 2p - d(k-1) - 1) / s) + 1`` (``ceil(L_in / s)`` for 'same'-padded strided convs), and is
  remembered per time resolution ``T`` (``T`` only shrinks through these networks, so one ``T`` is one resolution);
- global average pools (``nn.AdaptiveAvgPool2d(1)``, e.g. the squeeze-excitation pools of torchvision) are replaced by
  :class:`MaskedGlobalPool`, a mean over valid frames only;
- ``norm.mask_batchnorms(model, model.masker)`` (``training.masked_batchnorm``) turns every ``BatchNorm2d`` into a
  ``norm.MaskedBatchNorm2d``: in training its batch statistics (and so the running statistics used in evaluation)
  count valid frames only, whatever share of the batch is padding.

Masks are built once per resolution and applied by multiplication (``-inf`` by ``torch.where``), which keep a
channels-last activation channels-last (``masked_fill`` returns a contiguous copy) and are exact: a valid value is
multiplied by 1 or kept. Element-wise layers (batch norm in eval mode, activations, residual sums) keep positions
independent, so the valid outputs are exact; positions past the length hold junk that the next conv/pool masks away.
With ``lengths=None`` nothing is masked. While tracing (ONNX export) every batch is masked, sizes stay symbolic, and
the masks are in the graph once per resolution.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from guitar_cls.features import frame_mask, is_tracing, is_unpadded

log = logging.getLogger(__name__)


def _last(v: Any) -> int:
    """Returns the time-axis entry of an int-or-tuple conv/pool parameter."""
    return int(v[-1]) if isinstance(v, (tuple, list)) else int(v)


def _is_framewise(conv: nn.Conv2d) -> bool:
    """Returns whether each output frame of ``conv`` reads one input frame (1 frame wide, no padding along time).

    Valid output frames then read valid input frames only, so the input needs no mask (only the length changes when
    the stride is above 1: e.g. a ResNet's strided 1x1 shortcut).
    """
    pad = 0 if conv.padding == "valid" else conv.padding
    return _last(conv.kernel_size) == 1 and pad != "same" and _last(pad) == 0


def conv_out_length(
    length: Tensor, kernel: int, stride: int, padding: int, dilation: int = 1, ceil_mode: bool = False
) -> Tensor:
    """Returns the output length of a conv/pool for input length(s) ``length`` (the PyTorch shape formula)."""
    num = length + 2 * padding - dilation * (kernel - 1) - 1
    out = (
        torch.div(num + stride - 1, stride, rounding_mode="floor")
        if ceil_mode
        else torch.div(num, stride, rounding_mode="floor")
    ) + 1
    if ceil_mode:  # PyTorch drops a last window that would start inside the right padding
        out = torch.where((out - 1) * stride >= length + padding, out - 1, out)
    return out


def _clamp_lengths(lengths: Tensor, t: int | Tensor) -> Tensor:
    """Returns ``lengths`` clamped to ``[1, t]``; ``t`` is a tensor while tracing, and the bound must stay one."""
    if isinstance(t, Tensor):
        return torch.minimum(lengths.clamp(min=1), t.to(lengths.device, lengths.dtype))
    return lengths.clamp(1, t)


class LengthMasker:
    """Tracks valid lengths per time resolution through a module tree and masks conv/pool inputs past them.

    Build it once over a model (``LengthMasker(model)``); run the forward inside ``with masker.track(lengths, T):``.
    Outside ``track`` (or with ``lengths=None``) every hook is a no-op.
    """

    def __init__(self, root: nn.Module) -> None:
        self._by_t: dict[int, Tensor] | None = None
        self._masks: dict[int, Tensor] = {}  # T -> (B, 1, 1, T) bool, built once per forward and resolution
        n_conv = n_pool = n_gap = 0
        for name, module in list(root.named_modules()):
            if isinstance(module, nn.Conv2d) and _is_framewise(module):
                if _last(module.stride) > 1:  # nothing to mask, but a new length
                    module.register_forward_hook(self._record_conv)
            elif isinstance(module, nn.Conv2d):
                module.register_forward_pre_hook(self._zero_input)
                module.register_forward_hook(self._record_conv)
                n_conv += 1
            elif isinstance(module, nn.MaxPool2d):
                module.register_forward_pre_hook(self._neginf_input)
                module.register_forward_hook(self._record_pool)
                n_pool += 1
            elif isinstance(module, (nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool1d, nn.Conv1d)):
                raise TypeError(f"LengthMasker: {name} ({type(module).__name__}) is not supported")
            for child_name, child in list(module.named_children()):
                if isinstance(child, nn.AdaptiveAvgPool2d) and child.output_size in (1, (1, 1)):
                    setattr(module, child_name, MaskedGlobalPool(self))
                    n_gap += 1
                elif isinstance(child, nn.AdaptiveAvgPool2d):
                    raise TypeError(f"LengthMasker: {name}.{child_name} pools to {child.output_size}, not 1")
        log.debug("LengthMasker: %d convs, %d max-pools, %d global pools", n_conv, n_pool, n_gap)

    @property
    def active(self) -> bool:
        """Returns whether lengths are being tracked (inside ``track`` with lengths given)."""
        return self._by_t is not None

    @contextlib.contextmanager
    def track(self, lengths: Tensor | None, t: int | Tensor) -> Iterator[None]:
        """Tracks ``lengths`` ``[B]`` (valid frames of an input with ``t`` frames) for the enclosed forward.

        A batch without padding (every length >= ``t``) is not tracked at all: masking would change nothing. While
        tracing every batch is tracked (the exported graph must mask the batches it will be given), except inside
        ``features.unpadded()`` (the one-snippet graph).
        """
        if lengths is None or is_unpadded() or (not is_tracing() and bool((lengths >= t).all())):  # one host sync
            yield
            return
        previous = self._by_t, self._masks
        self._by_t, self._masks = {int(t): _clamp_lengths(lengths, t)}, {}
        try:
            yield
        finally:
            self._by_t, self._masks = previous

    def lengths_for(self, t: int | Tensor) -> Tensor | None:
        """Returns the valid lengths ``[B]`` at time resolution ``t``, or None when not tracking."""
        if self._by_t is None:
            return None
        try:
            return self._by_t[int(t)]
        except KeyError:
            raise RuntimeError(
                f"LengthMasker: no valid lengths known for a time axis of {int(t)} frames "
                f"(known: {sorted(self._by_t)}); a layer changed T outside conv/max-pool"
            ) from None

    def mask_for(self, t: int | Tensor) -> Tensor:
        """Returns the ``(B, 1, 1, T)`` bool mask of valid frames at time resolution ``t`` (while tracking)."""
        mask = self._masks.get(int(t))
        if mask is None:
            lengths = self.lengths_for(t)
            assert lengths is not None
            mask = self._masks[int(t)] = frame_mask(lengths, t)[:, None, None, :]
        return mask

    def _record(self, t_out: int | Tensor, lengths: Tensor) -> None:
        assert self._by_t is not None
        lengths = _clamp_lengths(lengths, t_out)
        known = self._by_t.get(int(t_out))
        if known is None:
            self._by_t[int(t_out)] = lengths
        elif not is_tracing() and not torch.equal(known, lengths):
            raise RuntimeError(f"LengthMasker: two resolutions with {int(t_out)} frames disagree on the valid lengths")

    def _zero_input(self, module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...] | None:
        if self._by_t is None:
            return None
        x = args[0]
        return (x * self.mask_for(x.shape[-1]), *args[1:])

    def _neginf_input(self, module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...] | None:
        if self._by_t is None:
            return None
        x = args[0]
        return (torch.where(self.mask_for(x.shape[-1]), x, float("-inf")), *args[1:])

    def _record_conv(self, module: nn.Conv2d, args: tuple[Tensor, ...], out: Tensor) -> None:
        if self._by_t is None:
            return
        length = self.lengths_for(args[0].shape[-1])
        if isinstance(module.padding, str):  # 'same' (stride 1 only in PyTorch) or 'valid'
            pad = 0 if module.padding == "valid" else None
        else:
            pad = _last(module.padding)
        if pad is None:
            new = length
        else:
            new = conv_out_length(length, _last(module.kernel_size), _last(module.stride), pad, _last(module.dilation))
        self._record(out.shape[-1], new)

    def _record_pool(self, module: nn.MaxPool2d, args: tuple[Tensor, ...], out: Tensor) -> Tensor | None:
        if self._by_t is None:
            return None
        length = self.lengths_for(args[0].shape[-1])
        stride = module.stride if module.stride is not None else module.kernel_size
        new = conv_out_length(
            length,
            _last(module.kernel_size),
            _last(stride),
            _last(module.padding),
            _last(module.dilation),
            module.ceil_mode,
        )
        self._record(out.shape[-1], new)
        # no -inf left for batch norm / residual sums (a window wholly past the length is -inf: not a product)
        return torch.where(self.mask_for(out.shape[-1]), out, 0.0)


# PyTorch 2.11's CPU bf16 convolution (oneDNN, on CPUs with AVX-512 BF16 / AMX) returns garbage, often inf or NaN,
# from a strided conv whose input is one or two frames wide (measured for the stride-2 7x7 and 3x3 convs, any batch and
# height; fp32 is exact). Five stride-2 steps bring a snippet under ~48 frames (~0.28 s) there, so in evaluation, whose
# batches are sorted by length, every short note got a junk prediction (NaN probabilities read as "harmonic").
MIN_CPU_BF16_FRAMES = 64


def widen_for_cpu_bf16(x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Returns ``(x, lengths)`` with ``x [B, C, F, T]`` zero-padded to ``MIN_CPU_BF16_FRAMES`` frames when it is
    shorter and runs under CPU bf16 autocast (``lengths`` then filled in, so the masks keep the result exact);
    unchanged otherwise: on GPU, in fp32, while tracing and inside ``features.unpadded()``."""
    t = x.shape[-1]
    if (
        x.device.type != "cpu"
        or not torch.is_autocast_enabled("cpu")
        or torch.get_autocast_dtype("cpu") != torch.bfloat16
        or is_tracing()
        or is_unpadded()
        or t >= MIN_CPU_BF16_FRAMES
    ):
        return x, lengths
    if lengths is None:
        lengths = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
    return nn.functional.pad(x, (0, MIN_CPU_BF16_FRAMES - t)), lengths


def masked_mean(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Returns the mean over frequency and valid frames: ``[B, C, F, T] -> [B, C]``."""
    if lengths is None:
        return x.mean(dim=(-2, -1))
    # at least float32: under bf16 autocast a length like 301 frames is not representable (8-bit mantissa)
    acc = torch.promote_types(x.dtype, torch.float32)
    mask = frame_mask(lengths, x.shape[-1])[:, None, None, :]  # (B, 1, 1, T)
    total = (x.to(acc) * mask).sum(dim=(-2, -1))
    return (total / (lengths.to(acc)[:, None] * x.shape[-2])).to(x.dtype)


def masked_max(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Returns the max over frequency and valid frames: ``[B, C, F, T] -> [B, C]``."""
    if lengths is not None:
        x = torch.where(frame_mask(lengths, x.shape[-1])[:, None, None, :], x, float("-inf"))
    return x.amax(dim=(-2, -1))


class MaskedGlobalPool(nn.Module):
    """Global average pool ``[B, C, F, T] -> [B, C, 1, 1]`` over valid frames (drop-in for AdaptiveAvgPool2d(1))."""

    def __init__(self, masker: LengthMasker) -> None:
        super().__init__()
        self.masker = masker  # a plain object, not a submodule

    def forward(self, x: Tensor) -> Tensor:
        return masked_mean(x, self.masker.lengths_for(x.shape[-1]))[..., None, None]


def pool_features(x: Tensor, lengths: Tensor | None, pool: str) -> Tensor:
    """Returns the pooled embedding ``[B, C]`` ("avg") or ``[B, 2C]`` ("avgmax": mean and max concatenated)."""
    if pool == "avg":
        return masked_mean(x, lengths)
    if pool == "avgmax":
        return torch.cat([masked_mean(x, lengths), masked_max(x, lengths)], dim=1)
    raise ValueError(f"unsupported pool: {pool!r} (known: 'avg', 'avgmax')")


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN layers with an identity (or 1x1 strided projection) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class TorchvisionClassifier(nn.Module):
    """A torchvision ``features``/``classifier`` pair with pooling over valid frames.

    ``features`` maps ``[B, C, F, T]`` to ``[B, D, F', T']``; the classifier's last layer gives the logits and the
    layers before it give ``embed``. Attribute names match torchvision's, so its state dicts load key for key.
    """

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.classifier = classifier
        set_batchnorm_momentum(self, 0.1)
        self.masker = LengthMasker(self)

    def embed(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Returns the penultimate embedding ``[B, D]`` of ``x [B, C, F, T]`` (valid frames only)."""
        x, lengths = widen_for_cpu_bf16(x, lengths)
        with self.masker.track(lengths, x.shape[-1]):
            h = self.features(x)  # (B, D, F', T')
            pooled = masked_mean(h, self.masker.lengths_for(h.shape[-1]))
        return self.classifier[:-1](pooled)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Returns logits ``[B, n_classes]``."""
        return self.classifier[-1](self.embed(x, lengths))


def set_batchnorm_momentum(root: nn.Module, momentum: float) -> None:
    """Sets every batch norm's running-statistics momentum.

    torchvision's MobileNetV3 uses 0.01, which leaves the running statistics near their initial values after our short
    trainings, so eval mode collapsed to one class (val balanced accuracy 0.333); 0.1 (PyTorch's default) does not.
    """
    for m in root.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum


def replace_stem(features: nn.Sequential, in_channels: int) -> None:
    """Replaces the first conv of a torchvision ``features`` stack (3 RGB inputs) by one taking ``in_channels``."""
    old = features[0][0]
    if not isinstance(old, nn.Conv2d):
        raise TypeError(f"expected the stem conv at features[0][0], found {type(old).__name__}")
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        dilation=old.dilation,
        groups=1,
        bias=old.bias is not None,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    features[0][0] = new


def load_pretrained(model: nn.Module, path: str) -> None:
    """Loads a local state dict (``torch.load(weights_only=True)``) into ``model``, skipping shape mismatches.

    The stem (other input channels) and classifier (other class count) usually mismatch; each skipped key is logged.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    own = model.state_dict()
    keep = {}
    for key, value in state.items():
        if key not in own:
            log.info("pretrained %s: skipping %s (not in the model)", path, key)
        elif own[key].shape != value.shape:
            log.info(
                "pretrained %s: skipping %s (shape %s, model has %s)",
                path,
                key,
                tuple(value.shape),
                tuple(own[key].shape),
            )
        else:
            keep[key] = value
    missing = [k for k in own if k not in keep]
    model.load_state_dict(keep, strict=False)
    log.info("pretrained %s: loaded %d tensors, %d left at their random init", path, len(keep), len(missing))
