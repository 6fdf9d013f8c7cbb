"""Real trained Caffe models: accuracy on real test sets, and MTCNN against a numpy oracle.

Published accuracies: LeNet ~99 % on MNIST, cifar10_quick ~75 %, cifar10_full ~81 % (on
the PNG originals; the shared CIFAR-10 copy is JPEG, about a point lower). Preprocessing as
the nets were trained (their train_test prototxts): LeNet ``scale: 0.00390625`` on 0..255
grey pixels; CIFAR-10 RGB planes (Caffe's convert_cifar_data keeps the file's R, G, B order)
in 0..255 minus the training-set mean image (computed here from the shared training JPEGs,
since Caffe's mean.binaryproto is not shipped).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deconvnet.caffe import load, read_caffemodel, read_prototxt
from deconvnet.caffe.parse import blob_shape, net_definition
from tests._datasets import cifar_files, mnist_test

LENET_SCALE = 0.00390625


def _mnist(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    digits, labels = mnist_test(shared_data)
    return digits.reshape(-1, 1, 28, 28), labels


def _mnist_accuracy(shared_data: Path, version: str, limit: int | None) -> float:
    folder = shared_data / "caffe" / "trained" / f"lenet_mnist_{version}"
    net, prep = load(folder / "lenet.prototxt", folder / "lenet_iter_10000.caffemodel")
    assert prep.scale == 255 * LENET_SCALE
    images, labels = _mnist(shared_data)
    images, labels = images[:limit], labels[:limit]
    with torch.no_grad():
        scores = net(torch.from_numpy(images.astype(np.float32) * LENET_SCALE))
    return float((scores.argmax(1).numpy() == labels).mean())


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_lenet_mnist_accuracy_subset(shared_data: Path, version: str) -> None:
    assert _mnist_accuracy(shared_data, version, 2000) >= 0.98


@pytest.mark.slow
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_lenet_mnist_accuracy_full(shared_data: Path, version: str) -> None:
    assert _mnist_accuracy(shared_data, version, None) >= 0.985


def _cifar_images(shared_data: Path, split: str, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    files = cifar_files(shared_data, split, per_class)
    images = [np.asarray(Image.open(path).convert("RGB"), np.float32) for path, _ in files]
    return np.stack(images), np.array([label for _, label in files])


def _cifar_accuracy(
    shared_data: Path, mean_per_class: int, test_per_class: int
) -> dict[str, float]:
    mean_image = _cifar_images(shared_data, "train", mean_per_class)[0].mean(axis=0)
    images, labels = _cifar_images(shared_data, "test", test_per_class)
    batch = torch.from_numpy((images - mean_image).transpose(0, 3, 1, 2).copy())  # RGB planes
    folder = shared_data / "caffe" / "trained" / "cifar10"
    results = {}
    for name, weights in (
        ("cifar10_quick", "cifar10_quick_iter_5000"),
        ("cifar10_full", "cifar10_full_iter_70000"),
    ):
        for prototxt in (f"{name}.prototxt", f"{name}.v2-bvlc-head.prototxt"):
            net, _ = load(folder / prototxt, folder / f"{weights}.caffemodel")
            with torch.no_grad():
                predictions = net(batch).argmax(1).numpy()
            results[prototxt] = float((predictions == labels).mean())
    return results


def test_cifar10_accuracy_subset(shared_data: Path) -> None:
    results = _cifar_accuracy(shared_data, 100, 50)
    assert results["cifar10_quick.prototxt"] == results["cifar10_quick.v2-bvlc-head.prototxt"]
    assert results["cifar10_full.prototxt"] == results["cifar10_full.v2-bvlc-head.prototxt"]
    assert results["cifar10_quick.prototxt"] >= 0.66
    assert results["cifar10_full.prototxt"] >= 0.72


@pytest.mark.slow
def test_cifar10_accuracy_full(shared_data: Path) -> None:
    results = _cifar_accuracy(shared_data, 2500, 500)
    assert results["cifar10_quick.prototxt"] >= 0.71
    assert results["cifar10_full.prototxt"] >= 0.77


# ---- MTCNN: no Caffe blobs are shipped, so a float64 numpy transcription is the oracle ----


def _np_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int) -> np.ndarray:
    windows = np.lib.stride_tricks.sliding_window_view(x, w.shape[2:], axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride]
    return np.einsum("nchwij,ocij->nohw", windows, w) + b[None, :, None, None]


def _np_max_pool_ceil(x: np.ndarray, k: int, s: int) -> np.ndarray:
    h, w = x.shape[2:]
    oh, ow = (-(-(h - k) // s) + 1, -(-(w - k) // s) + 1)
    out = np.empty((*x.shape[:2], oh, ow))
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = x[:, :, i * s : min(i * s + k, h), j * s : min(j * s + k, w)].max(
                axis=(2, 3)
            )
    return out


def _numpy_forward(prototxt: Path, caffemodel: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    definition = net_definition(read_prototxt(prototxt))
    weights = {
        layer.name: [np.array(b.data, np.float64).reshape(blob_shape(b)) for b in layer.blobs]
        for layer in read_caffemodel(caffemodel).layer
    }
    blobs = {next(iter(definition.inputs)): x}
    for layer in definition.layers:
        bottom, params, w = blobs[layer.bottoms[0]], layer.params, weights.get(layer.name)
        if layer.type == "Convolution":
            p = layer.params.convolution_param
            out = _np_conv(bottom, w[0], w[1], p.stride[0] if p.stride else 1)
        elif layer.type == "PReLU":
            slope = w[0].reshape(1, -1, *([1] * (bottom.ndim - 2)))
            out = np.where(bottom > 0, bottom, bottom * slope)
        elif layer.type == "Pooling":
            out = _np_max_pool_ceil(
                bottom, params.pooling_param.kernel_size, params.pooling_param.stride
            )
        elif layer.type == "InnerProduct":
            out = bottom.reshape(len(bottom), -1) @ w[0].T + w[1]
        elif layer.type == "Dropout":
            out = bottom
        elif layer.type == "Softmax":
            e = np.exp(bottom - bottom.max(axis=1, keepdims=True))
            out = e / e.sum(axis=1, keepdims=True)
        else:
            raise AssertionError(f"oracle lacks {layer.type}")
        blobs[layer.tops[0]] = out
    return blobs


@pytest.mark.parametrize(
    ("net_name", "size"), [("det1", 12), ("det1", 31), ("det2", 24), ("det3", 48)]
)
def test_mtcnn_matches_numpy_oracle(shared_data: Path, net_name: str, size: int) -> None:
    folder = shared_data / "caffe" / "trained" / "mtcnn"
    prototxt, caffemodel = folder / f"{net_name}.prototxt", folder / f"{net_name}.caffemodel"
    net, _ = load(prototxt, caffemodel)
    assert isinstance(
        net.get_submodule("PReLU1" if net_name == "det1" else "prelu1"), torch.nn.PReLU
    )
    x = np.random.default_rng(5).uniform(-1, 1, (2, 3, size, size))  # MTCNN: (pixel-127.5)/128
    expected = _numpy_forward(prototxt, caffemodel, x)
    with torch.no_grad():
        outputs = net(torch.from_numpy(x).float())
    assert len(outputs) == len(net.outputs) >= 2
    for name, value in zip(net.outputs, outputs, strict=True):
        want = expected[name]
        scale = np.abs(want).max()
        assert np.abs(value.double().numpy() - want).max() <= 1e-5 * scale + 1e-6, name
