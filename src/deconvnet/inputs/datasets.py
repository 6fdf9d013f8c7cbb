"""Datasets for dataset-wide scans: a folder of images or an ``.npz`` array file.

Every item is identified by its **image id**, its index in a fixed, deterministic order
(folder: sorted relative POSIX paths; array file: row order), so results from separate
runs, shards and resumed scans refer to the same images. Items come back preprocessed with
the model's :class:`~deconvnet.inputs.preprocessing.Preprocessing`
(:func:`deconvnet.inputs.images.preprocess`).

An unreadable image is never fatal: its item carries the error message instead of pixels,
and the scan lists it as skipped. That covers files that are not regular (a FIFO in the
folder is refused at once, never opened for a blocking read), undecodable, truncated or
over the pixel limit; images larger than
:data:`~deconvnet.inputs.images.MAX_NATIVE_SIDE` are downscaled for models that keep
native sizes, as ``project`` inputs are.

**Content digests**: every item carries the SHA-256 of its stored bytes (the file's bytes,
or the array row's), computed from the very bytes that were decoded, in the loader worker
that read them, so fingerprinting by content costs no second pass over the data.

:func:`collate_by_size` groups a loader batch by input
size, so images that keep their own size (``resize_rule="none"``) are still batched
whenever sizes repeat (CIFAR-10 at 32x32 batches fully; a folder of assorted photos runs
in smaller groups, one forward pass per distinct size in the batch).
"""

from __future__ import annotations

import hashlib
import os
import stat
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deconvnet.errors import DeconvnetError, InputError, one_line
from deconvnet.inputs.images import (
    decode_image,
    fit_native_size,
    is_image_file,
    preprocess,
    read_image_file,
)
from deconvnet.inputs.preprocessing import Preprocessing
from deconvnet.inputs.reading import content_digest

ARRAY_SUFFIX = ".npz"
ARRAY_IMAGES_KEY = "x"
ARRAY_LABELS_KEY = "y"
_RGB = 3
_IMAGE_RANK = 4
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True, eq=False)
class Item:
    """One dataset entry: ``image`` is (3, H, W) float32, or None with ``error`` set;
    ``digest`` is the SHA-256 of the stored bytes it was decoded from (None when unread)."""

    image_id: int
    image: torch.Tensor | None
    error: str | None = None
    digest: bytes | None = None


@dataclass(frozen=True, eq=False)
class Batch:
    """A loader batch: ``groups`` of ``(image ids (n,), inputs (n, 3, H, W))``, one per size,
    plus ``failed`` ``(image id, message)`` pairs for items that could not be read, and
    ``digests`` ``(image id, SHA-256)`` of every item whose bytes were read."""

    groups: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    failed: tuple[tuple[int, str], ...]
    digests: tuple[tuple[int, bytes], ...] = ()

    @property
    def size(self) -> int:
        """Number of dataset items the batch covers (read or not)."""
        return sum(int(ids.numel()) for ids, _ in self.groups) + len(self.failed)


class ImageDataset(torch.utils.data.Dataset[Item], ABC):
    """Base: subclasses provide ``__len__``, :meth:`read`, :meth:`name` and
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
    def read(self, image_id: int) -> tuple[np.ndarray, bytes]:
        """The stored image ``image_id`` decoded to ``(H, W, 3)`` uint8 RGB, and the SHA-256
        of the stored bytes it came from (may raise)."""

    @abstractmethod
    def name(self, image_id: int) -> str:
        """Human-readable identity of an image (its path, or ``file.npz[i]``)."""

    @abstractmethod
    def fingerprint(self) -> str:
        """A digest of the dataset's listing, cheap to recompute (for resuming and projecting);
        per-image content digests (:meth:`read`) catch what it cannot see."""

    def raw_image(self, image_id: int) -> np.ndarray:
        """The stored image ``image_id`` as decoded ``(H, W, 3)`` uint8 RGB."""
        return self.read(image_id)[0]

    def fitted_image(self, image_id: int) -> tuple[np.ndarray, bytes]:
        """:meth:`read`, downscaled as :func:`~deconvnet.inputs.images.fit_native_size` says:
        the pixels preprocessing starts from, in scans and projections alike."""
        pixels, digest = self.read(image_id)
        return fit_native_size(pixels, self.preprocessing)[0], digest

    def input_image(self, image_id: int) -> torch.Tensor:
        """The preprocessed network input ``(1, 3, H, W)`` of ``image_id`` (may raise)."""
        return preprocess(self.fitted_image(image_id)[0], self.preprocessing)

    def __getitem__(self, image_id: int) -> Item:
        try:
            pixels, digest = self.fitted_image(image_id)
            image = preprocess(pixels, self.preprocessing)[0]
        except (DeconvnetError, OSError, MemoryError) as error:
            return Item(image_id, None, one_line(error))
        return Item(image_id, image, digest=digest)


class ImageFolder(ImageDataset):
    """Every file under ``root`` (recursively) whose suffix Pillow registers as an image.

    Order: sorted relative POSIX paths, so the image ids do not depend on the file system.
    Hidden files and folders (starting with ``.``) are left out. File names that are not
    valid UTF-8 are kept (as Python's ``surrogateescape`` strings) and hashed as raw bytes.
    """

    def __init__(self, root: str | os.PathLike[str], preprocessing: Preprocessing) -> None:
        super().__init__(preprocessing)
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"image folder not found: {self.root}")
        found = []
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for file in files:
                if not file.startswith(".") and is_image_file(file):
                    found.append((Path(folder) / file).relative_to(self.root).as_posix())
        self.paths: tuple[str, ...] = tuple(sorted(found))
        if not self.paths:
            raise InputError(f"no image files (Pillow formats) under {self.root}")

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, image_id: int) -> tuple[np.ndarray, bytes]:
        path = self.root / self.paths[image_id]
        data = read_image_file(path)
        return decode_image(data, path), content_digest(data)

    def name(self, image_id: int) -> str:
        return str(self.root / self.paths[image_id])

    def fingerprint(self) -> str:
        """SHA-256 over every relative path (its bytes), file type, size and modification time
        (ns), in id order: a file swapped for another of the same size changes it."""
        digest = hashlib.sha256(b"folder/2\n")
        for relative in self.paths:
            digest.update(os.fsencode(relative))
            try:
                status = (self.root / relative).stat()
            except OSError as error:  # a dangling link, a file removed since listing
                digest.update(f"\tunreadable {error.errno}\n".encode())
                continue
            kind = "file" if stat.S_ISREG(status.st_mode) else "other"
            digest.update(f"\t{kind}\t{status.st_size}\t{status.st_mtime_ns}\n".encode())
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

    def read(self, image_id: int) -> tuple[np.ndarray, bytes]:
        image: np.ndarray = self.images[image_id]
        digest = hashlib.sha256(f"{image.shape}\n".encode())
        digest.update(image.tobytes())
        return image.copy(), digest.digest()

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


def mean_image(
    dataset: ImageDataset, progress: Callable[[int, int | None], None] | None = None
) -> np.ndarray:
    """The per-pixel mean of every image, ``(H, W, 3)`` float64 in 0..255 RGB: what Caffe's
    ``compute_image_mean`` makes for a mean file. The images must share one size.

    Raises
    ------
    InputError
        An image cannot be read, or is not the size of the first.
    """
    total: np.ndarray | None = None
    for image_id in range(len(dataset)):
        pixels = dataset.raw_image(image_id)
        if total is None:
            total = np.zeros(pixels.shape, dtype=np.float64)
        elif pixels.shape != total.shape:
            raise InputError(
                f"{dataset.name(image_id)} is {pixels.shape[1]}x{pixels.shape[0]}, not "
                f"{total.shape[1]}x{total.shape[0]} like the first image: a mean image needs "
                "one size"
            )
        total += pixels
        if progress is not None:
            progress(image_id + 1, len(dataset))
    assert total is not None  # a dataset is never empty
    mean: np.ndarray = total / len(dataset)
    return mean


def collate_by_size(items: Sequence[Item]) -> Batch:
    """Stack items into one group per input size (first-seen order); collect failures."""
    failed = tuple(
        (item.image_id, item.error or "unreadable") for item in items if item.image is None
    )
    digests = tuple((item.image_id, item.digest) for item in items if item.digest is not None)
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
    return Batch(groups=groups, failed=failed, digests=digests)
