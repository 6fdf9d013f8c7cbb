"""Decoding an image within a memory budget: what a server may spend on one request.

Pillow decodes a whole image before anything can downscale it, and a 251 kB PNG can hold
9,400 x 9,400 pixels: decoded, converted to RGB and copied into an array that is over a
gigabyte. :func:`decode_within` reads the header first and estimates the decode's cost
(:data:`BYTES_PER_PIXEL` per pixel: Pillow's decoded image, its RGB conversion and the
array). An image within the budget is decoded exactly as :func:`~.images.decode_image`
does; a JPEG over it is decoded at 1/2, 1/4 or 1/8 scale (the JPEG decoder's own
downscaling) when that fits; anything else is refused with :class:`ImageTooLargeError`
before a pixel is decoded.
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
from PIL import Image

from deconvnet.errors import ImageError
from deconvnet.inputs.images import decode_image

BYTES_PER_PIXEL = 12
"""Peak bytes per pixel of a decode: Pillow's image (up to 4), a converted copy (4) and the
RGB array (3), rounded up."""
JPEG_SCALES = (2, 4, 8)
"""The reductions a JPEG decoder can apply while decoding."""
_MB = 1 << 20


class ImageTooLargeError(ImageError):
    """An image whose decode would cost more than the budget allows."""


def decode_cost(width: int, height: int) -> int:
    """Estimated peak bytes of decoding a ``width x height`` image to an RGB array."""
    return width * height * BYTES_PER_PIXEL


def decode_within(data: bytes, name: str, *, budget: int) -> np.ndarray:
    """The image in ``data`` as an ``(H, W, 3)`` uint8 array, decoded within ``budget`` bytes.

    Raises
    ------
    ImageTooLargeError
        Its decode would cost more than ``budget`` even at the JPEG decoder's smallest
        scale (checked from the header, before decoding).
    ImageError
        As :func:`~deconvnet.inputs.images.decode_image`.
    """
    header = _header(data)
    if header is None:  # not an image Pillow can identify: let the decoder say why
        return decode_image(data, name)
    width, height, is_jpeg = header
    if decode_cost(width, height) <= budget:
        return decode_image(data, name)
    for scale in JPEG_SCALES if is_jpeg else ():
        size = (math.ceil(width / scale), math.ceil(height / scale))
        if decode_cost(*size) <= budget:
            return decode_image(data, name, draft=size)
    raise ImageTooLargeError(
        f"{name} is {width}x{height} pixels: decoding it needs about "
        f"{decode_cost(width, height) // _MB} MB, over the {budget // _MB} MB one request may "
        "use; send a smaller image"
    )


def _header(data: bytes) -> tuple[int, int, bool] | None:
    """Width, height and whether it is a JPEG, from the header alone; ``None`` if unknown."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as opened:  # lazy: reads the header only
                width, height = opened.size
                return int(width), int(height), opened.format == "JPEG"
    except Exception:  # Pillow's plugins raise many kinds; the decoder will name the problem
        return None
