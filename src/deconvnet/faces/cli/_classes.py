"""Class names for the faces: the model's own, a ``--categories`` file, or ImageNet's."""

from __future__ import annotations

import argparse
from pathlib import Path

from deconvnet.errors import InputError
from deconvnet.inputs.reading import read_text_file
from deconvnet.models._meta import IMAGENET_CATEGORIES
from deconvnet.models.naming import class_index

IMAGENET_CLASSES = len(IMAGENET_CATEGORIES)


def add_categories_argument(parser: argparse.ArgumentParser) -> None:
    """``--categories``: a file of class names to show instead of the model's own."""
    parser.add_argument(
        "--categories",
        type=Path,
        default=None,
        help="class names, one per line (default: the model's own, ImageNet's for 1000 outputs)",
    )


def read_categories(path: Path) -> tuple[str, ...]:
    """One class per line; a leading WordNet id (``n01440764 tench, Tinca tinca``) is dropped.

    A file that is not UTF-8 text (a binary given by mistake) is refused in one line."""
    names = []
    for line in read_text_file(path, what="categories file").splitlines():
        text = line.strip()
        if not text:
            continue
        head, _, rest = text.partition(" ")
        names.append(rest.strip() if head[:1] == "n" and head[1:].isdigit() and rest else text)
    if not names:
        raise InputError(f"no class names in {path}")
    return tuple(names)


def categories_for(
    given: Path | None, own: tuple[str, ...] | None, num_outputs: int
) -> tuple[tuple[str, ...] | None, str]:
    """The names to show and where they came from (for the manifest)."""
    if given is not None:
        names = read_categories(given)
        source = str(given)
    elif own is not None:
        names, source = own, "model"
    elif num_outputs == IMAGENET_CLASSES:
        names, source = IMAGENET_CATEGORIES, "imagenet (assumed from 1000 outputs)"
    else:
        return None, "none"
    if len(names) != num_outputs:
        raise InputError(f"{source} names {len(names)} classes but the model has {num_outputs}")
    return names, source


def parse_label(text: str | None, names: tuple[str, ...] | None, num_outputs: int) -> int | None:
    """``--label``: a class index, WordNet id, class name or synonym, or its unique start
    (:func:`deconvnet.models.naming.class_index`)."""
    if text is None:
        return None
    return class_index(text, names, num_outputs)
