"""The paper's Fig. 4 drawn: one sheet per layer, maps as rows, checkpoints as columns.

Each tile is the deconvnet projection of the map's strongest activation over the dataset
at that checkpoint, shown over the unit's whole receptive field (parts outside the image
:data:`~deconvnet.figures.style.OUTSIDE_IMAGE` grey) and scaled to ``tile`` pixels. Every
tile has its own contrast (min to max, as in the paper), because activations grow by
orders of magnitude during training; the value under each tile gives the scale.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from deconvnet.figures.render import DisplayMode, frame, scaled, to_display
from deconvnet.figures.style import (
    BACKGROUND,
    EMPTY_SLOT,
    FONT_SIZE,
    HEADER_FONT_SIZE,
    LINE_GAP,
    MUTED_TEXT,
    OUTSIDE_IMAGE,
    PADDING,
    TITLE_FONT_SIZE,
    draw_text,
    line_height,
    text_size,
    wrap_text,
)
from deconvnet.instruments.evolution import EvolutionResult
from deconvnet.instruments.topk.project import ProjectedEntry

DEFAULT_TILE = 80
"""Display side (pixels) of one receptive-field tile."""
TILE_GAP = 4
VALUE_FONT_SIZE = FONT_SIZE - 2


def evolution_sheet(
    result: EvolutionResult,
    layer: str,
    *,
    tile: int = DEFAULT_TILE,
    mode: DisplayMode = "minmax",
    display_names: Mapping[str, str] | None = None,
) -> np.ndarray:
    """``(H, W, 3)`` uint8: ``layer``'s maps as rows, the checkpoints as columns."""
    shown = (display_names or {}).get(layer, layer)
    channels = result.channels.get(layer, ())
    row_label_w = max(text_size(f"map {c}", HEADER_FONT_SIZE)[0] for c in channels or (0,))
    cell_w = tile + TILE_GAP
    value_h = line_height(VALUE_FONT_SIZE)
    cell_h = tile + value_h + LINE_GAP + TILE_GAP
    grid_left = PADDING + row_label_w + PADDING
    width = grid_left + len(result.labels) * cell_w + PADDING
    headers = [wrap_text(label, tile, HEADER_FONT_SIZE) for label in result.labels]
    header_h = max(text_size(h, HEADER_FONT_SIZE)[1] for h in headers) + LINE_GAP
    title = wrap_text(
        f"{shown}: the strongest activation of each map over {result.num_images} images, "
        "projected, at each checkpoint (each tile its own contrast)",
        max(width - 2 * PADDING, 360),
        TITLE_FONT_SIZE,
    )
    title_h = text_size(title, TITLE_FONT_SIZE)[1] + PADDING
    width = max(width, text_size(title, TITLE_FONT_SIZE)[0] + 2 * PADDING)
    top_margin = PADDING + title_h + header_h
    sheet = np.full(
        (top_margin + len(channels) * cell_h + PADDING, width, 3), BACKGROUND, dtype=np.uint8
    )
    draw_text(sheet, PADDING, PADDING, title, TITLE_FONT_SIZE)
    for column, header in enumerate(headers):
        left = grid_left + column * cell_w
        draw_text(sheet, left, PADDING + title_h, header, HEADER_FONT_SIZE, colour=MUTED_TEXT)
    for row, channel in enumerate(channels):
        top = top_margin + row * cell_h
        label_top = top + (tile - line_height(HEADER_FONT_SIZE)) // 2
        draw_text(sheet, PADDING, label_top, f"map {channel}", HEADER_FONT_SIZE)
        for column in range(len(result.labels)):
            left = grid_left + column * cell_w
            item = result.cell(layer, channel, column)
            picture = _tile(item, tile, mode)
            sheet[top : top + picture.shape[0], left : left + picture.shape[1]] = picture
            value = f"{item.entry.value:.3g}" if item is not None else "no image"
            draw_text(sheet, left, top + tile + LINE_GAP, value, VALUE_FONT_SIZE, colour=MUTED_TEXT)
    return sheet


def _tile(item: ProjectedEntry | None, tile: int, mode: DisplayMode) -> np.ndarray:
    """The projection over the unit's full receptive field, scaled to ``tile``."""
    if item is None:
        return np.full((tile, tile, 3), EMPTY_SLOT, dtype=np.uint8)
    crop, field = item.crop_box, item.field_box
    relative = (field[0] - crop[0], field[1] - crop[1], field[2] - crop[0], field[3] - crop[1])
    shown = to_display(item.projection, mode)
    return scaled(frame(shown, relative, OUTSIDE_IMAGE), tile)
