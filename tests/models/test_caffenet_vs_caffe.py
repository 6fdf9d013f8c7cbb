"""CaffeNet's ``features`` against genuine BVLC Caffe: same weights, Caffe's own blobs.

The oracle is ``shared/data/caffe/caffenet/caffenet_conv_fwd_*.npz`` (written by pycaffe,
see CAFFE_REFERENCE.txt); the conv weights come from the matching caffemodel through
``deconvnet.caffe`` (the importer's own tests cover its parsing). This checks what the
zoo decides: layer order (pool before norm), ceil-mode pooling, LRN constants, groups.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import deconvnet.models as zoo

CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
CHECKED_BLOBS = ("conv1", "pool1", "norm1", "conv2", "pool2", "norm2", "conv3", "conv4",
                 "conv5", "pool5")  # fmt: skip
RELATIVE_TOLERANCE = 1e-4  # float32 im2col/sgemm rounding in Caffe vs torch's kernels


@pytest.mark.parametrize(
    ("blobs_file", "size"),
    [("caffenet_conv_fwd_random.npz", 227), ("caffenet_conv_fwd_random224.npz", 224)],
)
def test_features_reproduce_caffe_blobs(shared_data: Path, blobs_file: str, size: int) -> None:
    caffe = pytest.importorskip("deconvnet.caffe")
    folder = shared_data / "caffe" / "caffenet"
    suffix = "" if size == 227 else f"_{size}"
    prototxt = f"caffenet_conv_deploy{suffix}.prototxt"
    imported, _ = caffe.load(folder / prototxt, folder / "caffenet_conv.caffemodel")
    model = zoo.load("caffenet", seed=0)
    aliases = model.layer_aliases
    with torch.no_grad():
        for layer in CONV_LAYERS:
            target = model.get_submodule(aliases[layer])
            source = imported.get_submodule(layer)
            target.weight.copy_(source.weight)
            target.bias.copy_(source.bias)
    blobs = np.load(folder / blobs_file)
    # Caffe's ReLUs run in place, so the blob "convN" holds the output of reluN.
    module_of = {aliases[name.replace("conv", "relu")]: name for name in CHECKED_BLOBS}
    x = torch.from_numpy(blobs["data"]).float()
    assert x.shape[-1] == size
    compared = []
    with torch.no_grad():
        for position, layer in enumerate(model.features):
            x = layer(x)
            name = module_of.get(f"features.{position}")
            if name is None:
                continue
            expected = torch.from_numpy(blobs[name]).float()
            assert x.shape == expected.shape, name
            error = float((x - expected).abs().max())
            assert error <= RELATIVE_TOLERANCE * float(expected.abs().max()), name
            compared.append(name)
    assert compared == list(CHECKED_BLOBS)
