"""The correspondence analysis drawn (§4.3): the masked images and the Table 1 scores.

One row per image: the image with each part's mask (a square in the mask's fill colour,
outlined so it shows on grey), then the first random trial's mask; the hand-made part
box is outlined in its own colour when given. Under the grid, the table: per part and
layer, the mean fraction of feature signs that change differently between two images,
its standard deviation over the pairs, and the paper's sum Delta (lower = more
consistent).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from deconvnet.engine.receptive import Box
from deconvnet.figures import panels
from deconvnet.figures.style import (
    BACKGROUND,
    BOX_COLOUR,
    HEADER_FONT_SIZE,
    LINE_GAP,
    MUTED_TEXT,
    NO_DATA,
    PADDING,
    RGB,
    TEXT,
    TITLE_FONT_SIZE,
    text_image,
    wrap_text,
)
from deconvnet.instruments.correspondence import RANDOM, CorrespondenceResult

TILE_SIDE = 160
MASK_OUTLINE: RGB = (255, 0, 0)
COLUMN_GAP = 24


def table_rows(
    result: CorrespondenceResult, display_names: Mapping[str, str] | None = None
) -> list[list[str]]:
    """The table as text: a header row, then one row per part (the control last)."""
    names = display_names or {}
    header = ["part", *(f"{names.get(layer, layer)}: mean ± std (Δ)" for layer in result.layers)]
    rows = [header]
    for part in result.parts:
        cells = [part if part != RANDOM else f"random ({len(result.random_masks)} trials)"]
        for layer in result.layers:
            score = result.scores[(part, layer)]
            cells.append(f"{score.mean:.4f} ± {score.std:.4f} ({score.delta:,.0f})")
        rows.append(cells)
    return rows


def table_image(rows: Sequence[Sequence[str]]) -> np.ndarray:
    """``rows`` of text as a left-aligned table (header in the muted colour)."""
    labels = [
        [panels.level_text(text, MUTED_TEXT if r == 0 else TEXT) for text in row]
        for r, row in enumerate(rows)
    ]
    widths = [max(row[c].shape[1] for row in labels) for c in range(len(labels[0]))]
    step = max(label.shape[0] for row in labels for label in row) + LINE_GAP
    canvas = np.full(
        (len(rows) * step + PADDING, sum(widths) + COLUMN_GAP * len(widths), 3),
        BACKGROUND,
        dtype=np.uint8,
    )
    for r, row in enumerate(labels):
        left = 0
        for c, label in enumerate(row):
            canvas[r * step : r * step + label.shape[0], left : left + label.shape[1]] = label
            left += widths[c] + COLUMN_GAP
    return canvas


def correspondence_figure(
    result: CorrespondenceResult,
    images: Sequence[np.ndarray],
    image_names: Sequence[str],
    *,
    fill_rgb: RGB = (128, 128, 128),
    part_boxes: Sequence[Mapping[str, Box]] | None = None,
    display_names: Mapping[str, str] | None = None,
    photos: bool = True,
) -> np.ndarray:
    """``(H, W, 3)`` uint8: the grid of masked images (``images`` are ``(H, W, 3)`` uint8 as
    the network saw them, ``fill_rgb`` the mask's colour there), then the table.

    ``photos=False`` draws the masks on a blank canvas of the input's size instead of the
    images, for figures of photos that may not be redistributed."""
    parts = [p for p in result.parts if p != RANDOM]
    rows = []
    for n, picture in enumerate(images):
        image = picture.copy()
        if not photos:
            image[...] = NO_DATA
        tiles = []
        for part in parts:
            hand = part_boxes[n].get(part) if part_boxes is not None else None
            tiles.append(
                panels.captioned(_masked(image, result.masks[n][part], fill_rgb, hand), part)
            )
        tiles.append(
            panels.captioned(_masked(image, result.random_masks[0][n], fill_rgb, None), "random")
        )
        rows.append(panels.row(tiles, image_names[n]))
    title = wrap_text(
        f"Correspondence (Zeiler & Fergus §4.3): each part masked with a {result.size}px "
        "square in every image; the table scores how consistently the feature signs change "
        "(fraction of entries that differ between two images; lower = more consistent).",
        max(r.shape[1] for r in rows) - 2 * PADDING,
        TITLE_FONT_SIZE,
    )
    heading = panels.row([text_image(title, TITLE_FONT_SIZE)])
    note = text_image(
        "red square: the mask; yellow box: the part as marked by hand"
        + ("" if photos else " (photos left out: drawn on a blank canvas)"),
        HEADER_FONT_SIZE,
        colour=MUTED_TEXT,
    )
    table = panels.row([table_image(table_rows(result, display_names))])
    return panels.stack([heading, *rows, panels.row([note]), table])


def _masked(image: np.ndarray, mask: Box, fill: RGB, hand: Box | None) -> np.ndarray:
    top, left, bottom, right = mask
    shown = image.copy()
    shown[max(top, 0) : bottom, max(left, 0) : right] = fill
    factor = TILE_SIDE / max(image.shape[:2])
    big = panels.resize_panel(shown, TILE_SIDE, smooth=True)
    scale = [round(v * factor) for v in mask]
    big = panels.outline(big, (scale[0], scale[1], scale[2], scale[3]), MASK_OUTLINE, 1)
    if hand is not None:
        drawn = [round(v * factor) for v in hand]
        big = panels.outline(big, (drawn[0], drawn[1], drawn[2], drawn[3]), BOX_COLOUR, 1)
    return big
