"""The rule comparison drawn: one row per seed, one column per rule.

Each row is one selected unit: its image patch, then its projection under each rule, all
cut to that unit's own receptive field (a field reaching past the image's border keeps its
size; the part outside is grey). Column headers say once what each rule does. One display
(``project``'s, :data:`~deconvnet.figures.render.DISPLAYS`) for the whole figure: with
``contrast="tile"`` each tile is stretched on its own, so a weak rule's pattern stays
visible, and its largest magnitude is written under it, so strengths still compare; with
``contrast="shared"`` one range covers every tile (the deconvnet can be 50x weaker than
guided backpropagation, and then shows as flat grey).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from deconvnet.engine.receptive import Box
from deconvnet.engine.rules import RULES
from deconvnet.figures.projection import CONTRASTS, Contrast
from deconvnet.figures.render import Display, DisplayRange, display_range, frame, scaled, show
from deconvnet.figures.style import (
    BACKGROUND,
    FONT_SIZE,
    HEADER_FONT_SIZE,
    MUTED_TEXT,
    OUTSIDE_IMAGE,
    PADDING,
    TITLE_FONT_SIZE,
    WARNING_TEXT,
    draw_text,
    line_height,
    text_size,
    wrap_text,
)
from deconvnet.instruments.compare import Comparison
from deconvnet.instruments.signal import is_blank

TILE = 160
"""Pixels of a tile's longer side (patches and projections alike)."""
LABEL_WIDTH = 150
"""The column of seed labels at the left of each row."""
GAP = 8


def seed_label(comparison: Comparison, k: int) -> str:
    """``map 12 @ (3, 4) = 5.1`` for selection ``k``."""
    channel = int(comparison.channels[k])
    what = f"map {channel}" if channel >= 0 else "joint"
    if comparison.positions is not None and comparison.positions.shape[-1] > 0:
        what += " @ (" + ", ".join(str(int(p)) for p in comparison.positions[k]) + ")"
    return f"{what} = {float(comparison.values[k]):.3g}"


def seed_box(comparison: Comparison, k: int, full_frame: bool = False) -> Box:
    """The input box row ``k`` shows: the seed's receptive field, or the whole input."""
    height, width = comparison.images.shape[-2:]
    box = None if full_frame or not comparison.boxes else comparison.boxes[k]
    return box if box is not None else (0, 0, int(height), int(width))


def tile_values(comparison: Comparison, k: int, full_frame: bool = False) -> torch.Tensor:
    """The ``(R, C, h, w)`` projections of seed ``k`` inside its box (zero outside the
    image), as its row shows them."""
    box = seed_box(comparison, k, full_frame)
    images = comparison.images[:, k].detach().cpu().double().numpy()
    framed = [frame(image, box, 0.0, channels_first=True) for image in images]
    return torch.from_numpy(np.stack(framed))


def comparison_figure(
    comparison: Comparison,
    image: np.ndarray | None = None,
    *,
    channel_order: Literal["RGB", "BGR"] = "RGB",
    full_frame: bool = False,
    display: Display = "rgb",
    contrast: Contrast = "tile",
    layer_label: str | None = None,
) -> np.ndarray:
    """Rows = seeds, columns = the input patch (if ``image`` is given, ``(H, W, 3)``
    uint8 as the network saw it) then the rules; a header per column, a label per row."""
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast must be one of {', '.join(CONTRASTS)}, got {contrast!r}")
    rules, count = comparison.rules, comparison.images.shape[1]
    values = [tile_values(comparison, k, full_frame) for k in range(count)]
    shared = (
        display_range([v[r] for v in values for r in range(len(rules))], display)
        if contrast == "shared"
        else None
    )
    columns = len(rules) + (image is not None)
    headers = (["input patch\n(the unit's receptive field)"] if image is not None else []) + [
        f"{rule}\n{RULES[rule].description.removeprefix(f'{rule}: ')}" for rule in rules
    ]
    headers = [wrap_text(text, TILE, HEADER_FONT_SIZE) for text in headers]
    header_h = max(text_size(text, HEADER_FONT_SIZE)[1] for text in headers) + GAP
    note_h = line_height(FONT_SIZE)
    row_h = TILE + note_h + 2 * GAP
    width = LABEL_WIDTH + columns * (TILE + GAP) + PADDING
    layer = layer_label or comparison.layer
    title = wrap_text(
        f"{layer}: {comparison.selection.describe()} under {len(rules)} reverse rules, "
        f"{display} display, {_contrast_note(contrast)}",
        width - 2 * PADDING,
        TITLE_FONT_SIZE,
    )
    title_h = text_size(title, TITLE_FONT_SIZE)[1] + GAP
    footer = wrap_text(_footer(display, full_frame), width - 2 * PADDING)
    footer_h = text_size(footer)[1] + GAP
    canvas = np.full(
        (PADDING + title_h + header_h + count * row_h + footer_h + PADDING, width, 3),
        BACKGROUND,
        np.uint8,
    )
    draw_text(canvas, PADDING, PADDING, title, TITLE_FONT_SIZE)
    top = PADDING + title_h
    for column, text in enumerate(headers):
        left = LABEL_WIDTH + column * (TILE + GAP)
        draw_text(canvas, left, top, text, HEADER_FONT_SIZE, colour=MUTED_TEXT)
    top += header_h
    for k in range(count):
        box = seed_box(comparison, k, full_frame)
        label = wrap_text(f"#{k + 1} {seed_label(comparison, k)}", LABEL_WIDTH - GAP)
        draw_text(canvas, PADDING, top + GAP, label)
        left = LABEL_WIDTH
        if image is not None:
            patch = frame(image, box, OUTSIDE_IMAGE)
            canvas[top : top + TILE, left : left + TILE] = _fitted(patch)
            left += TILE + GAP
        for r in range(len(rules)):
            tile = values[k][r]
            scale = shared if shared is not None else _own(tile, display)
            under = frame(image, box, OUTSIDE_IMAGE) if image is not None else None
            picture = show(tile, display, scale=scale, image=under, channel_order=channel_order)
            inside = frame(np.ones(comparison.images.shape[-2:], bool), box, False)
            picture[~inside] = OUTSIDE_IMAGE
            canvas[top : top + TILE, left : left + TILE] = _fitted(picture)
            largest = float(tile.abs().max())
            blank = is_blank(tile, None if shared is None else _magnitude(shared))
            note = "blank: all zero" if largest == 0 else f"max |x| {largest:.3g}"
            if blank and largest > 0:
                note += " (below this scale)"
            draw_text(
                canvas, left, top + TILE + 2, note, colour=WARNING_TEXT if blank else MUTED_TEXT
            )
            left += TILE + GAP
        top += row_h
    draw_text(canvas, PADDING, top, footer, colour=MUTED_TEXT)
    return canvas


def _own(tile: torch.Tensor, display: Display) -> DisplayRange | None:
    return display_range([tile], display) if bool(tile.any()) else None


def _magnitude(scale: DisplayRange) -> float:
    return max(abs(scale.low), abs(scale.high))


def _fitted(picture: np.ndarray) -> np.ndarray:
    """``picture`` scaled to fit a ``TILE`` square (nearest when enlarging), centred."""
    fitted = scaled(picture, TILE)
    square = np.full((TILE, TILE, 3), BACKGROUND, np.uint8)
    top, left = (TILE - fitted.shape[0]) // 2, (TILE - fitted.shape[1]) // 2
    square[top : top + fitted.shape[0], left : left + fitted.shape[1]] = fitted
    return square


def _contrast_note(contrast: Contrast) -> str:
    if contrast == "shared":
        return "one scale for every tile"
    return "each tile on its own scale"


def _footer(display: Display, full_frame: bool) -> str:
    where = "the whole input" if full_frame else "each unit's receptive field (grey: outside)"
    views = {
        "rgb": "colours scaled by the largest |value|, zero mid-grey",
        "signed": "channel sum, blue negative, white zero, red positive",
        "heat": "magnitude on inferno, black zero",
        "overlay": "magnitude over the greyed patch",
    }
    return f"Tiles show {where}; {views[display]}. Under each tile: its largest magnitude."

