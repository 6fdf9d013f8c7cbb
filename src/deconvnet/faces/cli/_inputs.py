"""Images for the faces: the user's files or the bundled photo (made ready for the model by
:func:`deconvnet.inputs.prepared.prepare`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from deconvnet.faces.cli._numbers import MAX_BATCH, MAX_WORKERS, int_in
from deconvnet.inputs import images
from deconvnet.instruments.topk.scan import DEFAULT_BATCH_SIZE

DEFAULT_WORKERS = 1
"""One loader process decodes the next batch while the model runs on this one."""
LOADER_OPTIONS = (
    ("--batch-size", int_in(1, MAX_BATCH), DEFAULT_BATCH_SIZE, "images per forward pass"),
    (
        "--workers",
        int_in(0, MAX_WORKERS),
        DEFAULT_WORKERS,
        "loader processes decoding images while the model runs; 0 decodes in this process",
    ),
)
"""``--batch-size`` and ``--workers``: flag, type, default, help."""


def add_image_argument(parser: argparse.ArgumentParser) -> None:
    """The optional ``IMAGE`` of the one-image commands (compare, occlude, sanity)."""
    parser.add_argument(
        "image", nargs="?", metavar="IMAGE", help="an image file (default: a bundled CC0 photo)"
    )


def add_full_frame_argument(parser: argparse._ActionsContainer) -> None:
    """``--full-frame``: pictures zoom to the selected units' receptive fields unless this."""
    parser.add_argument(
        "--full-frame",
        action="store_true",
        help="show the whole input instead of zooming to the selected units' receptive fields",
    )


def add_loader_arguments(parser: argparse.ArgumentParser) -> None:
    """``--batch-size`` and ``--workers`` of the commands that run a dataset through the model
    (topk, evolve)."""
    for flag, kind, default, text in LOADER_OPTIONS:
        parser.add_argument(flag, type=kind, default=default, help=text)


def image_paths(given: list[str]) -> list[Path]:
    """The user's images, or the bundled CC0 photo when none is given."""
    return [Path(p) for p in given] if given else [images.bundled_photo()]


def image_path(given: str | None) -> Path:
    """The user's image, or the bundled CC0 photo."""
    return image_paths([given] if given else [])[0]
