"""Model registry (timm style): ``@register_model`` fills one dict, ``build_model(name, **hp)`` builds a variant.

Every model maps a zero-padded batch of features ``x [B, C, F, T]`` plus valid frame counts ``lengths [B]`` (or None)
to logits ``[B, n_classes]``, and offers ``embed(x, lengths) -> [B, D]`` (the penultimate embedding). Pooling only
covers valid frames, so a snippet gets the same prediction alone as inside a padded batch (see ``blocks.LengthMasker``).

Registered: ``resnet``, ``resnet_reference`` (``resnet`` with ``base_width=64``, the brief's reference size),
``efficientnet_b0``, ``mobilenet_v3_small``, ``mobilenet_v3_large``. The torchvision ones import torchvision when they
are built, not when registered: it pulls in ``torch._dynamo`` (seconds), and every Ray process of a trial imports
this package.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}

F = TypeVar("F", bound=Callable[..., nn.Module])


def register_model(fn: F) -> F:
    """Registers a model builder under its function name; returns it unchanged (a decorator)."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    """Returns the sorted names of every registered model."""
    return sorted(_MODELS)


def model_params(name: str) -> dict[str, Any]:
    """Returns the keyword parameters of model ``name`` with their defaults (``inspect.Parameter.empty`` if none)."""
    builder = _get(name)
    return {
        p.name: p.default
        for p in inspect.signature(builder).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def _get(name: str) -> Callable[..., nn.Module]:
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model: {name!r} (known: {', '.join(list_models())})") from None


def build_model(name: str, n_classes: int = 3, in_channels: int = 1, **hp: Any) -> nn.Module:
    """Returns a freshly initialised model ``name``; ``None`` values in ``hp`` are dropped (builder defaults apply).

    Raises:
        ValueError: for an unknown model name (the message lists the registered ones) or an unknown parameter
            (the message names it and lists the accepted ones).
    """
    builder = _get(name)
    hp = {k: v for k, v in hp.items() if v is not None}
    known = model_params(name)
    unknown = sorted(set(hp) - set(known))
    if unknown:
        accepted = [k for k in known if k not in ("n_classes", "in_channels")]
        raise ValueError(f"model {name!r}: unknown parameter {unknown[0]!r} (accepted: {', '.join(accepted)})")
    return builder(n_classes=n_classes, in_channels=in_channels, **hp)


# The families register themselves on import; they import register_model from here, hence the late imports.
from guitar_cls.models import efficientnet, mobilenet, resnet  # noqa: E402, F401, I001
