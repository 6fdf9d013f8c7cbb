"""Class labels of a scanned dataset, read from where datasets keep them.

Three documented sources, tried in this order by ``scheme="auto"``:

* ``wnid``: every image's file name holds an ImageNet WordNet id, ``n`` and eight digits
  not inside a longer word (:data:`WNID`: ``n02123045_1234.JPEG``,
  ``n07747607_orange.JPEG``); the label is that id;
* ``folder``: a folder per class, every image exactly one folder below the root and at
  least two such folders (``cifar10/test/cat/0001.jpg``); the label is the folder's name
  (ImageNet's ``val/n01440764/…`` layout gives WordNet ids this way too);
* ``array``: an ``.npz``'s ``y``, one integer per image; the label is the integer.

A scheme applies to every image or to none: a dataset where some images have no label is
not labelled (``auto``), or refused (the scheme named explicitly). Labels are read from
the listing, never from pixels, so they cost no pass over the data.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np

from deconvnet.errors import InputError

WNID = re.compile(r"(?<![0-9A-Za-z])n[0-9]{8}(?![0-9])")
"""A WordNet id as ImageNet writes it in file and folder names (``n02123045_1234.JPEG``)."""
SCHEMES = ("auto", "wnid", "folder", "array", "none")
"""``--labels`` choices: where the labels come from (``none``: an unlabelled scan)."""
MIN_FOLDERS = 2
"""A folder per class needs at least this many class folders."""
_CLASS_DEPTH = 2
"""``class/image``: the path parts of an image in a folder per class."""


@dataclass(frozen=True)
class Labels:
    """Every image's class: ``classes`` are the distinct labels (sorted; integers for an
    array's ``y``, in numeric order), ``of_image[i]`` is image ``i``'s index into them."""

    source: str
    classes: tuple[str, ...]
    of_image: tuple[int, ...]

    def __post_init__(self) -> None:
        if any(not 0 <= label < len(self.classes) for label in self.of_image):
            raise InputError("a label index lies outside the classes")

    @classmethod
    def of(cls, source: str, keys: Sequence[str], *, numeric: bool = False) -> Labels:
        """Labels from one key per image (``numeric``: keys are integers, sorted as such)."""
        order = sorted(set(keys), key=int if numeric else None)
        index = {key: number for number, key in enumerate(order)}
        return cls(source, tuple(order), tuple(index[key] for key in keys))

    def describe(self) -> str:
        """``folder: 10 classes`` (what a scan header and a manifest record)."""
        return f"{self.source}: {len(self.classes)} classes"


def folder_labels(paths: Sequence[str], scheme: str) -> Labels | None:
    """The labels of a folder listing (relative POSIX paths) under ``scheme``.

    Raises
    ------
    InputError
        An unknown scheme, ``array`` for a folder, or an explicit scheme some image does
        not satisfy (the first such image is named).
    """
    _check_scheme(scheme)
    if scheme in ("none", "array"):
        if scheme == "array":
            raise InputError("--labels array needs an .npz dataset with a 'y'")
        return None
    if scheme in ("auto", "wnid"):
        found = [WNID.search(PurePosixPath(path).name) for path in paths]
        if all(found):
            return Labels.of("wnid", [match.group(0) for match in found if match])
        if scheme == "wnid":
            missing = paths[[match is None for match in found].index(True)]
            raise InputError(
                f"--labels wnid: {missing!r} has no WordNet id (nXXXXXXXX) in its name"
            )
    parts = [PurePosixPath(path).parts for path in paths]
    folders = {part[0] for part in parts}
    if all(len(part) == _CLASS_DEPTH for part in parts) and len(folders) >= MIN_FOLDERS:
        return Labels.of("folder", [part[0] for part in parts])
    if scheme == "folder":
        raise InputError(
            "--labels folder needs every image one folder below the root, in at least "
            f"{MIN_FOLDERS} folders (a folder per class)"
        )
    return None


def array_labels(labels: np.ndarray | None, count: int, scheme: str) -> Labels | None:
    """The labels of an array dataset with ``count`` images and ``y`` = ``labels``.

    Raises
    ------
    InputError
        ``y`` is not one integer per image (when labels are wanted), or a folder scheme.
    """
    _check_scheme(scheme)
    if scheme in ("wnid", "folder"):
        raise InputError(f"--labels {scheme} needs a folder of images, not an .npz")
    if scheme == "none" or (labels is None and scheme == "auto"):
        return None
    if labels is None:
        raise InputError("--labels array: the .npz has no 'y'")
    if labels.shape != (count,) or labels.dtype.kind not in "iu":
        raise InputError(
            f"the .npz's y must hold one integer per image, {count}, got {labels.dtype} "
            f"{labels.shape}; give --labels none to scan without labels"
        )
    return Labels.of("array", [str(int(value)) for value in labels], numeric=True)


def _check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise InputError(f"labels must be one of {', '.join(SCHEMES)}, got {scheme!r}")
