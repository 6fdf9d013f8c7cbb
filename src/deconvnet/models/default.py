"""The embedded default network: a small ZFNet-style CIFAR-10 classifier.

Its ``features`` are plain conv / ReLU / max-pool / LRN stacks (the layer kinds the
deconvnet paper inverts), so it runs fully convolutionally on photos of any size; the
head pools adaptively, so any input size also classifies. It was trained at 32x32.

Layer-name aliases (``LAYER_ALIASES``)::

    conv1 features.0   relu1 features.1   pool1 features.2   norm1 features.3
    conv2 features.4   relu2 features.5   pool2 features.6   norm2 features.7
    conv3 features.8   relu3 features.9
    conv4 features.10  relu4 features.11  pool4 features.12
    fc    classifier.1
"""

from __future__ import annotations

from typing import Any

from torch import nn

from deconvnet.inputs.preprocessing import Preprocessing
from deconvnet.models._api import Weights, register
from deconvnet.models._common import PooledClassifier
from deconvnet.models._meta import CIFAR10_CATEGORIES, CIFAR10_MEAN, CIFAR10_STD

NUM_CLASSES = len(CIFAR10_CATEGORIES)
TRAIN_SIZE = (32, 32)
LRN_SIZE = 5
LRN_ALPHA = 1e-4
LRN_BETA = 0.75
LRN_K = 2.0
DROPOUT = 0.2
NUM_PARAMS = 378_538
EMBEDDED_SHA256 = "c997189047a07dc4246c97c16e43eae2b1899b79ef8712e8d1f4765282bc37b1"
"""SHA-256 of ``weights/default_cifar10.pth``, checked on every load."""

LAYER_ALIASES: dict[str, str] = {
    "conv1": "features.0",
    "relu1": "features.1",
    "pool1": "features.2",
    "norm1": "features.3",
    "conv2": "features.4",
    "relu2": "features.5",
    "pool2": "features.6",
    "norm2": "features.7",
    "conv3": "features.8",
    "relu3": "features.9",
    "conv4": "features.10",
    "relu4": "features.11",
    "pool4": "features.12",
    "fc": "classifier.1",
}


class TinyZFNet(PooledClassifier):
    """ZFNet-shaped CIFAR-10 net: 32x32 -> 16 -> 8 -> 4 spatially, about 0.3 M parameters.

    Max pools are 3x3 stride 2 with ``ceil_mode=True`` (Caffe's rounding), so a 32x32
    input gives 16, 8 and 4 after the three pools.
    """

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 48, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            nn.LocalResponseNorm(LRN_SIZE, alpha=LRN_ALPHA, beta=LRN_BETA, k=LRN_K),
            nn.Conv2d(48, 96, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            nn.LocalResponseNorm(LRN_SIZE, alpha=LRN_ALPHA, beta=LRN_BETA, k=LRN_K),
            nn.Conv2d(96, 128, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 128, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Sequential(
            nn.Dropout(p=DROPOUT),
            nn.Linear(128, num_classes),
        )


CIFAR10_PREPROCESSING = Preprocessing(
    input_size=TRAIN_SIZE, resize_rule="none", mean=CIFAR10_MEAN, std=CIFAR10_STD
)
"""RGB in [0, 1], CIFAR-10 train mean/std; photos are fed at their own size (trained at 32x32)."""

DEFAULT_CIFAR10 = Weights(
    name="cifar10",
    url=None,
    sha256=EMBEDDED_SHA256,
    file_name="default_cifar10.pth",
    preprocessing=CIFAR10_PREPROCESSING,
    categories=CIFAR10_CATEGORIES,
    provenance=(
        "trained for this project by deconvnet train-default on the 25,000 CIFAR-10 "
        "training JPEGs (seed 0); see weights/default_cifar10.md; MIT like the package"
    ),
    licence="MIT",
    num_params=NUM_PARAMS,
)


@register(
    "default",
    num_classes=NUM_CLASSES,
    preprocessing=CIFAR10_PREPROCESSING,
    layer_aliases=LAYER_ALIASES,
    weights=(DEFAULT_CIFAR10,),
    default_weights="cifar10",
    categories=CIFAR10_CATEGORIES,
)
def tiny_zfnet(**kwargs: Any) -> TinyZFNet:
    """Small ZFNet-style CIFAR-10 net shipped with the package (conv1-conv4, LRN, 0.38 M params)."""
    return TinyZFNet(**kwargs)
