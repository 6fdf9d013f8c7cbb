"""A layer's feature maps for one image, readable: ``deconvnet maps``.

Caffe's ``vis_square`` (:func:`deconvnet.figures.render.feature_grid`) packs maps edge to
edge at their own size: fire9's 512 maps of 13x13 become a 321 px square of unlabelled
specks. Here each map is enlarged (nearest neighbour, an integer factor) to at least
:data:`MIN_TILE` pixels and numbered, the page is titled with the layer and the image, and
a colour bar gives the grey scale when all maps share one (``contrast="shared"``, so
strengths compare); with ``contrast="tile"`` each map is stretched on its own and its
largest value is written under it. A large layer is split into pages of at most
:data:`MAPS_PER_PAGE` maps (:func:`pages`), all drawn on the same scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from deconvnet.errors import InputError
from deconvnet.figures import panels
from deconvnet.figures.render import scaled
from deconvnet.figures.style import (
    BACKGROUND,
    FONT_SIZE,
    MAX_LEVEL,
    MUTED_TEXT,
    PADDING,
    TITLE_FONT_SIZE,
    draw_text,
    line_height,
    text_size,
    wrap_text,
)

MapContrast = Literal["shared", "tile"]
MAP_CONTRASTS: tuple[MapContrast, ...] = ("shared", "tile")
"""``shared``: one grey scale for every map (strengths compare, as in ``vis_square``);
``tile``: each map stretched from its own minimum to its maximum."""
MIN_TILE = 96
"""Maps are enlarged by an integer factor until their shorter side is at least this."""
CLIP_PERCENT = 0.5
"""On a shared scale the brightest 0.5 % of values saturate, so one strong map does not
leave every other one black (fire9 on the cat photo: white at 231 instead of 1,121)."""
MAX_TILE = 256
"""Larger maps are shrunk to this longer side (a photo-sized map would make pages of
thousands of pixels)."""
MAPS_PER_PAGE = 64
"""Maps per page: 8 x 8 tiles of 96-190 px, about 900-1,600 px a side."""
TILE_GAP = 6
GREY_MAP = "gray"


def pages(count: int, per_page: int = MAPS_PER_PAGE) -> list[range]:
    """The positions ``0..count-1`` cut into pages of at most ``per_page``."""
    if count < 1 or per_page < 1:
        raise InputError(f"pages needs count and per_page >= 1, got {count}, {per_page}")
    return [range(start, min(start + per_page, count)) for start in range(0, count, per_page)]


def shared_scale(maps: torch.Tensor) -> tuple[float, float]:
    """One ``(low, high)`` grey scale for ``maps``: their minimum to the value only
    :data:`CLIP_PERCENT` of them exceed."""
    values = maps.detach().to("cpu", torch.float64).flatten().numpy()
    low = float(values.min())
    high = float(np.percentile(values, 100 - CLIP_PERCENT))
    return low, high if high > low else float(values.max())


def maps_figure(
    maps: np.ndarray | torch.Tensor,
    channels: Sequence[int],
    *,
    title: str,
    contrast: MapContrast = "shared",
    scale: tuple[float, float] | None = None,
    note: str | None = None,
) -> np.ndarray:
    """One page: the ``(K, H, W)`` ``maps`` (map numbers ``channels``) as numbered,
    enlarged grey tiles under ``title``, with a colour bar for a shared scale.

    ``scale`` is the shared ``(low, high)`` (default: these maps' own min and max); pass
    the whole layer's so that every page of it uses one scale. ``note`` is an extra line
    under the title (the page, the selection).
    """
    values = (
        maps.detach().to("cpu", torch.float64).numpy()
        if isinstance(maps, torch.Tensor)
        else np.asarray(maps, dtype=np.float64)
    )
    if values.ndim != 3 or values.shape[0] != len(channels) or 0 in values.shape:
        raise InputError(f"maps_figure needs (K, H, W) maps, one per channel, got {values.shape}")
    if contrast not in MAP_CONTRASTS:
        raise InputError(f"contrast must be one of {', '.join(MAP_CONTRASTS)}, got {contrast!r}")
    count, height, width = values.shape
    factor = max(1, math.ceil(MIN_TILE / min(height, width)))
    if max(height, width) * factor > MAX_TILE:
        factor = 0  # shrink instead (see _tile)
    tile_h, tile_w = _tile(np.zeros((height, width, 3), np.uint8), factor).shape[:2]
    low, high = scale if scale is not None else (float(values.min()), float(values.max()))
    labels = [_label(c, values[i], contrast) for i, c in enumerate(channels)]
    label_h = line_height(FONT_SIZE)
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    cell_w = max(tile_w, max(text_size(label)[0] for label in labels)) + TILE_GAP
    cell_h = label_h + tile_h + TILE_GAP
    grid_w = columns * cell_w - TILE_GAP
    bar = (
        panels.colour_bar(low, high, min(max(grid_w, 240), 480), name=GREY_MAP, label="activation")
        if contrast == "shared"
        else None
    )
    width_px = max(grid_w, bar.shape[1] if bar is not None else 0) + 2 * PADDING
    heading = wrap_text(title, width_px - 2 * PADDING, TITLE_FONT_SIZE)
    heading_h = text_size(heading, TITLE_FONT_SIZE)[1] + PADDING
    lines = note or _contrast_note(contrast)
    if note:
        lines += "\n" + _contrast_note(contrast)
    lines = wrap_text(lines, width_px - 2 * PADDING)
    note_h = text_size(lines)[1] + PADDING
    bar_h = bar.shape[0] + PADDING if bar is not None else 0
    canvas = np.full(
        (PADDING + heading_h + note_h + rows * cell_h + bar_h + PADDING, width_px, 3),
        BACKGROUND,
        np.uint8,
    )
    draw_text(canvas, PADDING, PADDING, heading, TITLE_FONT_SIZE)
    draw_text(canvas, PADDING, PADDING + heading_h, lines, colour=MUTED_TEXT)
    top0 = PADDING + heading_h + note_h
    for index in range(count):
        top = top0 + (index // columns) * cell_h
        left = PADDING + (index % columns) * cell_w
        draw_text(canvas, left, top, labels[index])
        tile = _tile(_grey(values[index], None if contrast == "tile" else (low, high)), factor)
        canvas[top + label_h : top + label_h + tile_h, left : left + tile_w] = tile
    if bar is not None:
        bar_top = top0 + rows * cell_h
        canvas[bar_top : bar_top + bar.shape[0], PADDING : PADDING + bar.shape[1]] = bar
    return canvas


def _tile(grey: np.ndarray, factor: int) -> np.ndarray:
    """A map's picture enlarged ``factor`` times (nearest), or for ``factor`` 0 shrunk to
    :data:`MAX_TILE` on its longer side."""
    if factor == 0:
        return scaled(grey, MAX_TILE)
    return grey.repeat(factor, axis=0).repeat(factor, axis=1)


def _grey(values: np.ndarray, scale: tuple[float, float] | None) -> np.ndarray:
    """A map as ``(H, W, 3)`` uint8 grey: ``scale`` low to high as black to white, or its
    own min to max; a constant map is black."""
    low, high = scale if scale is not None else (float(values.min()), float(values.max()))
    span = high - low
    unit = np.clip((values - low) / span, 0.0, 1.0) if span > 0 else np.zeros_like(values)
    levels = np.round(unit * MAX_LEVEL).astype(np.uint8)
    return np.repeat(levels[:, :, None], 3, axis=2)


def _label(channel: int, values: np.ndarray, contrast: MapContrast) -> str:
    if contrast == "tile":
        return f"{channel}: max {float(values.max()):.3g}"
    return str(channel)


def _contrast_note(contrast: MapContrast) -> str:
    if contrast == "shared":
        return (
            f"one grey scale for every map (bar below); the brightest {CLIP_PERCENT:g} % of "
            "values saturate white"
        )
    return "each map stretched from its own minimum (black) to its maximum (white)"
