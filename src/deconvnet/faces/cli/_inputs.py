"""Images for the faces: the user's files or the bundled photo, decoded and preprocessed."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deconvnet.inputs import images
from deconvnet.inputs.preprocessing import Preprocessing

MAX_SIDE = 1024
"""Fully convolutional models see photos as they are, but no larger than this (downscaled)."""


@dataclass(frozen=True)
class PreparedImage:
    path: Path
    tensor: torch.Tensor  # (1, 3, H, W), on the model's device
    rgb: np.ndarray  # (H, W, 3) uint8, what the network saw
    downscaled: bool


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


def image_paths(given: list[str]) -> list[Path]:
    """The user's images, or the bundled CC0 photo when none is given."""
    return [Path(p) for p in given] if given else [images.bundled_photo()]


def image_path(given: str | None) -> Path:
    """The user's image, or the bundled CC0 photo."""
    return image_paths([given] if given else [])[0]


def prepare(path: Path, spec: Preprocessing, device: torch.device) -> PreparedImage:
    """Decode ``path`` and preprocess it for the model (``ImageError`` on bad files)."""
    rgb = images.load_image(path)
    downscaled = False
    if spec.resize_rule == "none" and max(rgb.shape[:2]) > MAX_SIDE:
        factor = MAX_SIDE / max(rgb.shape[:2])
        size = (max(1, round(rgb.shape[1] * factor)), max(1, round(rgb.shape[0] * factor)))
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
        downscaled = True
    return PreparedImage(
        path=path,
        tensor=images.preprocess(rgb, spec, device=device),
        rgb=images.resized_rgb(rgb, spec),
        downscaled=downscaled,
    )
