"""The embedded default network: its committed weights load, classify CIFAR-10 test JPEGs,
and its features run fully convolutionally on photo-sized inputs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import deconvnet.models as zoo
from deconvnet.models._api import EMBEDDED_DIR
from deconvnet.models._download import sha256_of
from deconvnet.models._meta import CIFAR10_CATEGORIES

MIN_ACCURACY = 0.70
SUBSET_PER_CLASS = 50  # 500 images: a fast check; the full 5,000 run is marked slow
PHOTO_SIZE = (300, 451)


def _accuracy(model: torch.nn.Module, test_root: Path, per_class: int | None) -> float:
    """Top-1 accuracy on ``test/<class>/*.jpg``, preprocessing written out literally:
    RGB in [0, 1], minus mean, over std, at the files' own 32x32 size."""
    spec = model.preprocessing
    mean = torch.tensor(spec.mean).view(3, 1, 1)
    std = torch.tensor(spec.std).view(3, 1, 1)
    images, labels = [], []
    for label, name in enumerate(sorted(p.name for p in test_root.iterdir() if p.is_dir())):
        files = sorted((test_root / name).glob("*.jpg"))[:per_class]
        for path in files:
            with Image.open(path) as img:
                pixels = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
            images.append((torch.from_numpy(pixels).permute(2, 0, 1) - mean) / std)
            labels.append(label)
    batch, targets = torch.stack(images), torch.tensor(labels)
    with torch.no_grad():
        predictions = torch.cat([model(chunk).argmax(1) for chunk in batch.split(500)])
    return float((predictions == targets).float().mean())


@pytest.fixture(scope="module")
def default_model() -> torch.nn.Module:
    return zoo.load("default")


def test_embedded_weights_match_their_declared_digest() -> None:
    weights = zoo.info("default").weights[0]
    path = EMBEDDED_DIR / weights.file_name
    assert path.stat().st_size <= 5 * 1024 * 1024
    assert weights.sha256 is not None and sha256_of(path) == weights.sha256


def test_default_model_metadata(default_model: torch.nn.Module) -> None:
    assert default_model.categories == CIFAR10_CATEGORIES
    assert default_model.preprocessing.resize_rule == "none"
    assert default_model.preprocessing.input_size == (32, 32)
    assert default_model.layer_aliases["conv4"] == "features.10"
    assert not default_model.training
    assert (
        sum(p.numel() for p in default_model.parameters())
        == zoo.info("default").weights[0].num_params
    )


def test_features_are_fully_convolutional_on_a_photo(default_model: torch.nn.Module) -> None:
    # Three 3x3/2 pools rounding up: n -> ceil((n - 3) / 2) + 1.
    height, width = PHOTO_SIZE
    for _ in range(3):
        height, width = math.ceil((height - 3) / 2) + 1, math.ceil((width - 3) / 2) + 1
    with torch.no_grad():
        x = torch.zeros(1, 3, *PHOTO_SIZE)
        assert default_model.features(x).shape == (1, 128, height, width)
        assert default_model(x).shape == (1, len(CIFAR10_CATEGORIES))


def test_accuracy_on_500_test_images(default_model: torch.nn.Module, shared_data: Path) -> None:
    accuracy = _accuracy(default_model, shared_data / "cifar10" / "test", SUBSET_PER_CLASS)
    assert accuracy >= MIN_ACCURACY


@pytest.mark.slow
def test_accuracy_on_all_5000_test_images(
    default_model: torch.nn.Module, shared_data: Path
) -> None:
    accuracy = _accuracy(default_model, shared_data / "cifar10" / "test", None)
    assert accuracy >= MIN_ACCURACY
