"""Tensors to pictures: feature-map grids, projection display, crops and contact sheets.

No model code here: everything takes arrays (NumPy or torch, any device) and returns
``uint8`` arrays, so the CLI, the report and the explorer draw the same pixels (writing
them is :mod:`deconvnet.figures.files`). Inputs are
never modified (the old Caffe demo rescaled its blob in place while displaying it, which
changed the projection it then computed).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image

from deconvnet.engine.receptive import Box
from deconvnet.errors import InputError
from deconvnet.figures.panels import colormap
from deconvnet.figures.style import (
    BACKGROUND,
    GRID_FONT_SIZE,
    LABEL_BOX_COLOUR,
    LABEL_TEXT_COLOUR,
    MAX_LEVEL,
    PADDING,
    SHEET_FONT_SIZE,
    draw_text,
    text_image,
    text_size,
    wrap_text,
)

DisplayMode = Literal["minmax", "signed"]
Display = Literal["rgb", "signed", "overlay", "heat"]
DISPLAYS: tuple[Display, ...] = ("rgb", "signed", "overlay", "heat")
"""How a projection is shown: ``rgb`` its three channels scaled by their largest ``|x|``
with zero at mid-grey (so every tile's zero is the same grey, and colours keep their
balance); ``signed`` the channel sum on a blue–white–red map, zero white, symmetric about
zero; ``heat`` the magnitude (L2 over channels) on inferno, zero black; ``overlay`` that
magnitude laid over the greyed input image, its opacity growing with the magnitude."""
Normalise = Literal["grid", "map"]
ArrayLike = np.ndarray | torch.Tensor

SIGNED_ZERO = 128
"""Grey level of 0 in the signed view; +-max|x| map to 128 +- 127."""
SIGNED_HALF_RANGE = 127
GRID_PAD_VALUE = 1.0
"""Separator colour in feature grids, on the [0, 1] scale (white, as in Caffe's vis_square)."""
LABEL_MIN_TILE = 32
"""Feature-grid tiles are upscaled (nearest) to at least this many pixels when labelled."""
SIGNED_MAP = "RdBu_r"
HEAT_MAP = "inferno"
OVERLAY_OPACITY = 0.85
"""Opacity of the largest magnitude in the overlay view (zero is fully transparent)."""
OVERLAY_GREY_CONTRAST = 0.6
"""The input under an overlay is greyed and faded to this share of its contrast."""
SHEET_MIN_TILE = 128
SHEET_LABEL_MIN_WIDTH = 180
"""Contact-sheet labels wrap at the tile width, or this many pixels for narrow tiles."""
"""Contact-sheet tiles are upscaled (nearest) to at least this many pixels."""


@dataclass(frozen=True)
class DisplayRange:
    """Values mapped to the ends of the display scale; share one to compare projections.

    In ``"minmax"`` mode ``low`` -> 0 and ``high`` -> 255. In ``"signed"`` mode only
    ``max(|low|, |high|)`` is used: it maps to 255 and its negative to 1, with 0 at 128.
    """

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low > self.high:
            raise InputError(f"DisplayRange needs finite low <= high, got {self.low}, {self.high}")


def shared_range(
    projections: Iterable[ArrayLike], mode: DisplayMode = "minmax", *, clip_percent: float = 0.0
) -> DisplayRange:
    """One :class:`DisplayRange` covering all ``projections``, for side-by-side comparison.

    ``"minmax"``: the overall min and max; ``"signed"``: ``(-m, m)`` with ``m`` the overall
    largest ``|x|``. ``clip_percent`` > 0 ignores that percentage of the most extreme values
    at each end (those pixels saturate), so a few outlier pixels cannot make the rest faint.
    """
    _check_mode(mode)
    if not 0.0 <= clip_percent < 50.0:
        raise InputError(f"clip_percent must be in [0, 50), got {clip_percent}")
    arrays = [_as_float_array(p) for p in projections]
    if not arrays or all(a.size == 0 for a in arrays):
        raise InputError("shared_range got no values; pass at least one non-empty projection")
    values = np.concatenate([a.ravel() for a in arrays if a.size])
    if mode == "signed":
        magnitude = np.abs(values)
        largest = (
            float(np.percentile(magnitude, 100 - clip_percent))
            if clip_percent
            else float(magnitude.max())
        )
        return DisplayRange(-largest, largest)
    if clip_percent:
        low, high = np.percentile(values, [clip_percent, 100 - clip_percent])
        return DisplayRange(float(low), float(high))
    return DisplayRange(float(values.min()), float(values.max()))


def to_display(
    projection: ArrayLike,
    mode: DisplayMode = "minmax",
    *,
    scale: DisplayRange | None = None,
    channel_order: Literal["RGB", "BGR"] = "RGB",
) -> np.ndarray:
    """Show a ``(C, H, W)`` projection (C = 1 or 3) as a ``(H, W, 3)`` uint8 RGB image.

    ``"minmax"`` stretches ``[min, max]`` to ``[0, 255]`` (the old demo's look); ``"signed"``
    puts 0 at grey 128 and scales by ``max|x|`` so negative evidence shows honestly. The
    range is taken over all channels together, never per channel, so colours keep their
    balance. A constant projection is black (minmax) or grey 128 (signed). ``channel_order``
    is the network's: BGR projections are flipped to RGB. ``scale`` fixes the range (see
    :func:`shared_range`); values beyond it are clipped.
    """
    _check_mode(mode)
    values = _as_float_array(projection)
    if values.ndim != 3 or values.shape[0] not in (1, 3):
        raise InputError(f"to_display needs (C, H, W) with C 1 or 3, got {values.shape}")
    if channel_order not in ("RGB", "BGR"):
        raise InputError(f"channel_order must be 'RGB' or 'BGR', got {channel_order!r}")
    limits = scale if scale is not None else _own_range(values, mode)
    if mode == "signed":
        largest = max(abs(limits.low), abs(limits.high))
        scaled = values / largest * SIGNED_HALF_RANGE if largest > 0 else np.zeros_like(values)
        levels = SIGNED_ZERO + scaled
    else:
        span = limits.high - limits.low
        levels = (values - limits.low) / span * MAX_LEVEL if span > 0 else np.zeros_like(values)
    pixels = np.clip(np.round(levels), 0, MAX_LEVEL).astype(np.uint8)
    if channel_order == "BGR":
        pixels = pixels[::-1]
    if pixels.shape[0] == 1:
        pixels = np.repeat(pixels, 3, axis=0)
    return np.ascontiguousarray(pixels.transpose(1, 2, 0))


def display_range(
    projections: Iterable[ArrayLike], display: Display = "rgb", *, clip_percent: float = 0.0
) -> DisplayRange:
    """One range for ``projections`` as ``display`` shows them (see :func:`show`), so tiles
    drawn with it share one scale; ``clip_percent`` as in :func:`shared_range`."""
    _check_display(display)
    if display == "rgb":
        return shared_range(projections, "signed", clip_percent=clip_percent)
    reduced = [_reduce(_as_float_array(p), display) for p in projections]
    return shared_range(
        reduced, "signed" if display == "signed" else "minmax", clip_percent=clip_percent
    )


def show(
    projection: ArrayLike,
    display: Display = "rgb",
    *,
    scale: DisplayRange | None = None,
    image: np.ndarray | None = None,
    channel_order: Literal["RGB", "BGR"] = "RGB",
) -> np.ndarray:
    """A ``(C, H, W)`` projection as an ``(H, W, 3)`` uint8 picture in one of
    :data:`DISPLAYS`; ``image`` is the ``(H, W, 3)`` uint8 input under an ``overlay``.

    ``scale`` fixes the range (from :func:`display_range`); by default each call uses its
    own (per-tile contrast, as in the paper).
    """
    _check_display(display)
    if display == "rgb":
        return to_display(projection, "signed", scale=scale, channel_order=channel_order)
    values = _as_float_array(projection)
    if values.ndim != 3:
        raise InputError(f"show needs (C, H, W), got {values.shape}")
    reduced = _reduce(values, display)
    if display == "signed":
        largest = max(abs(scale.low), abs(scale.high)) if scale else float(np.abs(reduced).max())
        return (
            colormap(reduced, -largest, largest, name=SIGNED_MAP)
            if largest > 0
            else (colormap(np.zeros_like(reduced), -1.0, 1.0, name=SIGNED_MAP))
        )
    high = scale.high if scale else float(reduced.max())
    unit = np.clip(reduced / high, 0.0, 1.0) if high > 0 else np.zeros_like(reduced)
    heat = colormap(unit, 0.0, 1.0, name=HEAT_MAP)
    if display == "heat":
        return heat
    if image is None or image.shape[:2] != unit.shape:
        raise InputError("the overlay view needs the input image of the same size")
    grey = image.astype(np.float64).mean(axis=2, keepdims=True)
    faded = MAX_LEVEL - OVERLAY_GREY_CONTRAST * (MAX_LEVEL - grey)
    opacity = OVERLAY_OPACITY * unit[..., None]
    blended = opacity * heat + (1 - opacity) * faded
    picture: np.ndarray = np.clip(np.round(blended), 0, MAX_LEVEL).astype(np.uint8)
    return picture


def feature_grid(
    activations: ArrayLike,
    *,
    padding: int = 1,
    normalise: Normalise = "grid",
    labels: bool = False,
    min_tile: int | None = None,
    pad_value: float = GRID_PAD_VALUE,
) -> np.ndarray:
    """Tile ``(C, H, W)`` feature maps into a near-square ``(H', W', 3)`` uint8 grid.

    Caffe's ``vis_square``: ``n = ceil(sqrt(C))`` columns, each map followed by ``padding``
    separator pixels on its right and bottom, rows as needed (empty trailing rows dropped).

    Parameters
    ----------
    normalise
        ``"grid"``: one min-max over all maps, so strengths compare across maps;
        ``"map"``: each map stretched on its own, to see the shape of weak maps.
        Constant data maps to 0.
    labels
        Write each map's channel index in its top-left corner.
    min_tile
        Upscale maps (nearest, integer factor) until their shorter side reaches this;
        defaults to :data:`LABEL_MIN_TILE` with labels, else no upscaling.
    pad_value
        Separator and empty-slot colour in ``[0, 1]``.
    """
    maps = _as_float_array(activations)
    if maps.ndim != 3 or maps.shape[0] == 0 or 0 in maps.shape[1:]:
        raise InputError(f"feature_grid needs non-empty (C, H, W) maps, got {maps.shape}")
    if normalise not in ("grid", "map"):
        raise InputError(f"normalise must be 'grid' or 'map', got {normalise!r}")
    if padding < 0 or not 0.0 <= pad_value <= 1.0:
        raise InputError(f"need padding >= 0 and pad_value in [0, 1], got {padding}, {pad_value}")
    unit = _min_max(maps, axis=(1, 2) if normalise == "map" else None)
    factor = _upscale_factor(maps.shape[1:], min_tile, labels)
    unit = unit.repeat(factor, axis=1).repeat(factor, axis=2)
    count, tile_h, tile_w = unit.shape
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    cell_h, cell_w = tile_h + padding, tile_w + padding
    canvas = np.full((rows * cell_h, columns * cell_w), pad_value, dtype=np.float64)
    for index in range(count):
        top, left = (index // columns) * cell_h, (index % columns) * cell_w
        canvas[top : top + tile_h, left : left + tile_w] = unit[index]
    grid = np.repeat(np.round(canvas * MAX_LEVEL).astype(np.uint8)[:, :, None], 3, axis=2)
    if labels:
        _label_cells(grid, count, columns, (cell_h, cell_w))
    return grid


def crop_box(array: ArrayLike, box: Box, *, channels_first: bool = False) -> ArrayLike:
    """Copy of the ``(top, left, bottom, right)`` region (bottom/right exclusive), clipped.

    Works on ``(H, W)``, ``(H, W, C)`` or, with ``channels_first``, ``(..., H, W)`` arrays and
    tensors, e.g. to cut a receptive-field box out of an image and its projection.

    Raises
    ------
    InputError
        The clipped box is empty (it lies outside the array).
    """
    top, left, bottom, right = (int(v) for v in box)
    height_axis = -2 if channels_first else 0
    height, width = array.shape[height_axis], array.shape[height_axis + 1]
    top, left = max(top, 0), max(left, 0)
    bottom, right = min(bottom, height), min(right, width)
    if bottom <= top or right <= left:
        raise InputError(f"box {tuple(box)} lies outside the {height}x{width} image")
    rows, cols = slice(top, bottom), slice(left, right)
    region = array[..., rows, cols] if channels_first else array[rows, cols]
    return region.clone() if isinstance(region, torch.Tensor) else region.copy()


def frame(
    array: np.ndarray, box: Box, fill: float | tuple[int, ...], *, channels_first: bool = False
) -> np.ndarray:
    """The ``(top, left, bottom, right)`` region of ``array`` at its full size: where the box
    reaches past the array's edge, ``fill`` stands in (a receptive field at the border keeps
    its true size and position). Layouts as :func:`crop_box`."""
    top, left, bottom, right = (int(v) for v in box)
    height_axis = array.ndim - 2 if channels_first else 0
    height, width = array.shape[height_axis], array.shape[height_axis + 1]
    shape = list(array.shape)
    shape[height_axis : height_axis + 2] = [bottom - top, right - left]
    canvas = np.empty(shape, dtype=array.dtype)
    canvas[...] = fill
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(bottom, height), min(right, width)
    if y1 > y0 and x1 > x0:
        target = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
        source = (slice(y0, y1), slice(x0, x1))
        if channels_first:
            canvas[..., target[0], target[1]] = array[..., source[0], source[1]]
        else:
            canvas[target] = array[source]
    return canvas


def scaled(picture: np.ndarray, side: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 with its longer side scaled to ``side``: nearest neighbour when
    enlarging (pixels stay visible as blocks), Lanczos when shrinking."""
    height, width = picture.shape[:2]
    factor = side / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    resample = Image.Resampling.NEAREST if factor >= 1 else Image.Resampling.LANCZOS
    return np.asarray(Image.fromarray(picture).resize(size, resample)).copy()


def contact_sheet(
    tiles: Sequence[np.ndarray],
    labels: Sequence[str],
    columns: int | None = None,
    *,
    min_tile: int = SHEET_MIN_TILE,
) -> np.ndarray:
    """Lay out ``K`` uint8 tiles ``(H, W)`` or ``(H, W, 3)``, each with its label underneath.

    Small tiles are upscaled (nearest, integer factor) until their shorter side reaches
    ``min_tile`` so sheets of 13x13 units stay readable. Labels may hold several lines
    (e.g. layer, channel, value, position). ``columns`` defaults to ``ceil(sqrt(K))``.
    """
    if len(tiles) == 0 or len(tiles) != len(labels):
        raise InputError(
            f"contact_sheet needs one label per tile, got {len(tiles)} tiles, {len(labels)} labels"
        )
    if columns is not None and columns < 1:
        raise InputError(f"columns must be >= 1, got {columns}")
    shown = [_tile_rgb(tile, min_tile) for tile in tiles]
    label_width = max(max(t.shape[1] for t in shown), SHEET_LABEL_MIN_WIDTH)
    labels = [wrap_text(label, label_width, SHEET_FONT_SIZE) for label in labels]
    text_boxes = [text_size(label, SHEET_FONT_SIZE) for label in labels]
    cell_w = max(max(t.shape[1] for t in shown), max(w for w, _ in text_boxes)) + PADDING
    text_h = max(h for _, h in text_boxes)
    cell_h = max(t.shape[0] for t in shown) + text_h + 2 * PADDING
    columns = columns or math.ceil(math.sqrt(len(shown)))
    rows = math.ceil(len(shown) / columns)
    sheet = np.full((rows * cell_h + PADDING, columns * cell_w + PADDING, 3), BACKGROUND, np.uint8)
    for index, (tile, label) in enumerate(zip(shown, labels, strict=True)):
        left = (index % columns) * cell_w + PADDING
        top = (index // columns) * cell_h + PADDING
        sheet[top : top + tile.shape[0], left : left + tile.shape[1]] = tile
        draw_text(sheet, left, top + tile.shape[0] + PADDING // 2, label, SHEET_FONT_SIZE)
    return sheet


def _as_float_array(values: ArrayLike) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().to(device="cpu", dtype=torch.float64).numpy().copy()
    if isinstance(values, np.ndarray):
        return np.array(values, dtype=np.float64, copy=True)
    raise InputError(f"expected a NumPy array or torch.Tensor, got {type(values).__name__}")


def _reduce(values: np.ndarray, display: Display) -> np.ndarray:
    """``(C, H, W)`` to the ``(H, W)`` map a colour-mapped view shows."""
    if display == "signed":
        return np.asarray(values.sum(axis=0))
    return np.asarray(np.sqrt((values * values).sum(axis=0)))


def _check_display(display: str) -> None:
    if display not in DISPLAYS:
        raise InputError(f"display must be one of {', '.join(DISPLAYS)}, got {display!r}")


def _check_mode(mode: str) -> None:
    if mode not in ("minmax", "signed"):
        raise InputError(f"mode must be 'minmax' or 'signed', got {mode!r}")


def _own_range(values: np.ndarray, mode: DisplayMode) -> DisplayRange:
    return shared_range([values], mode)


def _min_max(values: np.ndarray, axis: tuple[int, ...] | None) -> np.ndarray:
    """Stretch to [0, 1] over ``axis`` (None: everything); constant spans become 0."""
    low = values.min(axis=axis, keepdims=True)
    span = values.max(axis=axis, keepdims=True) - low
    safe = np.where(span > 0, span, 1.0)
    return np.where(span > 0, (values - low) / safe, 0.0)


def _upscale_factor(tile_hw: tuple[int, ...], min_tile: int | None, labels: bool) -> int:
    target = min_tile if min_tile is not None else (LABEL_MIN_TILE if labels else 1)
    return max(1, math.ceil(target / min(tile_hw)))


def _tile_rgb(tile: np.ndarray, min_tile: int) -> np.ndarray:
    if not isinstance(tile, np.ndarray) or tile.dtype != np.uint8:
        raise InputError("contact_sheet tiles must be uint8 arrays (see to_display)")
    if tile.ndim == 2:
        tile = np.repeat(tile[:, :, None], 3, axis=2)
    if tile.ndim != 3 or tile.shape[2] != 3 or 0 in tile.shape:
        raise InputError(f"contact_sheet tiles must be (H, W) or (H, W, 3), got {tile.shape}")
    factor = _upscale_factor(tile.shape[:2], min_tile, labels=False)
    return tile.repeat(factor, axis=0).repeat(factor, axis=1)


def _label_cells(grid: np.ndarray, count: int, columns: int, cell_hw: tuple[int, int]) -> None:
    """Draw each cell's index on a dark box in its top-left corner, in place on ``grid``."""
    for index in range(count):
        top, left = (index // columns) * cell_hw[0], (index % columns) * cell_hw[1]
        label = text_image(
            str(index), GRID_FONT_SIZE, colour=LABEL_TEXT_COLOUR, background=LABEL_BOX_COLOUR
        )
        height = min(label.shape[0], grid.shape[0] - top)
        width = min(label.shape[1], grid.shape[1] - left)
        grid[top : top + height, left : left + width] = label[:height, :width]
