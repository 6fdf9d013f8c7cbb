"""One image file made ready for a model: decoded, fitted to a native size limit,
preprocessed, and the RGB pixels the network sees (what pictures show beside it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deconvnet.inputs import images
from deconvnet.inputs.preprocessing import Preprocessing


@dataclass(frozen=True)
class PreparedImage:
    """An image file ready for a model.

    Attributes
    ----------
    path : the file.
    tensor : Tensor (1, C, H, W) — the network input, on the model's device.
    rgb : uint8 (H, W, 3) — what the network saw (resized and cropped as it was).
    downscaled : the image was larger than the preprocessing's native-size limit.
    """

    path: Path
    tensor: torch.Tensor
    rgb: np.ndarray
    downscaled: bool


def prepare(path: Path, spec: Preprocessing, device: torch.device) -> PreparedImage:
    """Decode ``path`` and preprocess it for the model (``ImageError`` on bad files)."""
    rgb, downscaled = images.fit_native_size(images.load_image(path), spec)
    return PreparedImage(
        path=path,
        tensor=images.preprocess(rgb, spec, device=device),
        rgb=images.resized_rgb(rgb, spec),
        downscaled=downscaled,
    )
