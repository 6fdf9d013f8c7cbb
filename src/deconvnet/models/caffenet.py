"""BVLC reference CaffeNet (AlexNet with Caffe's pool-before-norm order and grouped convs).

Layout follows the BVLC ``deploy.prototxt``: 227x227 BGR input, conv1 96 11x11/4, ReLU,
max pool 3x3/2 (Caffe rounds up: ``ceil_mode=True``), LRN (5, alpha 1e-4, beta 0.75), conv2
256 5x5 pad 2 groups 2, ReLU, pool, LRN, conv3 384 3x3, conv4 384 groups 2, conv5 256
groups 2, pool5 (6x6x256), fc6 4096, fc7 4096, fc8 1000. ``avgpool`` (adaptive, 6x6) is the
identity at 227x227 and only lets other input sizes reach the classifier.

There is no downloadable torch file: convert the BVLC caffemodel (``bvlc_reference_caffenet
.caffemodel``, BSD-2 "unrestricted use", from Caffe's model zoo) with
``deconvnet.caffe.load`` and then map its per-layer blobs here with
:func:`state_dict_from_caffe`, or load the converted network directly::

    blobs = {"conv1": [w, b], ..., "fc8": [w, b]}   # Caffe layer name -> [weight, bias]
    torch.save(state_dict_from_caffe(blobs), "caffenet.pth")
    model = deconvnet.models.load("caffenet", weights="caffenet.pth")

Layer-name aliases (``LAYER_ALIASES``, also used by ``zfnet``)::

    conv1 features.0   relu1 features.1   pool1 features.2   norm1 features.3
    conv2 features.4   relu2 features.5   pool2 features.6   norm2 features.7
    conv3 features.8   relu3 features.9
    conv4 features.10  relu4 features.11
    conv5 features.12  relu5 features.13  pool5 features.14
    fc6 classifier.0   relu6 classifier.1   drop6 classifier.2
    fc7 classifier.3   relu7 classifier.4   drop7 classifier.5   fc8 classifier.6
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from deconvnet.errors import WeightsError
from deconvnet.inputs.preprocessing import Preprocessing
from deconvnet.models._api import register
from deconvnet.models._common import PooledClassifier, classifier_head
from deconvnet.models._meta import CAFFE_IMAGENET_MEAN_BGR, IMAGENET_CATEGORIES

NUM_CLASSES = 1000
NUM_PARAMS = 60_965_224
INPUT_SIZE = (227, 227)
POOLED_SIZE = (6, 6)
FC6_INPUTS = 256 * POOLED_SIZE[0] * POOLED_SIZE[1]
"""fc6 reads the flattened 6x6x256 pool5 output."""
DROPOUT = 0.5
CAFFE_SCALE = 255.0
LRN_SIZE = 5
LRN_ALPHA = 1e-4
LRN_BETA = 0.75
LRN_K = 1.0

CAFFE_PREPROCESSING = Preprocessing(
    input_size=INPUT_SIZE,
    resize_rule="exact",
    channel_order="BGR",
    scale=CAFFE_SCALE,
    mean=CAFFE_IMAGENET_MEAN_BGR,
)
"""Caffe's convention: BGR, [0, 255], minus the ImageNet mean pixel, resized to 227."""

LAYER_ALIASES: dict[str, str] = {
    "conv1": "features.0", "relu1": "features.1", "pool1": "features.2", "norm1": "features.3",
    "conv2": "features.4", "relu2": "features.5", "pool2": "features.6", "norm2": "features.7",
    "conv3": "features.8", "relu3": "features.9",
    "conv4": "features.10", "relu4": "features.11",
    "conv5": "features.12", "relu5": "features.13", "pool5": "features.14",
    "fc6": "classifier.0", "relu6": "classifier.1", "drop6": "classifier.2",
    "fc7": "classifier.3", "relu7": "classifier.4", "drop7": "classifier.5",
    "fc8": "classifier.6",
}  # fmt: skip

PARAM_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


def caffe_pool() -> nn.MaxPool2d:
    """CaffeNet's 3x3/2 max pooling, with Caffe's rounding up (``ceil_mode``)."""
    return nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)


def caffe_lrn() -> nn.LocalResponseNorm:
    """CaffeNet's cross-channel LRN over 5 maps."""
    return nn.LocalResponseNorm(LRN_SIZE, alpha=LRN_ALPHA, beta=LRN_BETA, k=LRN_K)


class CaffeNet(PooledClassifier):
    """The BVLC reference CaffeNet; 227x227 input gives pool5 of 256x6x6."""

    def __init__(self, num_classes: int = NUM_CLASSES, dropout: float = DROPOUT) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 96, kernel_size=11, stride=4),
            nn.ReLU(inplace=True),
            caffe_pool(),
            caffe_lrn(),
            nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=2),
            nn.ReLU(inplace=True),
            caffe_pool(),
            caffe_lrn(),
            nn.Conv2d(256, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=2),
            nn.ReLU(inplace=True),
            caffe_pool(),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(POOLED_SIZE)
        self.classifier = classifier_head(FC6_INPUTS, num_classes, dropout)


def state_dict_from_caffe(
    params: Mapping[str, Sequence[Tensor]], num_classes: int = NUM_CLASSES
) -> dict[str, Tensor]:
    """Map Caffe blobs (layer name -> ``[weight, bias]``) to :class:`CaffeNet` state-dict keys.

    Blobs are reshaped to the torch shape when only their rank differs (old V1
    caffemodels store fc weights as ``(1, 1, out, in)`` and biases as ``(1, 1, 1, out)``).

    Raises
    ------
    WeightsError
        A layer is missing, lacks a bias, or a blob has the wrong number of elements.
    """
    with torch.device("meta"):
        shapes = {key: value.shape for key, value in CaffeNet(num_classes).state_dict().items()}
    state: dict[str, Tensor] = {}
    for layer in PARAM_LAYERS:
        blobs = params.get(layer)
        if blobs is None or len(blobs) != 2:
            raise WeightsError(f"Caffe layer {layer!r} needs [weight, bias], got {blobs!r:.60}")
        for blob, kind in zip(blobs, ("weight", "bias"), strict=True):
            key = f"{LAYER_ALIASES[layer]}.{kind}"
            tensor = torch.as_tensor(blob)
            if tensor.numel() != shapes[key].numel():
                raise WeightsError(
                    f"Caffe blob {layer}.{kind} has shape {tuple(tensor.shape)}, "
                    f"CaffeNet needs {tuple(shapes[key])}"
                )
            state[key] = tensor.reshape(shapes[key]).clone()
    return state


@register(
    "caffenet",
    num_classes=NUM_CLASSES,
    preprocessing=CAFFE_PREPROCESSING,
    layer_aliases=LAYER_ALIASES,
    categories=IMAGENET_CATEGORIES,
)
def caffenet(**kwargs: Any) -> CaffeNet:
    """BVLC reference CaffeNet (weights: convert the BVLC caffemodel, see module docs)."""
    return CaffeNet(**kwargs)
