"""Datasets for dataset-wide scans: a folder of images or an ``.npz`` array file.

Every item is identified by its **image id**, its index in a fixed, deterministic order
(folder: sorted relative POSIX paths; array file: row order), so results from separate
runs, shards and resumed scans refer to the same images. Items come back preprocessed with
the model's :class:`~deconvnet.inputs.preprocessing.Preprocessing`
(:func:`deconvnet.inputs.images.preprocess`).

An unreadable image is never fatal: its item carries the error message instead of pixels,
and the scan lists it as skipped. :func:`collate_by_size` groups a loader batch by input
size, so images that keep their own size (``resize_rule="none"``) are still batched
whenever sizes repeat (CIFAR-10 at 32x32 batches fully; a folder of assorted photos runs
in smaller groups, one forward pass per distinct size in the batch).
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deconvnet.errors import DeconvnetError, InputError
from deconvnet.inputs.images import load_image, preprocess
from deconvnet.inputs.preprocessing import Preprocessing

ARRAY_SUFFIX = ".npz"
ARRAY_IMAGES_KEY = "x"
ARRAY_LABELS_KEY = "y"
_RGB = 3
_IMAGE_RANK = 4
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True, eq=False)
class Item:
    """One dataset entry: ``image`` is (3, H, W) float32, or None with ``error`` set."""

    image_id: int
    image: torch.Tensor | None
    error: str | None = None


@dataclass(frozen=True, eq=False)
class Batch:
    """A loader batch: ``groups`` of ``(image ids (n,), inputs (n, 3, H, W))``, one per size,
    plus ``failed`` ``(image id, message)`` pairs for items that could not be read."""

    groups: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    failed: tuple[tuple[int, str], ...]

    @property
    def size(self) -> int:
        """Number of dataset items the batch covers (read or not)."""
        return sum(int(ids.numel()) for ids, _ in self.groups) + len(self.failed)


class ImageDataset(torch.utils.data.Dataset[Item], ABC):
    """Base: subclasses provide ``__len__``, :meth:`raw_image`, :meth:`name` and
    :meth:`fingerprint`; items are preprocessed here."""

    def __init__(self, preprocessing: Preprocessing) -> None:
        if not isinstance(preprocessing, Preprocessing):
            raise TypeError(
                f"preprocessing must be a Preprocessing, got {type(preprocessing).__name__}"
            )
        self.preprocessing = preprocessing

    @abstractmethod
    def __len__(self) -> int:
        """Number of images."""

    @abstractmethod
    def raw_image(self, image_id: int) -> np.ndarray:
        """The stored image ``image_id`` as decoded ``(H, W, 3)`` uint8 RGB."""

    @abstractmethod
    def name(self, image_id: int) -> str:
        """Human-readable identity of an image (its path, or ``file.npz[i]``)."""

    @abstractmethod
    def fingerprint(self) -> str:
        """A digest that changes when the dataset's content list changes (for resuming)."""

    def input_image(self, image_id: int) -> torch.Tensor:
        """The preprocessed network input ``(1, 3, H, W)`` of ``image_id`` (may raise)."""
        return preprocess(self.raw_image(image_id), self.preprocessing)

    def __getitem__(self, image_id: int) -> Item:
        try:
            image = self.input_image(image_id)[0]
        except (DeconvnetError, OSError) as error:
            return Item(image_id, None, " ".join(str(error).split()) or type(error).__name__)
        return Item(image_id, image)


class ImageFolder(ImageDataset):
    """Every file under ``root`` (recursively) whose suffix Pillow registers as an image.

    Order: sorted relative POSIX paths, so the image ids do not depend on the file system.
    Hidden files and folders (starting with ``.``) are left out.
    """

    def __init__(self, root: str | os.PathLike[str], preprocessing: Preprocessing) -> None:
        super().__init__(preprocessing)
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"image folder not found: {self.root}")
        suffixes = {suffix.lower() for suffix in Image.registered_extensions()}
        found = []
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for file in files:
                if not file.startswith(".") and Path(file).suffix.lower() in suffixes:
                    found.append((Path(folder) / file).relative_to(self.root).as_posix())
        self.paths: tuple[str, ...] = tuple(sorted(found))
        if not self.paths:
            raise InputError(f"no image files (Pillow formats) under {self.root}")

    def __len__(self) -> int:
        return len(self.paths)

    def raw_image(self, image_id: int) -> np.ndarray:
        return load_image(self.root / self.paths[image_id])

    def name(self, image_id: int) -> str:
        return str(self.root / self.paths[image_id])

    def fingerprint(self) -> str:
        """SHA-256 over every relative path and file size, in id order."""
        digest = hashlib.sha256(b"folder\n")
        for relative in self.paths:
            size = (self.root / relative).stat().st_size
            digest.update(f"{relative}\t{size}\n".encode())
        return digest.hexdigest()


class ArrayDataset(ImageDataset):
    """Images stored as ``x`` in an ``.npz`` file: uint8 ``(N, H, W, 3)`` or ``(N, 3, H, W)``.

    An optional ``y`` holds labels (kept as :attr:`labels`, unused by scans). Channels-first
    arrays are recognised by a size-3 second axis and a last axis that is not 3.
    """

    def __init__(self, path: str | os.PathLike[str], preprocessing: Preprocessing) -> None:
        super().__init__(preprocessing)
        self.path = Path(path)
        try:
            with np.load(self.path, allow_pickle=False) as archive:
                if ARRAY_IMAGES_KEY not in archive.files:
                    raise InputError(
                        f"{self.path} has no array {ARRAY_IMAGES_KEY!r} (found {archive.files})"
                    )
                images = archive[ARRAY_IMAGES_KEY]
                labels = archive[ARRAY_LABELS_KEY] if ARRAY_LABELS_KEY in archive.files else None
        except (OSError, ValueError) as error:
            raise InputError(f"cannot read array file {self.path}: {error}") from error
        if images.dtype != np.uint8 or images.ndim != _IMAGE_RANK or len(images) == 0:
            raise InputError(
                f"{self.path}: x must be non-empty uint8 (N, H, W, 3) or (N, 3, H, W), "
                f"got {images.dtype} {images.shape}"
            )
        if images.shape[-1] != _RGB and images.shape[1] == _RGB:
            images = images.transpose(0, 2, 3, 1)
        if images.shape[-1] != _RGB:
            raise InputError(f"{self.path}: x must have 3 colour channels, got {images.shape}")
        self.images: np.ndarray = np.ascontiguousarray(images)
        self.labels = labels

    def __len__(self) -> int:
        return len(self.images)

    def raw_image(self, image_id: int) -> np.ndarray:
        image: np.ndarray = self.images[image_id]
        return image.copy()

    def name(self, image_id: int) -> str:
        return f"{self.path}[{image_id}]"

    def fingerprint(self) -> str:
        """SHA-256 of the images' shape and bytes."""
        digest = hashlib.sha256(f"array\n{self.images.shape}\n".encode())
        flat = self.images.reshape(-1)
        for start in range(0, flat.size, _HASH_CHUNK):
            digest.update(flat[start : start + _HASH_CHUNK].tobytes())
        return digest.hexdigest()


def open_dataset(path: str | os.PathLike[str], preprocessing: Preprocessing) -> ImageDataset:
    """A folder becomes an :class:`ImageFolder`, an ``.npz`` file an :class:`ArrayDataset`.

    Raises
    ------
    InputError
        ``path`` does not exist, or is a file that is not ``.npz``.
    """
    location = Path(path)
    if location.is_dir():
        return ImageFolder(location, preprocessing)
    if location.is_file() and location.suffix.lower() == ARRAY_SUFFIX:
        return ArrayDataset(location, preprocessing)
    if not location.exists():
        raise InputError(f"dataset not found: {location}")
    raise InputError(f"dataset must be a folder of images or an .npz file, got {location}")


def collate_by_size(items: Sequence[Item]) -> Batch:
    """Stack items into one group per input size (first-seen order); collect failures."""
    failed = tuple(
        (item.image_id, item.error or "unreadable") for item in items if item.image is None
    )
    by_size: dict[tuple[int, ...], list[Item]] = {}
    for item in items:
        if item.image is not None:
            by_size.setdefault(tuple(item.image.shape), []).append(item)
    groups = tuple(
        (
            torch.tensor([item.image_id for item in members], dtype=torch.long),
            torch.stack([item.image for item in members if item.image is not None]),
        )
        for members in by_size.values()
    )
    return Batch(groups=groups, failed=failed)
