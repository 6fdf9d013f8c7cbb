"""SqueezeNet 1.0 and 1.1 in torchvision's layout.

State-dict keys and shapes equal ``torchvision.models.squeezenet1_0``/``1_1``. The output
is ``classifier`` (dropout, 1x1 conv to classes, ReLU, global average pool). Aliases name
the stem and pools Caffe-style (``conv1`` = ``features.0``) and each Fire module
``fire2``... ``fire9`` in its position (``fire9`` = ``features.12``); ``conv10`` =
``classifier.1``. A Fire module's parts are addressable as ``features.N.squeeze``,
``features.N.expand1x1``, ``features.N.expand3x3`` (with ``_activation`` ReLUs).
"""

from __future__ import annotations

from typing import Any, Literal, cast

import torch
from torch import Tensor, nn

from deconvnet.inputs.preprocessing import IMAGENET_TORCHVISION
from deconvnet.models._api import Weights, register
from deconvnet.models._meta import IMAGENET_CATEGORIES

NUM_CLASSES = 1000
NUM_PARAMS_1_0 = 1_248_424
NUM_PARAMS_1_1 = 1_235_496
DROPOUT = 0.5
FINAL_CONV_STD = 0.01

Version = Literal["1_0", "1_1"]


class Fire(nn.Module):
    """Squeeze 1x1 conv, then parallel 1x1 and 3x3 expand convs concatenated on channels."""

    def __init__(self, in_channels: int, squeeze: int, expand1x1: int, expand3x3: int) -> None:
        super().__init__()
        self.inplanes = in_channels
        self.squeeze = nn.Conv2d(in_channels, squeeze, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat(
            [
                self.expand1x1_activation(self.expand1x1(x)),
                self.expand3x3_activation(self.expand3x3(x)),
            ],
            dim=1,
        )


def _pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)


def _features(version: Version) -> nn.Sequential:
    if version == "1_0":
        return nn.Sequential(
            nn.Conv2d(3, 96, kernel_size=7, stride=2), nn.ReLU(inplace=True), _pool(),
            Fire(96, 16, 64, 64), Fire(128, 16, 64, 64), Fire(128, 32, 128, 128), _pool(),
            Fire(256, 32, 128, 128), Fire(256, 48, 192, 192), Fire(384, 48, 192, 192),
            Fire(384, 64, 256, 256), _pool(),
            Fire(512, 64, 256, 256),
        )  # fmt: skip
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=3, stride=2), nn.ReLU(inplace=True), _pool(),
        Fire(64, 16, 64, 64), Fire(128, 16, 64, 64), _pool(),
        Fire(128, 32, 128, 128), Fire(256, 32, 128, 128), _pool(),
        Fire(256, 48, 192, 192), Fire(384, 48, 192, 192),
        Fire(384, 64, 256, 256), Fire(512, 64, 256, 256),
    )  # fmt: skip


class SqueezeNet(nn.Module):
    """torchvision's SqueezeNet (``version`` ``"1_0"`` or ``"1_1"``) and its initialisation."""

    def __init__(
        self, version: Version = "1_0", num_classes: int = NUM_CLASSES, dropout: float = DROPOUT
    ) -> None:
        super().__init__()
        if version not in ("1_0", "1_1"):
            raise ValueError(f"SqueezeNet version must be '1_0' or '1_1', got {version!r}")
        self.num_classes = num_classes
        self.features = _features(version)
        final_conv = nn.Conv2d(512, num_classes, kernel_size=1)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), final_conv, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1))
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                if module is final_conv:
                    nn.init.normal_(module.weight, mean=0.0, std=FINAL_CONV_STD)
                else:
                    nn.init.kaiming_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        return cast(Tensor, self.classifier(self.features(x)).flatten(1))


def _aliases(pools: dict[str, int], fire_indices: tuple[int, ...]) -> dict[str, str]:
    """Caffe-style names: ``conv1``, the pools as given, ``fire2``.., ``conv10``."""
    aliases = {"conv1": "features.0", "relu1": "features.1"}
    aliases.update({name: f"features.{index}" for name, index in pools.items()})
    for number, index in enumerate(fire_indices, start=2):
        aliases[f"fire{number}"] = f"features.{index}"
    aliases.update({"conv10": "classifier.1", "relu10": "classifier.2", "pool10": "classifier.3"})
    return aliases


LAYER_ALIASES_1_0 = _aliases({"pool1": 2, "pool4": 6, "pool8": 11}, (3, 4, 5, 7, 8, 9, 10, 12))
LAYER_ALIASES_1_1 = _aliases({"pool1": 2, "pool3": 5, "pool5": 8}, (3, 4, 6, 7, 9, 10, 11, 12))

_PROVENANCE = "torchvision IMAGENET1K_V1 (acc@1 {acc}), BSD-3-Clause; trained on ImageNet-1k"

SQUEEZENET1_0_IMAGENET = Weights(
    name="imagenet",
    url="https://download.pytorch.org/models/squeezenet1_0-b66bff10.pth",
    sha256="b66bff10",  # torchvision publishes only this prefix (in the file name)
    file_name="squeezenet1_0-b66bff10.pth",
    preprocessing=IMAGENET_TORCHVISION,
    categories=IMAGENET_CATEGORIES,
    provenance=_PROVENANCE.format(acc="58.092"),
    num_params=NUM_PARAMS_1_0,
)

SQUEEZENET1_1_IMAGENET = Weights(
    name="imagenet",
    url="https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",
    # Full digest as published in third-party manifests; starts with torchvision's prefix.
    sha256="b8a52dc049b60e4b6ab68ad0df457362afab8b6304b2febdc1650a5dab4d7e7b",
    file_name="squeezenet1_1-b8a52dc0.pth",
    preprocessing=IMAGENET_TORCHVISION,
    categories=IMAGENET_CATEGORIES,
    provenance=_PROVENANCE.format(acc="58.178"),
    num_params=NUM_PARAMS_1_1,
)


@register(
    "squeezenet1_0",
    num_classes=NUM_CLASSES,
    preprocessing=IMAGENET_TORCHVISION,
    layer_aliases=LAYER_ALIASES_1_0,
    weights=(SQUEEZENET1_0_IMAGENET,),
    categories=IMAGENET_CATEGORIES,
)
def squeezenet1_0(**kwargs: Any) -> SqueezeNet:
    """SqueezeNet 1.0, torchvision layout (ImageNet weights: ``weights="imagenet"``)."""
    return SqueezeNet("1_0", **kwargs)


@register(
    "squeezenet1_1",
    num_classes=NUM_CLASSES,
    preprocessing=IMAGENET_TORCHVISION,
    layer_aliases=LAYER_ALIASES_1_1,
    weights=(SQUEEZENET1_1_IMAGENET,),
    categories=IMAGENET_CATEGORIES,
)
def squeezenet1_1(**kwargs: Any) -> SqueezeNet:
    """SqueezeNet 1.1, torchvision layout (ImageNet weights: ``weights="imagenet"``)."""
    return SqueezeNet("1_1", **kwargs)
