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

from typing import Any, cast

from torch import Tensor, nn

from deconvnet.inputs.preprocessing import IMAGENET_TORCHVISION
from deconvnet.models._api import Weights, register
from deconvnet.models._meta import IMAGENET_CATEGORIES

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


class AlexNet(nn.Module):
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

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = self.avgpool(x).flatten(1)
        return cast(Tensor, self.classifier(x))


ALEXNET_IMAGENET = Weights(
    name="imagenet",
    url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    # Full digest as published in third-party manifests; it starts with torchvision's
    # file-name prefix 7be5be79, which is all torchvision itself checks.
    sha256="7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
    file_name="alexnet-owt-7be5be79.pth",
    preprocessing=IMAGENET_TORCHVISION,
    categories=IMAGENET_CATEGORIES,
    provenance="torchvision IMAGENET1K_V1 (acc@1 56.522), BSD-3-Clause; trained on ImageNet-1k",
    licence="BSD-3-Clause",
    num_params=NUM_PARAMS,
)


@register(
    "alexnet",
    num_classes=NUM_CLASSES,
    preprocessing=IMAGENET_TORCHVISION,
    layer_aliases=LAYER_ALIASES,
    weights=(ALEXNET_IMAGENET,),
    categories=IMAGENET_CATEGORIES,
)
def alexnet(**kwargs: Any) -> AlexNet:
    """AlexNet, torchvision layout (ImageNet weights: ``weights="imagenet"``)."""
    return AlexNet(**kwargs)
