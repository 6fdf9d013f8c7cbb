"""Caffe import without Caffe: ``.prototxt`` + ``.caffemodel`` (V1 and V2) to PyTorch.

>>> net, prep = load("deploy.prototxt", "weights.caffemodel")   # doctest: +SKIP
>>> net.get_submodule("conv5")                                   # doctest: +SKIP

Layers become torch modules named after the Caffe layers; see :class:`CaffeNet`.
"""

from deconvnet.caffe.loader import default_preprocessing, load
from deconvnet.caffe.network import CaffeNet
from deconvnet.caffe.parse import (
    mean_file_bytes,
    read_caffemodel,
    read_mean_file,
    read_prototxt,
)
from deconvnet.inputs.preprocessing import IMAGENET_MEAN_BGR

__all__ = [
    "IMAGENET_MEAN_BGR",
    "CaffeNet",
    "default_preprocessing",
    "load",
    "mean_file_bytes",
    "read_caffemodel",
    "read_mean_file",
    "read_prototxt",
]
