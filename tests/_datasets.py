"""A tiny dataset with exact ties everywhere, shared by the top-k tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deconvnet.inputs.datasets import ImageDataset, open_dataset
from deconvnet.inputs.preprocessing import Preprocessing

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
