"""Datasets shared by tests: a tiny one with exact ties everywhere (the top-k tests), and
readers of the shared MNIST and CIFAR-10 test copies (the trained Caffe nets' tests)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from deconvnet.inputs.datasets import ImageDataset, open_dataset
from deconvnet.inputs.preprocessing import Preprocessing
from deconvnet.models._meta import CIFAR10_CATEGORIES

TIE_SPEC = Preprocessing(input_size=(8, 8), resize_rule="none", scale=255.0)


def binary_images(count: int = 13, seed: int = 0) -> np.ndarray:
    """Pixels in {0, 255}, with exact duplicates and an all-black image (ties everywhere)."""
    rng = np.random.default_rng(seed)
    images = (rng.integers(0, 2, (count, 8, 8, 3)) * 255).astype(np.uint8)
    images[5] = images[2]
    images[9] = images[2]
    images[7] = 0
    return images


def tie_images(folder: Path) -> ImageDataset:
    """:func:`binary_images` saved as ``folder/images.npz`` and opened with :data:`TIE_SPEC`."""
    path = folder / "images.npz"
    np.savez(path, x=binary_images())
    return open_dataset(path, TIE_SPEC)


def mnist_test(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    """The shared MNIST t10k digits, (N, 28, 28) uint8, and their labels."""
    folder = shared_data / "mnist"
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz") as handle:
        digits = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz") as handle:
        labels = np.frombuffer(handle.read(), np.uint8, offset=8)
    return digits, labels


def cifar_files(shared_data: Path, split: str, per_class: int) -> list[tuple[Path, int]]:
    """The first ``per_class`` shared CIFAR-10 files of each class in ``split``, labelled."""
    return [
        (path, label)
        for label, name in enumerate(CIFAR10_CATEGORIES)
        for path in sorted((shared_data / "cifar10" / split / name).iterdir())[:per_class]
    ]
