"""Pixels in and out: decode any image file to RGB, and turn it into a network input and back.

All decoding goes through Pillow. The rules chosen here, once, for every caller:

* **Orientation**: the EXIF ``Orientation`` tag is applied (``ImageOps.exif_transpose``), so
  a phone photo is upright before the network sees it.
* **Transparency** (modes ``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La`` and ``P``/``L``/``RGB``
  with a ``transparency`` entry) is composited over **white**, as a viewer would show it:
  ``out = round((rgb * a + 255 * (255 - a)) / 255)`` in integers. Dropping the alpha
  instead would expose whatever colour hides under fully transparent pixels.
* **High bit depth and float grey** (modes ``I;16*``, ``I``, ``F``) are stretched linearly
  from the image's own finite ``[min, max]`` to ``[0, 255]`` (a constant image becomes
  black, non-finite pixels take the minimum). Pillow's own ``convert("L")`` clips these
  modes at 255, which turns most 16-bit images white.
* Every other mode (``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ``RGBX``)
  uses Pillow's ``convert("RGB")``; grey is replicated to three channels.
* Pillow's decompression-bomb guard stays on and is made strict: an image over
  ``PIL.Image.MAX_IMAGE_PIXELS`` raises :class:`~deconvnet.errors.ImageError` (Pillow itself
  only warns below twice the limit). Truncated files raise too: this module never sets
  ``ImageFile.LOAD_TRUNCATED_IMAGES``.
* **Truncated or corrupt PNGs are refused**, not loaded: Pillow decodes a PNG cut after its
  image data (missing its last CRC and ``IEND``) without a word, so every PNG's chunks are
  walked first; each CRC must match and the file must reach ``IEND``.
* **Any** exception from Pillow's open, load or conversion (its plugins raise many kinds,
  e.g. ``RuntimeError`` from AVIF, ``BLPFormatError``, ``MemoryError`` from JPEG 2000) is a
  bad image: :class:`~deconvnet.errors.ImageError` with one line.
* Only regular files are read, at most
  :data:`~deconvnet.inputs.reading.MAX_IMAGE_FILE_BYTES` (:mod:`deconvnet.inputs.reading`):
  a FIFO or device is refused at once instead of blocking.

Resizing is Pillow's filter on the 8-bit image (bilinear unless the spec's ``interpolation``
says otherwise; it anti-aliases when shrinking), which is what torchvision's transforms do
with PIL images; Caffe's demos resized floats with scikit-image instead, so "exact" inputs
can differ from Caffe's by a few grey levels.
"""

from __future__ import annotations

import functools
import io
import os
import struct
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from deconvnet.errors import ImageError, InputError, one_line
from deconvnet.inputs.preprocessing import Interpolation, Preprocessing
from deconvnet.inputs.reading import MAX_IMAGE_FILE_BYTES, read_regular_file

MIN_SIDE = 1
"""Smallest side (pixels) :func:`preprocess` accepts unless the caller asks for more."""

WHITE = 255
"""Background that transparent pixels are composited over."""

PHOTO_DIR = Path(__file__).resolve().parent / "photos"
"""Where the bundled photos live inside the installed package (see its README.md)."""

BUNDLED_PHOTOS: dict[str, str] = {
    "chelsea": "Chelsea the cat: 'No copyright restrictions. CC0 by the photographer "
    "(Stefan van der Walt).' (scikit-image sample data, skimage.data.chelsea)",
    "coffee": "Coffee cup: 'No copyright restrictions. CC0 by the photographer "
    "(Rachel Michetti).' (scikit-image sample data, skimage.data.coffee)",
}
"""Name -> licence of every photo :func:`bundled_photo` returns, quoted from scikit-image."""

DEFAULT_PHOTO = "chelsea"
"""The photo sub-commands use when given no image."""

_MAX_8BIT = 255
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
MAX_NATIVE_SIDE = 1024
"""Fully convolutional models (``resize_rule="none"``) see images as they are, but never
with a side longer than this: larger ones are downscaled (:func:`fit_native_size`), so a
9,400-pixel photo does not make a 17 GB forward pass."""

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHUNK_HEADER = 8
_PNG_CRC = 4
_PNG_END = b"IEND"


@functools.cache
def image_suffixes() -> frozenset[str]:
    """The file suffixes Pillow registers for image formats (lower case, with the dot):
    what a folder of images or the explorer's library lists."""
    return frozenset(suffix.lower() for suffix in Image.registered_extensions())


def is_image_file(name: str | os.PathLike[str]) -> bool:
    """``name`` ends in a suffix of :func:`image_suffixes` (any case)."""
    return Path(name).suffix.lower() in image_suffixes()


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file to an upright ``(H, W, 3)`` uint8 RGB array.

    See the module docstring for the mode-conversion rules. Multi-frame files (GIF, TIFF)
    give their first frame. Images of any size down to 1x1 load; networks check their
    minimum in :func:`preprocess`.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    IsADirectoryError
        ``path`` is a directory.
    ImageError
        ``path`` is not a regular file (a FIFO, socket or device), or the file is empty,
        truncated, corrupt, not an image, in an unsupported format, or larger than
        ``PIL.Image.MAX_IMAGE_PIXELS`` or :data:`~deconvnet.inputs.reading.MAX_IMAGE_FILE_BYTES`.
    """
    return decode_image(read_image_file(path), path)


def read_image_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of an image file, read without blocking (see :func:`load_image`'s errors)."""
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"image file not found: {file}")
    if file.is_dir():
        raise IsADirectoryError(f"expected an image file, got a directory: {file}")
    try:
        return read_regular_file(file, MAX_IMAGE_FILE_BYTES, what="image file")
    except InputError as error:
        raise ImageError(str(error)) from error


def decode_image(
    data: bytes, name: str | os.PathLike[str], *, draft: tuple[int, int] | None = None
) -> np.ndarray:
    """Decode the bytes of an image file (named ``name`` in errors) as :func:`load_image` does.

    ``draft`` (width, height) lets a JPEG decode at 1/2, 1/4 or 1/8 scale, no smaller than
    that (Pillow's ``draft``); other formats ignore it.

    Raises
    ------
    ImageError
        Anything Pillow cannot decode cleanly, a truncated or corrupt PNG, or an image over
        the pixel limit.
    """
    file = Path(name)
    if data.startswith(_PNG_SIGNATURE):
        _check_png_chunks(memoryview(data), file)
    buffer = io.BytesIO(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(buffer) as opened:
                if draft is not None:
                    opened.draft("RGB", draft)
                _check_pixel_limit(opened, file)
                opened.load()
                return _to_rgb(ImageOps.exif_transpose(opened))
    except ImageError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageError(f"refusing to decode {file}: {one_line(exc)}") from exc
    except Exception as exc:  # Pillow's plugins raise many kinds on bad data; all mean the same
        reason = one_line(exc).replace(f" {buffer!r}", "")  # Pillow names its file object
        raise ImageError(f"cannot decode image {file}: {reason}") from exc


def fit_native_size(image: np.ndarray, spec: Preprocessing) -> tuple[np.ndarray, bool]:
    """``image`` downscaled (by the spec's filter) so no side exceeds
    :data:`MAX_NATIVE_SIDE` when ``spec`` keeps native sizes (``resize_rule="none"``); other
    rules resize anyway. Also returns whether it was downscaled."""
    longest = max(image.shape[:2])
    if spec.resize_rule != "none" or longest <= MAX_NATIVE_SIDE:
        return image, False
    factor = MAX_NATIVE_SIDE / longest
    height = max(1, round(image.shape[0] * factor))
    width = max(1, round(image.shape[1] * factor))
    return _resize(image, (height, width), spec.interpolation), True


def require_min_side(image: np.ndarray, min_side: int, *, what: str = "image") -> None:
    """Raise :class:`ImageError` unless both sides of ``image`` (H, W, ...) are ``>= min_side``.

    Networks need a minimum input (a stack of strided layers must leave at least one unit);
    the caller knows that number, this only checks it with a readable message.
    """
    height, width = image.shape[:2]
    if min(height, width) < min_side:
        raise ImageError(
            f"{what} is {height}x{width} pixels; at least {min_side} on each side is needed"
        )


def resized_rgb(image: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """The ``(H, W, 3)`` uint8 RGB image the network sees: resized and cropped per ``spec``.

    Use it to show the input beside its projections: both share the network's pixel grid.
    """
    _check_rgb_array(image)
    require_min_side(image, MIN_SIDE)
    if spec.resize_rule == "none":
        return image.copy()
    if spec.resize_rule == "exact":
        return _resize(image, spec.input_size, spec.interpolation)
    if spec.resize_to is None:  # Preprocessing.__post_init__ forbids this; keeps mypy exact
        raise InputError(f"resize_rule {spec.resize_rule!r} needs resize_to")
    if spec.resize_rule == "squash_then_center_crop":
        resized = _resize(image, (spec.resize_to, spec.resize_to), spec.interpolation)
    else:
        shorter = _shorter_side_size(image.shape[:2], spec.resize_to)
        resized = _resize(image, shorter, spec.interpolation)
    return _center_crop(resized, spec.input_size)


def preprocess(
    image: np.ndarray,
    spec: Preprocessing,
    device: torch.device | str | None = None,
    *,
    min_side: int = MIN_SIDE,
) -> torch.Tensor:
    """Turn a ``(H, W, 3)`` uint8 RGB image into a ``(1, C, H', W')`` float32 network input.

    Steps, in ``spec``'s order: resize/crop (:func:`resized_rgb`), divide by 255, multiply by
    ``spec.scale``, reorder channels, ``(x - mean) / std``.

    Parameters
    ----------
    min_side
        The network's smallest usable input side; checked on the resized image.

    Raises
    ------
    InputError
        ``image`` is not a ``(H, W, 3)`` uint8 array.
    ImageError
        The resized image is smaller than ``min_side``.
    """
    shown = resized_rgb(image, spec)
    require_min_side(shown, min_side, what="network input")
    pixels = torch.from_numpy(np.ascontiguousarray(shown)).to(device=device)
    x = pixels.permute(2, 0, 1).to(torch.float32)
    if spec.channels == 1:
        x = (x * _LUMA.to(x.device).view(3, 1, 1)).sum(dim=0, keepdim=True)
    x = x / _MAX_8BIT * spec.scale
    if spec.channel_order == "BGR" and spec.channels == 3:
        x = x.flip(0)
    if spec.mean_image is not None:
        x = x - _mean_image(spec.mean_image, tuple(x.shape[1:])).to(x.device)
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    return ((x - mean) / std).unsqueeze(0)


_LUMA = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32)
"""ITU-R 601 luma weights, as Pillow's ``convert("L")``."""


def _mean_image(mean: np.ndarray, size_hw: tuple[int, ...]) -> torch.Tensor:
    """The centre ``size_hw`` of a mean image (Caffe crops its mean file with the data)."""
    height, width = int(size_hw[0]), int(size_hw[1])
    if mean.shape[1] < height or mean.shape[2] < width:
        raise InputError(
            f"the mean image is {mean.shape[1]}x{mean.shape[2]}, smaller than the "
            f"network input {height}x{width}"
        )
    top, left = (mean.shape[1] - height) // 2, (mean.shape[2] - width) // 2
    crop = mean[:, top : top + height, left : left + width]
    return torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32))


def preprocess_batch(
    images: Sequence[np.ndarray],
    spec: Preprocessing,
    device: torch.device | str | None = None,
    *,
    min_side: int = MIN_SIDE,
) -> torch.Tensor:
    """:func:`preprocess` each image and stack them into ``(N, 3, H, W)``.

    Raises
    ------
    InputError
        No images, or (with ``resize_rule="none"``) images of different sizes.
    """
    if len(images) == 0:
        raise InputError("preprocess_batch got no images; pass at least one")
    inputs = [preprocess(image, spec, device, min_side=min_side) for image in images]
    sizes = sorted({tuple(x.shape[2:]) for x in inputs})
    if len(sizes) > 1:
        raise InputError(f"images give inputs of different sizes {sizes}; a batch needs one size")
    return torch.cat(inputs)


def deprocess(tensor: torch.Tensor, spec: Preprocessing) -> np.ndarray:
    """Invert the normalisation of :func:`preprocess`: ``(3, H, W)`` or ``(1, 3, H, W)`` to uint8.

    Values are mapped back to RGB pixels (``x * std + mean``, channel order undone, divided by
    ``spec.scale``), then rounded and clipped to ``[0, 255]``. Resizing is not undone.

    Raises
    ------
    InputError
        ``tensor`` is not ``(3, H, W)`` or ``(1, 3, H, W)``.
    """
    if not isinstance(tensor, torch.Tensor):
        raise InputError(f"deprocess needs a torch.Tensor, got {type(tensor).__name__}")
    x = tensor.detach()
    if x.dim() == 4 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 3 or x.shape[0] != spec.channels:
        raise InputError(
            f"deprocess needs ({spec.channels}, H, W) or (1, {spec.channels}, H, W), "
            f"got {tuple(tensor.shape)}"
        )
    values = x.to(device="cpu", dtype=torch.float64).numpy()
    mean = np.asarray(spec.mean, dtype=np.float64).reshape(-1, 1, 1)
    std = np.asarray(spec.std, dtype=np.float64).reshape(-1, 1, 1)
    values = values * std + mean
    if spec.mean_image is not None:
        values = values + _mean_image(spec.mean_image, values.shape[1:]).double().numpy()
    pixels: np.ndarray = values / spec.scale * _MAX_8BIT
    if spec.channel_order == "BGR" and spec.channels == 3:
        pixels = pixels[::-1]
    if spec.channels == 1:
        pixels = np.repeat(pixels, 3, axis=0)
    return np.clip(np.round(pixels), 0, _MAX_8BIT).astype(np.uint8).transpose(1, 2, 0).copy()


def bundled_photo(name: str = DEFAULT_PHOTO) -> Path:
    """Path of a CC0 photo shipped inside the package: ``"chelsea"`` (a cat) or ``"coffee"``.

    They are copies of scikit-image's sample photos, bundled so that the default image works
    after a plain ``pip install`` with no extras and no network. Licences:
    :data:`BUNDLED_PHOTOS`.

    Raises
    ------
    InputError
        ``name`` is not one of :data:`BUNDLED_PHOTOS`.
    ImageError
        The installed package lacks the file (a broken install).
    """
    if name not in BUNDLED_PHOTOS:
        raise InputError(f"no bundled photo {name!r}; there are {sorted(BUNDLED_PHOTOS)}")
    path = PHOTO_DIR / f"{name}.png"
    if not path.is_file():
        raise ImageError(f"the bundled photo {path} is missing; reinstall deconvnet")
    return path


def _check_rgb_array(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        kind = image.dtype if isinstance(image, np.ndarray) else type(image).__name__
        raise InputError(f"expected a uint8 (H, W, 3) RGB array (see load_image), got {kind}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"expected a (H, W, 3) RGB array, got shape {image.shape}")


def _check_pixel_limit(image: Image.Image, file: Path) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    width, height = image.size
    if limit is not None and width * height > limit:
        raise ImageError(
            f"refusing to decode {file}: {width}x{height} pixels exceeds the "
            f"decompression-bomb limit of {limit} (PIL.Image.MAX_IMAGE_PIXELS)"
        )


def _check_png_chunks(data: memoryview, file: Path) -> None:
    """Walk the chunks after the signature: every CRC must match, and ``IEND`` must come."""
    offset = len(_PNG_SIGNATURE)
    while True:
        header_end = offset + _PNG_CHUNK_HEADER
        if header_end > len(data):
            raise ImageError(f"truncated PNG {file}: it ends at byte {len(data)} before IEND")
        length, kind = struct.unpack(">I4s", data[offset:header_end])
        end = header_end + length + _PNG_CRC
        if end > len(data):
            raise ImageError(
                f"truncated PNG {file}: chunk {kind.decode('latin-1')!r} at byte {offset} "
                f"needs {end} bytes, the file has {len(data)}"
            )
        (crc,) = struct.unpack(">I", data[end - _PNG_CRC : end])
        if zlib.crc32(data[offset + 4 : end - _PNG_CRC]) != crc:
            raise ImageError(
                f"corrupt PNG {file}: CRC mismatch in chunk {kind.decode('latin-1')!r} "
                f"at byte {offset}"
            )
        if kind == _PNG_END:
            return
        offset = end


def _to_rgb(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in _HIGH_DEPTH_MODES:
        grey = _stretch_to_8bit(np.asarray(image))
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA")).astype(np.uint32)
        alpha = rgba[:, :, 3:]
        blended = rgba[:, :, :3] * alpha + WHITE * (_MAX_8BIT - alpha)
        return ((blended + _MAX_8BIT // 2) // _MAX_8BIT).astype(np.uint8)
    return np.array(image.convert("RGB"), dtype=np.uint8)


def _stretch_to_8bit(values: np.ndarray) -> np.ndarray:
    """Linear map of the finite ``[min, max]`` of ``values`` to ``[0, 255]`` uint8."""
    data = values.astype(np.float64)
    finite = np.isfinite(data)
    if not finite.any():
        return np.zeros(data.shape, dtype=np.uint8)
    low, high = float(data[finite].min()), float(data[finite].max())
    data[~finite] = low
    if high == low:
        return np.zeros(data.shape, dtype=np.uint8)
    return np.round((data - low) / (high - low) * _MAX_8BIT).astype(np.uint8)


def _resize(
    image: np.ndarray, size_hw: tuple[int, int], interpolation: Interpolation = "bilinear"
) -> np.ndarray:
    height, width = size_hw
    if image.shape[:2] == (height, width):
        return image.copy()
    resample = Image.Resampling[interpolation.upper()]
    resized = Image.fromarray(image).resize((width, height), resample)
    return np.asarray(resized).copy()


def _shorter_side_size(image_hw: tuple[int, ...], shorter: int) -> tuple[int, int]:
    """torchvision's ``Resize(int)`` rule: shorter side to ``shorter``, longer side truncated."""
    height, width = image_hw[0], image_hw[1]
    if height <= width:
        return shorter, int(shorter * width / height)
    return int(shorter * height / width), shorter


def _center_crop(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """torchvision's ``CenterCrop`` offsets: ``int(round((image - crop) / 2))``."""
    height, width = image.shape[:2]
    crop_h, crop_w = size_hw
    if crop_h > height or crop_w > width:
        raise InputError(
            f"cannot centre-crop {crop_h}x{crop_w} from a {height}x{width} resize; "
            "the spec's resize_to must be at least its input_size"
        )
    top = round((height - crop_h) / 2.0)
    left = round((width - crop_w) / 2.0)
    return image[top : top + crop_h, left : left + crop_w].copy()
