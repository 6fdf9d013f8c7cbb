"""The trained Caffe nets of ../shared/data/caffe/trained, loaded and fed as the command line
does (``--caffe`` + the preprocessing the prototxt and flags give, images decoded by the
CLI's own ``prepare``), reach their known accuracies on the shared test sets.

Known accuracies on these shared copies (MNIST t10k; CIFAR-10 test as JPEG, mean image from
the shared training JPEGs written as a Caffe mean.binaryproto): LeNet 99.1 %, cifar10_quick
73.74 %, cifar10_full 79.38 %. The full sets are slow-marked; subsets run by default.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deconvnet.caffe import schema
from deconvnet.faces.cli import build_parser, main
from deconvnet.faces.cli._model import load_model
from deconvnet.inputs.prepared import prepare
from tests._datasets import cifar_files, mnist_test

KNOWN = {"lenet": 0.991, "cifar10_quick": 0.7374, "cifar10_full": 0.7938}
FULL_SET_TOLERANCE = 0.002
"""Full sets: within 0.2 points of the known accuracy (resampling and rounding only)."""
SUBSET_TOLERANCE = 0.05
"""Subsets (500-1000 images): within 5 points (binomial spread about 2 points)."""
BATCH = 500


def _mnist_pngs(shared_data: Path, folder: Path, limit: int) -> list[tuple[Path, int]]:
    digits, labels = mnist_test(shared_data)
    folder.mkdir(exist_ok=True)
    items = []
    for index in range(min(limit, len(digits))):
        path = folder / f"{index:05d}.png"
        Image.fromarray(digits[index], mode="L").save(path)
        items.append((path, int(labels[index])))
    return items


def _write_mean(shared_data: Path, path: Path, per_class: int) -> Path:
    """Caffe's compute_image_mean on the shared training JPEGs: a (1, 3, 32, 32) BlobProto in
    the data's channel order (R, G, B, as Caffe's convert_cifar_data stores CIFAR-10)."""
    pixels = [
        np.asarray(Image.open(p).convert("RGB"), np.float64)
        for p, _ in cifar_files(shared_data, "train", per_class)
    ]
    mean = np.mean(pixels, axis=0).transpose(2, 0, 1)
    blob = schema.BlobProto()
    blob.num, blob.channels, blob.height, blob.width = 1, *mean.shape
    blob.data.extend(mean.ravel().tolist())
    path.write_bytes(blob.SerializeToString())
    return path


def _accuracy(argv: list[str], items: list[tuple[Path, int]]) -> float:
    loaded = load_model(build_parser().parse_args(["layers", *argv]))
    correct = 0
    for start in range(0, len(items), BATCH):
        chunk = items[start : start + BATCH]
        x = torch.cat([prepare(p, loaded.preprocessing, loaded.device).tensor for p, _ in chunk])
        with torch.no_grad():
            predictions = loaded.model(x).argmax(1)
        correct += int((predictions == torch.tensor([label for _, label in chunk])).sum())
    return correct / len(items)


def _lenet(shared_data: Path) -> list[str]:
    folder = shared_data / "caffe" / "trained" / "lenet_mnist_v2"
    return ["--caffe", str(folder / "lenet.prototxt"), str(folder / "lenet_iter_10000.caffemodel")]


def _cifar_net(shared_data: Path, name: str, mean_file: Path) -> list[str]:
    folder = shared_data / "caffe" / "trained" / "cifar10"
    weights = {
        "cifar10_quick": "cifar10_quick_iter_5000",
        "cifar10_full": "cifar10_full_iter_70000",
    }
    return [
        "--caffe",
        str(folder / f"{name}.prototxt"),
        str(folder / f"{weights[name]}.caffemodel"),
        "--mean-file",
        str(mean_file),
        "--no-bgr",
    ]


def _check_lenet(shared_data: Path, tmp_path: Path, limit: int, tolerance: float) -> None:
    items = _mnist_pngs(shared_data, tmp_path / "mnist", limit)
    accuracy = _accuracy(_lenet(shared_data), items)
    assert accuracy == pytest.approx(KNOWN["lenet"], abs=tolerance), accuracy


def _check_cifar(
    shared_data: Path, tmp_path: Path, mean_per_class: int, test_per_class: int, tolerance: float
) -> None:
    mean_file = _write_mean(shared_data, tmp_path / "mean.binaryproto", mean_per_class)
    items = cifar_files(shared_data, "test", test_per_class)
    for name in ("cifar10_quick", "cifar10_full"):
        accuracy = _accuracy(_cifar_net(shared_data, name, mean_file), items)
        assert accuracy == pytest.approx(KNOWN[name], abs=tolerance), (name, accuracy)


def test_lenet_subset(shared_data: Path, tmp_path: Path) -> None:
    _check_lenet(shared_data, tmp_path, 1000, SUBSET_TOLERANCE)


def test_cifar10_subset(shared_data: Path, tmp_path: Path) -> None:
    _check_cifar(shared_data, tmp_path, 100, 50, SUBSET_TOLERANCE)


@pytest.mark.slow
def test_lenet_full_test_set(shared_data: Path, tmp_path: Path) -> None:
    _check_lenet(shared_data, tmp_path, 10_000, FULL_SET_TOLERANCE)


@pytest.mark.slow
def test_cifar10_full_test_set(shared_data: Path, tmp_path: Path) -> None:
    _check_cifar(shared_data, tmp_path, 2500, 500, FULL_SET_TOLERANCE)


def test_grey_and_cifar_nets_project_from_the_command_line(
    shared_data: Path, tmp_path: Path
) -> None:
    digit = _mnist_pngs(shared_data, tmp_path / "mnist", 1)[0][0]
    out = tmp_path / "lenet"
    assert main(["project", str(digit), *_lenet(shared_data), "--layer", "conv2",
                 "--select", "top:4", "--out", str(out)]) == 0  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["preprocessing"]["channels"] == 1
    mean_file = _write_mean(shared_data, tmp_path / "mean.binaryproto", 10)
    photo = cifar_files(shared_data, "test", 1)[0][0]
    out = tmp_path / "cifar"
    argv = ["project", str(photo), *_cifar_net(shared_data, "cifar10_quick", mean_file)]
    assert main([*argv, "--layer", "conv3", "--select", "top:4", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["layer"] == "relu3" and manifest["layer_alias"] == "conv3"
    assert manifest["preprocessing"]["mean_image"] == {
        "shape": [3, 32, 32],
        "source": "mean.binaryproto",
    }
    assert manifest["preprocessing_flags"]["bgr"] is False


def test_mean_file_command_makes_the_mean_the_cifar_example_needs(
    shared_data: Path, tmp_path: Path
) -> None:
    """Issue 23, item 8: ``deconvnet mean-file`` writes the mean.binaryproto the README's
    cifar10_quick example reads. Oracle: the per-pixel mean computed here with NumPy over
    the same files (Caffe's compute_image_mean), stored as float32."""
    from deconvnet.caffe import read_mean_file

    files = cifar_files(shared_data, "train", 10)
    folder = tmp_path / "train"
    for path, _ in files:
        (folder / path.parent.name).mkdir(parents=True, exist_ok=True)
        (folder / path.parent.name / path.name).symlink_to(path)
    out = tmp_path / "mean"
    assert main(["mean-file", str(folder), "--out", str(out)]) == 0
    written = read_mean_file(out / "mean.binaryproto")
    expected = read_mean_file(_write_mean(shared_data, tmp_path / "oracle.binaryproto", 10))
    assert written.shape == (3, 32, 32)
    np.testing.assert_allclose(written, expected, atol=1e-4)
    photo = shared_data / "cifar10" / "test" / "horse" / "0000.jpg"
    argv = [
        "project",
        str(photo),
        *_cifar_net(shared_data, "cifar10_quick", out / "mean.binaryproto"),
    ]
    assert main([*argv, "--layer", "conv3", "--out", str(tmp_path / "horse")]) == 0
