"""VGG-16 (configuration D) in torchvision's layout.

State-dict keys and shapes equal ``torchvision.models.vgg16``. Conv layers sit at
``features.{0,2,5,7,10,12,14,17,19,21,24,26,28}``, pools at ``features.{4,9,16,23,30}``;
``LAYER_ALIASES`` names them VGG-style (``conv5_3`` = ``features.28``, ``pool5`` =
``features.30``, ``fc6`` = ``classifier.0``, ``fc7`` = ``classifier.3``, ``fc8`` =
``classifier.6``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from deconvnet.models._api import register
from deconvnet.models._common import (
    IMAGENET,
    PooledClassifier,
    classifier_head,
    torchvision_imagenet,
)

NUM_CLASSES = 1000
NUM_PARAMS = 138_357_544
POOLED_SIZE = (7, 7)
FC6_INPUTS = 512 * POOLED_SIZE[0] * POOLED_SIZE[1]
"""fc6 reads the flattened 7x7x512 pool5 output."""
DROPOUT = 0.5
POOL = "M"
VGG16_CONFIG: tuple[int | str, ...] = (
    64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512, 512, POOL,
)  # fmt: skip


def _vgg_aliases(config: tuple[int | str, ...]) -> dict[str, str]:
    """``conv{block}_{i}``/``relu{block}_{i}``/``pool{block}`` -> ``features.N``, plus fc6-8."""
    aliases: dict[str, str] = {}
    index, block, within = 0, 1, 1
    for item in config:
        if item == POOL:
            aliases[f"pool{block}"] = f"features.{index}"
            index, block, within = index + 1, block + 1, 1
        else:
            aliases[f"conv{block}_{within}"] = f"features.{index}"
            aliases[f"relu{block}_{within}"] = f"features.{index + 1}"
            index, within = index + 2, within + 1
    aliases.update(
        {
            "fc6": "classifier.0",
            "relu6": "classifier.1",
            "fc7": "classifier.3",
            "relu7": "classifier.4",
            "fc8": "classifier.6",
        }
    )
    return aliases


LAYER_ALIASES = _vgg_aliases(VGG16_CONFIG)


def make_layers(config: tuple[int | str, ...]) -> nn.Sequential:
    """3x3 conv + ReLU per number, 2x2/2 max pool per ``"M"`` (torchvision's ``make_layers``)."""
    layers: list[nn.Module] = []
    in_channels = 3
    for item in config:
        if item == POOL:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            out_channels = int(item)
            layers += [
                nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
            ]
            in_channels = out_channels
    return nn.Sequential(*layers)


class VGG(PooledClassifier):
    """torchvision's VGG: ``features``, adaptive 7x7 ``avgpool``, three-layer ``classifier``."""

    def __init__(
        self,
        config: tuple[int | str, ...] = VGG16_CONFIG,
        num_classes: int = NUM_CLASSES,
        dropout: float = DROPOUT,
    ) -> None:
        super().__init__()
        self.features = make_layers(config)
        self.avgpool = nn.AdaptiveAvgPool2d(POOLED_SIZE)
        self.classifier = classifier_head(FC6_INPUTS, num_classes, dropout)
        for module in self.modules():  # torchvision's initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)


VGG16_IMAGENET = torchvision_imagenet(
    "vgg16-397923af.pth",
    # Full digest as published in third-party manifests; starts with torchvision's prefix.
    "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
    accuracy="71.592",
    num_params=NUM_PARAMS,
)


@register("vgg16", layer_aliases=LAYER_ALIASES, weights=(VGG16_IMAGENET,), **IMAGENET)
def vgg16(**kwargs: Any) -> VGG:
    """VGG-16, torchvision layout (ImageNet weights: ``weights="imagenet"``)."""
    return VGG(VGG16_CONFIG, **kwargs)
