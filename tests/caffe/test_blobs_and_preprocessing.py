"""Caffe blob names mean Caffe's blobs; preprocessing comes from the prototxt and mean file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import deconvnet as dn
from deconvnet.caffe import load, read_mean_file, schema
from deconvnet.caffe.loader import IMAGENET_MEAN_BGR
from deconvnet.errors import CaffeFormatError

BLOB_TOL = 1e-4
"""Relative to the blob's largest value: float32 im2col/sgemm rounding in Caffe vs torch."""


@pytest.fixture(scope="module")
def caffenet_conv(shared_data: Path) -> tuple[torch.nn.Module, dict[str, np.ndarray]]:
    folder = shared_data / "caffe" / "caffenet"
    net, _ = load(folder / "caffenet_conv_deploy.prototxt", folder / "caffenet_conv.caffemodel")
    return net, dict(np.load(folder / "caffenet_conv_fwd_random.npz"))


@pytest.mark.parametrize(
    "blob", ["conv1", "conv1_preact", "conv3", "conv3_preact", "conv5", "norm2", "pool5"]
)
def test_blob_names_give_caffes_blobs(caffenet_conv, blob: str) -> None:
    net, blobs = caffenet_conv
    x = torch.from_numpy(blobs["data"])
    output = dn.Deconvnet(net).layer_output(x, blob).numpy()
    expected = blobs[blob]
    assert np.abs(output - expected).max() <= BLOB_TOL * np.abs(expected).max()


def test_in_place_tops_alias_the_last_writer(caffenet_conv) -> None:
    net, blobs = caffenet_conv
    assert net.layer_aliases["conv3"] == "relu3"
    assert net.layer_aliases["conv3_preact"] == "conv3"
    assert "pool5" not in net.layer_aliases  # named like its module
    assert (blobs["conv3"] >= 0).all() and (blobs["conv3_preact"] < 0).any()
    with pytest.raises(dn.LayerNotFoundError, match="did you mean conv"):
        dn.Deconvnet(net).layer_output(torch.from_numpy(blobs["data"]), "conv9")
    projection = dn.Deconvnet(net).project(torch.from_numpy(blobs["data"]), "conv3", dn.MapMax(0))
    assert projection.layer == "relu3" and projection.layer_alias == "conv3"


def _write_mean(path: Path, mean: np.ndarray, legacy: bool) -> None:
    blob = schema.BlobProto()
    if legacy:
        blob.num, blob.channels, blob.height, blob.width = 1, *mean.shape
    else:
        blob.shape.dim.extend([1, *mean.shape])
    blob.data.extend(mean.ravel().tolist())
    path.write_bytes(blob.SerializeToString())


@pytest.mark.parametrize("legacy", [True, False])
def test_mean_file_round_trip(tmp_path: Path, legacy: bool) -> None:
    mean = np.random.default_rng(0).uniform(0, 255, (3, 5, 7)).astype(np.float32)
    _write_mean(tmp_path / "mean.binaryproto", mean, legacy)
    np.testing.assert_array_equal(read_mean_file(tmp_path / "mean.binaryproto"), mean)
    (tmp_path / "bad.binaryproto").write_bytes(b"\xff\xff\xff")
    with pytest.raises(CaffeFormatError, match="BlobProto"):
        read_mean_file(tmp_path / "bad.binaryproto")


PROTOTXT = """
name: "tiny"
layer {{ name: "data" type: "Input" top: "data"
  input_param {{ shape {{ dim: 1 dim: {channels} dim: 6 dim: 6 }} }}
  {transform} }}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param {{ num_output: 2 kernel_size: 3 }} }}
layer {{ name: "relu" type: "ReLU" bottom: "conv" top: "conv" }}
"""


def _image(value: int) -> np.ndarray:
    return np.full((6, 6, 3), value, dtype=np.uint8)


def test_transform_param_and_mean_file_set_the_preprocessing(tmp_path: Path) -> None:
    (tmp_path / "a.prototxt").write_text(
        PROTOTXT.format(channels=3, transform="transform_param { scale: 0.5 mean_value: 10 }")
    )
    _, prep = load(tmp_path / "a.prototxt")
    x = dn.images.preprocess(_image(200), prep)
    # Caffe: (pixel - mean) * scale on 0..255 pixels
    torch.testing.assert_close(x, torch.full((1, 3, 6, 6), (200 - 10) * 0.5), rtol=1e-6, atol=1e-5)

    mean = np.arange(3 * 8 * 8, dtype=np.float32).reshape(3, 8, 8)
    _write_mean(tmp_path / "mean.binaryproto", mean, legacy=True)
    (tmp_path / "b.prototxt").write_text(PROTOTXT.format(channels=3, transform=""))
    _, prep = load(tmp_path / "b.prototxt", mean_file=tmp_path / "mean.binaryproto")
    assert prep.mean == (0.0, 0.0, 0.0) and prep.mean_source == "mean.binaryproto"
    x = dn.images.preprocess(_image(100), prep)
    expected = 100.0 - mean[:, 1:7, 1:7]  # centre crop of the 8x8 mean, BGR planes
    torch.testing.assert_close(x[0], torch.from_numpy(expected), rtol=0, atol=1e-4)
    assert dn.images.deprocess(x, prep).tolist() == _image(100).tolist()

    _, prep = load(tmp_path / "b.prototxt")
    assert prep.mean == IMAGENET_MEAN_BGR and prep.channel_order == "BGR"


def test_grey_nets_get_grey_inputs(tmp_path: Path) -> None:
    (tmp_path / "g.prototxt").write_text(PROTOTXT.format(channels=1, transform=""))
    net, prep = load(tmp_path / "g.prototxt")
    assert prep.channels == 1 and prep.scale == 255 / 256
    rgb = np.zeros((6, 6, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 100, 150, 200
    x = dn.images.preprocess(rgb, prep)
    luma = 0.299 * 100 + 0.587 * 150 + 0.114 * 200  # ITU-R 601, as Pillow's "L"
    torch.testing.assert_close(x, torch.full((1, 1, 6, 6), luma / 256), rtol=1e-6, atol=1e-6)
    assert net(x).shape == (1, 2, 4, 4)


def test_named_mean_file_is_looked_up_beside_the_prototxt(tmp_path: Path) -> None:
    transform = 'transform_param { mean_file: "examples/cifar10/mean.binaryproto" }'
    (tmp_path / "c.prototxt").write_text(PROTOTXT.format(channels=3, transform=transform))
    with pytest.raises(CaffeFormatError, match="--mean-file"):
        load(tmp_path / "c.prototxt")
    _write_mean(tmp_path / "mean.binaryproto", np.ones((3, 6, 6), np.float32), legacy=False)
    _, prep = load(tmp_path / "c.prototxt")
    assert prep.mean_image is not None and prep.mean_image.shape == (3, 6, 6)
