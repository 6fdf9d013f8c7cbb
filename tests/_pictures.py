"""Finding one picture inside another, pixel for pixel (a tile in a sheet, a caption drawn
with the figures' own text renderer)."""

from __future__ import annotations

import numpy as np


def places(picture: np.ndarray, part: np.ndarray) -> list[tuple[int, int]]:
    """Top-left corners where ``part`` occurs in ``picture`` exactly (both (H, W, 3))."""
    height, width = part.shape[:2]
    corner = picture[: picture.shape[0] - height + 1, : picture.shape[1] - width + 1]
    ys, xs = np.nonzero((corner == part[0, 0]).all(axis=-1))
    return [
        (int(y), int(x))
        for y, x in zip(ys, xs, strict=True)
        if np.array_equal(picture[y : y + height, x : x + width], part)
    ]
