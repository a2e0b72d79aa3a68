"""MobileNetV3 (small and large) from torchvision, randomly initialised, over ``[B, C, F, T]`` features.

As in EfficientAT, the mel front end stays outside the model. The RGB stem is replaced by one taking ``in_channels``;
the classifier ends in ``n_classes``; every batch norm uses momentum 0.1 instead of torchvision's 0.01 (with 0.01 our
short trainings collapsed to one class in eval mode); squeeze-excitation and final pools cover valid frames only.
``embed`` gives the classifier's hidden layer (1024-d for small, 1280-d for large, times ``width_mult``).
"""

from __future__ import annotations

from guitar_cls.models import register_model
from guitar_cls.models.blocks import TorchvisionClassifier, load_pretrained, replace_stem


def _create_mobilenet_v3(
    arch: str, n_classes: int, in_channels: int, width_mult: float, dropout: float, pretrained: str | None
) -> TorchvisionClassifier:
    from torchvision.models.mobilenetv3 import MobileNetV3, _mobilenet_v3_conf  # here: see guitar_cls.models

    setting, last_channel = _mobilenet_v3_conf(arch, width_mult=width_mult)
    net = MobileNetV3(setting, last_channel, num_classes=n_classes, dropout=dropout)
    replace_stem(net.features, in_channels)
    model = TorchvisionClassifier(net.features, net.classifier)
    if pretrained is not None:
        load_pretrained(model, pretrained)
    return model


@register_model
def mobilenet_v3_small(
    n_classes: int = 3,
    in_channels: int = 1,
    width_mult: float = 1.0,
    dropout: float = 0.2,
    pretrained: str | None = None,
) -> TorchvisionClassifier:
    """Returns MobileNetV3-Small scaled by ``width_mult``; ``pretrained`` is a local state-dict path."""
    return _create_mobilenet_v3("mobilenet_v3_small", n_classes, in_channels, width_mult, dropout, pretrained)


@register_model
def mobilenet_v3_large(
    n_classes: int = 3,
    in_channels: int = 1,
    width_mult: float = 1.0,
    dropout: float = 0.2,
    pretrained: str | None = None,
) -> TorchvisionClassifier:
    """Returns MobileNetV3-Large scaled by ``width_mult``; ``pretrained`` is a local state-dict path."""
    return _create_mobilenet_v3("mobilenet_v3_large", n_classes, in_channels, width_mult, dropout, pretrained)
