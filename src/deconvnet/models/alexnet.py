"""AlexNet in torchvision's layout ("one weird trick" variant: 64-192-384-256-256 filters).

State-dict keys and shapes equal ``torchvision.models.alexnet`` so its ImageNet file loads
unchanged. Layer-name aliases (``LAYER_ALIASES``)::

    conv1 features.0   relu1 features.1   pool1 features.2
    conv2 features.3   relu2 features.4   pool2 features.5
    conv3 features.6   relu3 features.7
    conv4 features.8   relu4 features.9
    conv5 features.10  relu5 features.11  pool5 features.12
    fc6 classifier.1   relu6 classifier.2
    fc7 classifier.4   relu7 classifier.5  fc8 classifier.6
"""

from __future__ import annotations

from typing import Any

from torch import nn

from deconvnet.models._api import register
from deconvnet.models._common import IMAGENET, PooledClassifier, torchvision_imagenet

NUM_CLASSES = 1000
NUM_PARAMS = 61_100_840
POOLED_SIZE = (6, 6)
DROPOUT = 0.5

LAYER_ALIASES: dict[str, str] = {
    "conv1": "features.0", "relu1": "features.1", "pool1": "features.2",
    "conv2": "features.3", "relu2": "features.4", "pool2": "features.5",
    "conv3": "features.6", "relu3": "features.7",
    "conv4": "features.8", "relu4": "features.9",
    "conv5": "features.10", "relu5": "features.11", "pool5": "features.12",
    "fc6": "classifier.1", "relu6": "classifier.2",
    "fc7": "classifier.4", "relu7": "classifier.5", "fc8": "classifier.6",
}  # fmt: skip


class AlexNet(PooledClassifier):
    """torchvision's AlexNet: 224x224 input, 6x6x256 after pool5 (adaptive pooling keeps the
    classifier usable at other sizes)."""

    def __init__(self, num_classes: int = NUM_CLASSES, dropout: float = DROPOUT) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(POOLED_SIZE)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * POOLED_SIZE[0] * POOLED_SIZE[1], 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )


ALEXNET_IMAGENET = torchvision_imagenet(
    "alexnet-owt-7be5be79.pth",
    # Full digest as published in third-party manifests; it starts with torchvision's
    # file-name prefix 7be5be79, which is all torchvision itself checks.
    "7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
    accuracy="56.522",
    num_params=NUM_PARAMS,
)


@register("alexnet", layer_aliases=LAYER_ALIASES, weights=(ALEXNET_IMAGENET,), **IMAGENET)
def alexnet(**kwargs: Any) -> AlexNet:
    """AlexNet, torchvision layout (ImageNet weights: ``weights="imagenet"``)."""
    return AlexNet(**kwargs)
