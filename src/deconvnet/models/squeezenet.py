"""SqueezeNet 1.0 and 1.1 in torchvision's layout.

State-dict keys and shapes equal ``torchvision.models.squeezenet1_0``/``1_1``. The output
is ``classifier`` (dropout, 1x1 conv to classes, ReLU, global average pool). Aliases name
the stem and pools Caffe-style (``conv1`` = ``features.0``) and each Fire module
``fire2``... ``fire9`` in its position (``fire9`` = ``features.12``); ``conv10`` =
``classifier.1``. A Fire module's parts are addressable as ``features.N.squeeze``,
``features.N.expand1x1``, ``features.N.expand3x3`` (with ``_activation`` ReLUs).

Two weight sets fill ``squeezenet1_0``: torchvision's ``"imagenet"`` (downloaded) and the
embedded ``"deep-compression"`` set, Caffe's SqueezeNet v1.0 as pruned and quantised by
Deep Compression (see ``weights/squeezenet1_0_deep_compression.md``). The latter is built
the way Caffe ran it: its final 1x1 conv has padding 1 (15x15 at a 227x227 input, the
border is ``relu(bias)`` and counts in the global average), and it takes Caffe's input
(227x227, BGR, 0-255, mean pixel subtracted).
"""

from __future__ import annotations

from typing import Any, Literal, cast

import torch
from torch import Tensor, nn

from deconvnet.inputs.preprocessing import Preprocessing
from deconvnet.models._api import Weights, register
from deconvnet.models._common import IMAGENET, torchvision_imagenet
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
    """torchvision's SqueezeNet (``version`` ``"1_0"`` or ``"1_1"``) and its initialisation.

    ``final_conv_padding=1`` gives Caffe's deploy variant, whose 1x1 classifier conv is
    padded; parameters and state-dict keys are the same either way.
    """

    def __init__(
        self,
        version: Version = "1_0",
        num_classes: int = NUM_CLASSES,
        dropout: float = DROPOUT,
        final_conv_padding: int = 0,
    ) -> None:
        super().__init__()
        if version not in ("1_0", "1_1"):
            raise ValueError(f"SqueezeNet version must be '1_0' or '1_1', got {version!r}")
        self.num_classes = num_classes
        self.features = _features(version)
        final_conv = nn.Conv2d(512, num_classes, kernel_size=1, padding=final_conv_padding)
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


def _caffe_modules(fire_indices: tuple[int, ...]) -> dict[str, str]:
    """Caffe layer name of the SqueezeNet deploy files -> the module holding its blobs."""
    modules = {"conv1": "features.0", "conv_final": "classifier.1"}
    for number, index in enumerate(fire_indices, start=2):
        modules[f"fire{number}/conv1x1_1"] = f"features.{index}.squeeze"
        modules[f"fire{number}/conv1x1_2"] = f"features.{index}.expand1x1"
        modules[f"fire{number}/conv3x3_2"] = f"features.{index}.expand3x3"
    return modules


CAFFE_MODULES_1_0 = _caffe_modules((3, 4, 5, 7, 8, 9, 10, 12))
"""Where ``scripts/convert_squeezenet.py`` puts each Caffe layer's ``[weight, bias]``."""

SQUEEZENET1_0_IMAGENET = torchvision_imagenet(
    "squeezenet1_0-b66bff10.pth",
    "b66bff10",  # torchvision publishes only this prefix (in the file name)
    accuracy="58.092",
    num_params=NUM_PARAMS_1_0,
)
SQUEEZENET1_1_IMAGENET = torchvision_imagenet(
    "squeezenet1_1-b8a52dc0.pth",
    # Full digest as published in third-party manifests; starts with torchvision's prefix.
    "b8a52dc049b60e4b6ab68ad0df457362afab8b6304b2febdc1650a5dab4d7e7b",
    accuracy="58.178",
    num_params=NUM_PARAMS_1_1,
)

DEEP_COMPRESSION_SHA256 = "8ed4f1e516411e3bae9bda8087a71cb3f54e8c32c7cbce2fdf6ab96de6a36501"
"""SHA-256 of ``weights/squeezenet1_0_deep_compression.safetensors``, checked on every load."""

CAFFE_SQUEEZENET_PREPROCESSING = Preprocessing(
    input_size=(227, 227),
    resize_rule="exact",
    channel_order="BGR",
    scale=255.0,
    mean=(104.0, 117.0, 123.0),
)
"""SqueezeNet's Caffe input: whole image resized to 227x227 (bilinear, no crop), BGR,
0-255, minus the integer mean pixel (104, 117, 123) its Caffe references use."""

SQUEEZENET1_0_DEEP_COMPRESSION = Weights(
    name="deep-compression",
    url=None,
    sha256=DEEP_COMPRESSION_SHA256,
    file_name="squeezenet1_0_deep_compression.safetensors",
    preprocessing=CAFFE_SQUEEZENET_PREPROCESSING,
    categories=IMAGENET_CATEGORIES,
    provenance=(
        "SqueezeNet v1.0 (Iandola et al. 2016) pruned and quantised by Deep Compression "
        "(Han et al. 2016), songhan/SqueezeNet-Deep-Compression, converted from its Caffe "
        "model by scripts/convert_squeezenet.py; see weights/squeezenet1_0_deep_compression.md"
    ),
    licence="BSD-2-Clause",
    num_params=NUM_PARAMS_1_0,
    builder_kwargs={"final_conv_padding": 1},
)


@register(
    "squeezenet1_0",
    layer_aliases=LAYER_ALIASES_1_0,
    weights=(SQUEEZENET1_0_IMAGENET, SQUEEZENET1_0_DEEP_COMPRESSION),
    **IMAGENET,
)
def squeezenet1_0(**kwargs: Any) -> SqueezeNet:
    """SqueezeNet 1.0, torchvision layout (ImageNet: "imagenet", or embedded "deep-compression")."""
    return SqueezeNet("1_0", **kwargs)


@register(
    "squeezenet1_1",
    layer_aliases=LAYER_ALIASES_1_1,
    weights=(SQUEEZENET1_1_IMAGENET,),
    **IMAGENET,
)
def squeezenet1_1(**kwargs: Any) -> SqueezeNet:
    """SqueezeNet 1.1, torchvision layout (ImageNet weights: ``weights="imagenet"``)."""
    return SqueezeNet("1_1", **kwargs)
