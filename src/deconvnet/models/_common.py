"""What the zoo's architecture pages share: the pooled classifier (features, pooling,
fully connected head), torchvision's ImageNet weight sets and the ImageNet registration
(as torchvision keeps ``_COMMON_META`` beside its pages)."""

from __future__ import annotations

from typing import TypedDict, cast

from torch import Tensor, nn

from deconvnet.inputs.preprocessing import IMAGENET_TORCHVISION, Preprocessing
from deconvnet.models._api import Weights
from deconvnet.models._meta import IMAGENET_CATEGORIES

TORCHVISION_URL = "https://download.pytorch.org/models/"
TORCHVISION_LICENCE = "BSD-3-Clause"
HIDDEN = 4096
"""Units of the two hidden fully connected layers (fc6, fc7) of AlexNet-era heads."""


class PooledClassifier(nn.Module):
    """``features``, then ``avgpool``, flattened, then ``classifier``: torchvision's AlexNet
    and VGG, and the CaffeNet, ZFNet and default pages built like them."""

    features: nn.Module
    avgpool: nn.Module
    classifier: nn.Module

    def forward(self, x: Tensor) -> Tensor:
        return cast(Tensor, self.classifier(self.avgpool(self.features(x)).flatten(1)))


def classifier_head(in_features: int, num_classes: int, dropout: float) -> nn.Sequential:
    """fc6-relu6-drop6-fc7-relu7-drop7-fc8 on the flattened pooled maps (CaffeNet, ZFNet,
    VGG)."""
    return nn.Sequential(
        nn.Linear(in_features, HIDDEN),
        nn.ReLU(inplace=True),
        nn.Dropout(p=dropout),
        nn.Linear(HIDDEN, HIDDEN),
        nn.ReLU(inplace=True),
        nn.Dropout(p=dropout),
        nn.Linear(HIDDEN, num_classes),
    )


def torchvision_imagenet(file_name: str, sha256: str, accuracy: str, num_params: int) -> Weights:
    """torchvision's ``IMAGENET1K_V1`` weight set published as ``file_name`` (whose name
    carries a prefix of ``sha256``), with its top-1 ``accuracy``."""
    return Weights(
        name="imagenet",
        url=TORCHVISION_URL + file_name,
        sha256=sha256,
        file_name=file_name,
        preprocessing=IMAGENET_TORCHVISION,
        categories=IMAGENET_CATEGORIES,
        provenance=f"torchvision IMAGENET1K_V1 (acc@1 {accuracy}), {TORCHVISION_LICENCE}; "
        "trained on ImageNet-1k",
        licence=TORCHVISION_LICENCE,
        num_params=num_params,
    )


class Registration(TypedDict):
    """The ``register`` arguments an ImageNet architecture shares."""

    num_classes: int
    preprocessing: Preprocessing
    categories: tuple[str, ...] | None


IMAGENET: Registration = {
    "num_classes": len(IMAGENET_CATEGORIES),
    "preprocessing": IMAGENET_TORCHVISION,
    "categories": IMAGENET_CATEGORIES,
}
