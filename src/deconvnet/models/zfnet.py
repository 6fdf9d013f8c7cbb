"""ZFNet: the architecture of Zeiler & Fergus (arXiv 1311.2901), Fig. 3.

224x224 input; conv1 96 7x7 stride 2 -> 110x110; max pool 3x3/2 -> 55; LRN; conv2 256
5x5 stride 2 -> 26; pool -> 13; LRN; conv3 384, conv4 384, conv5 256 (3x3) -> 13; pool5
-> 6x6x256; fc6 4096, fc7 4096, fc8 1000.

Padding is not stated in the paper; these choices reproduce every size in Fig. 3:
conv1 pad 1 (``floor((224 + 2 - 7) / 2) + 1 = 110``), conv2 pad 0
(``floor((55 - 5) / 2) + 1 = 26``), conv3-5 pad 1 (size kept), and 3x3/2 pools with
Caffe's rounding up (``ceil_mode=True``: 110 -> 55, 26 -> 13, 13 -> 6). Layer order and
names equal CaffeNet's (``conv5`` = ``features.12``, ``pool5`` = ``features.14``; see
``LAYER_ALIASES``). No trained weights are published for it; random init by default.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from deconvnet.models._api import register
from deconvnet.models._common import IMAGENET, PooledClassifier, classifier_head
from deconvnet.models.caffenet import FC6_INPUTS, caffe_lrn, caffe_pool
from deconvnet.models.caffenet import LAYER_ALIASES as CAFFENET_LAYER_ALIASES

NUM_CLASSES = 1000
NUM_PARAMS = 62_357_608
POOLED_SIZE = (6, 6)
DROPOUT = 0.5

LAYER_ALIASES: dict[str, str] = dict(CAFFENET_LAYER_ALIASES)


class ZFNet(PooledClassifier):
    """Zeiler & Fergus' ImageNet network; 224x224 input gives pool5 of 256x6x6."""

    def __init__(self, num_classes: int = NUM_CLASSES, dropout: float = DROPOUT) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 96, kernel_size=7, stride=2, padding=1),
            nn.ReLU(inplace=True),
            caffe_pool(),
            caffe_lrn(),
            nn.Conv2d(96, 256, kernel_size=5, stride=2),
            nn.ReLU(inplace=True),
            caffe_pool(),
            caffe_lrn(),
            nn.Conv2d(256, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            caffe_pool(),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(POOLED_SIZE)
        self.classifier = classifier_head(FC6_INPUTS, num_classes, dropout)


@register("zfnet", layer_aliases=LAYER_ALIASES, **IMAGENET)
def zfnet(**kwargs: Any) -> ZFNet:
    """ZFNet (Zeiler & Fergus Fig. 3), random init; load your own trained file."""
    return ZFNet(**kwargs)
