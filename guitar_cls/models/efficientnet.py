"""EfficientNet-B0 from torchvision, randomly initialised, over ``[B, C, F, T]`` features.

The RGB stem is replaced by one taking ``in_channels``; the classifier ends in ``n_classes``; every batch norm uses
momentum 0.1; squeeze-excitation and final pools cover valid frames only. ``embed`` gives the pooled
``1280 * width_mult``-d features (rounded to a multiple of 8 by torchvision).
"""

from __future__ import annotations

from guitar_cls.models import register_model
from guitar_cls.models.blocks import TorchvisionClassifier, load_pretrained, replace_stem


@register_model
def efficientnet_b0(
    n_classes: int = 3,
    in_channels: int = 1,
    width_mult: float = 1.0,
    depth_mult: float = 1.0,
    dropout: float = 0.2,
    stochastic_depth: float = 0.2,
    pretrained: str | None = None,
) -> TorchvisionClassifier:
    """Returns EfficientNet-B0 scaled by ``width_mult``/``depth_mult``; ``pretrained`` is a local state-dict path."""
    from torchvision.models.efficientnet import EfficientNet, _efficientnet_conf  # here: see guitar_cls.models

    setting, last_channel = _efficientnet_conf("efficientnet_b0", width_mult=width_mult, depth_mult=depth_mult)
    net = EfficientNet(
        setting, dropout, stochastic_depth_prob=stochastic_depth, num_classes=n_classes, last_channel=last_channel
    )
    replace_stem(net.features, in_channels)
    model = TorchvisionClassifier(net.features, net.classifier)
    if pretrained is not None:
        load_pretrained(model, pretrained)
    return model
