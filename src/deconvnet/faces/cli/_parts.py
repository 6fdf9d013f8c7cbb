"""The schema of ``--parts`` (``deconvnet correspondence``): file name -> part -> box.

Read like every document (:func:`~deconvnet.inputs.documents.read_document`: regular files
only, bounded size and nesting); a box is four integers (not booleans, not floats) within
:data:`MAX_COORDINATE`, ``top < bottom`` and ``left < right``. How much work the parts make
is bounded by the instrument (:mod:`deconvnet.instruments.work`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field, RootModel, StringConstraints

from deconvnet.engine.receptive import Box
from deconvnet.inputs.documents import read_document

MAX_COORDINATE = 1 << 20
"""Largest |coordinate| of a box in photo pixels (above any decodable photo)."""
MAX_IMAGES = 10_000
MAX_PARTS = 100_000
"""Most images, and parts per image, a parts file may name (how much work the parts make
is bounded by ``--max-work``, counted before the model loads)."""
MAX_PARTS_BYTES = 16 << 20

Coordinate = Annotated[int, Field(ge=-MAX_COORDINATE, le=MAX_COORDINATE)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=255)]


def _ordered(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    top, left, bottom, right = box
    if not (top < bottom and left < right):
        raise ValueError("needs [top, left, bottom, right] with top < bottom and left < right")
    return box


PartBox = Annotated[tuple[Coordinate, Coordinate, Coordinate, Coordinate], AfterValidator(_ordered)]
ImageParts = Annotated[dict[Name, PartBox], Field(max_length=MAX_PARTS)]


class PartsDocument(RootModel[Annotated[dict[Name, ImageParts], Field(max_length=MAX_IMAGES)]]):
    """``{"dog1.jpg": {"left eye": [top, left, bottom, right], ...}, ...}``."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False)


def read_parts(path: Path) -> dict[str, dict[str, Box]]:
    """``parts.json`` validated: file name -> part -> ``(top, left, bottom, right)``.

    Raises
    ------
    InputError
        Not a regular file, too large or deep, not JSON, or a bad name or box (one line
        naming it).
    """
    document = read_document(path, PartsDocument, what="--parts", limit=MAX_PARTS_BYTES)
    return {image: dict(boxes) for image, boxes in document.root.items()}
