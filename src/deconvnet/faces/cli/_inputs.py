"""Images for the faces: the user's files or the bundled photo, decoded and preprocessed."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deconvnet.faces.cli._numbers import MAX_BATCH, int_in
from deconvnet.inputs import images
from deconvnet.inputs.preprocessing import Preprocessing
from deconvnet.instruments.topk.scan import DEFAULT_BATCH_SIZE


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


def add_batch_size_argument(parser: argparse.ArgumentParser) -> None:
    """``--batch-size`` of the commands that run a dataset through the model (topk, evolve)."""
    parser.add_argument(
        "--batch-size",
        type=int_in(1, MAX_BATCH),
        default=DEFAULT_BATCH_SIZE,
        help="images per forward pass",
    )


def image_paths(given: list[str]) -> list[Path]:
    """The user's images, or the bundled CC0 photo when none is given."""
    return [Path(p) for p in given] if given else [images.bundled_photo()]


def image_path(given: str | None) -> Path:
    """The user's image, or the bundled CC0 photo."""
    return image_paths([given] if given else [])[0]


def prepare(path: Path, spec: Preprocessing, device: torch.device) -> PreparedImage:
    """Decode ``path`` and preprocess it for the model (``ImageError`` on bad files)."""
    rgb, downscaled = images.fit_native_size(images.load_image(path), spec)
    return PreparedImage(
        path=path,
        tensor=images.preprocess(rgb, spec, device=device),
        rgb=images.resized_rgb(rgb, spec),
        downscaled=downscaled,
    )
