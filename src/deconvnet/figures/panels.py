"""Figure pieces drawn with Pillow only: a colour map, heatmaps, label maps, titled panels.

Shared by the occlusion, comparison and sanity figures so they look alike (their colours,
fonts and spacing come from :mod:`deconvnet.figures.style`). Matplotlib is
not a runtime dependency: the colour map is a small lookup table (viridis anchors,
interpolated linearly) and all text uses Pillow's default font.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from deconvnet.figures.style import (
    BACKGROUND,
    FONT_SIZE,
    LINE_GAP,
    MAX_LEVEL,
    NO_DATA,
    PADDING,
    TEXT,
    fit_text,
    font,
)

VIRIDIS_ANCHORS = np.array(
    [
        (68, 1, 84),
        (72, 40, 120),
        (62, 73, 137),
        (49, 104, 142),
        (38, 130, 142),
        (31, 158, 137),
        (53, 183, 121),
        (110, 206, 88),
        (181, 222, 43),
        (253, 231, 37),
    ],
    dtype=np.float64,
)
"""Ten evenly spaced samples of matplotlib's viridis (CC0); values in between interpolate."""

LABEL_PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (188, 189, 34),
    (23, 190, 207),
    (127, 127, 127),
    (174, 199, 232),
    (255, 187, 120),
)
"""Distinct colours for class labels (tab10 plus two light tones), most frequent first."""

OTHER_COLOUR = (40, 40, 40)
"""Colour of the labels beyond the palette, grouped as "other"."""
PANEL_SIDE = 224
"""Panels are upscaled (nearest) or downscaled (bilinear) so their longer side is this."""
SWATCH = 10
"""Side of a legend's colour swatch and height of a colour bar."""


def colormap(values: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """``(H, W)`` floats to ``(H, W, 3)`` uint8 viridis; ``[low, high]`` spans the map.

    ``low``/``high`` default to the data's min and max; a constant map is the middle
    colour. NaN shows as the no-data grey.
    """
    data = np.asarray(values, dtype=np.float64)
    finite = data[np.isfinite(data)]
    low = float(finite.min()) if low is None and finite.size else (low or 0.0)
    high = float(finite.max()) if high is None and finite.size else (high or 0.0)
    span = high - low
    unit = (data - low) / span if span > 0 else np.full(data.shape, 0.5)
    unit = np.clip(np.nan_to_num(unit, nan=0.0), 0.0, 1.0)
    position = unit * (len(VIRIDIS_ANCHORS) - 1)
    below = np.floor(position).astype(int).clip(0, len(VIRIDIS_ANCHORS) - 2)
    weight = (position - below)[..., None]
    rgb: np.ndarray = VIRIDIS_ANCHORS[below] * (1 - weight) + VIRIDIS_ANCHORS[below + 1] * weight
    rgb[~np.isfinite(data)] = NO_DATA
    return np.round(rgb).astype(np.uint8)


def colour_bar(low: float, high: float, width: int = PANEL_SIDE) -> np.ndarray:
    """A horizontal viridis bar with its end values written under it."""
    bar_height = SWATCH
    ramp = colormap(np.tile(np.linspace(0.0, 1.0, width), (bar_height, 1)), 0.0, 1.0)
    text = f"{low:.3g}"
    right = f"{high:.3g}"
    canvas = Image.new("RGB", (width, bar_height + FONT_SIZE + 2 * LINE_GAP), BACKGROUND)
    canvas.paste(Image.fromarray(ramp), (0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.text((0, bar_height + LINE_GAP), text, fill=TEXT, font=font())
    right_width = draw.textlength(right, font=font())
    draw.text((width - right_width, bar_height + LINE_GAP), right, fill=TEXT, font=font())
    return np.asarray(canvas).copy()


def label_colours(labels: np.ndarray) -> dict[int, tuple[int, int, int]]:
    """A colour for each class in ``labels``: the most frequent get the palette, others grey."""
    classes, counts = np.unique(np.asarray(labels), return_counts=True)
    order = classes[np.argsort(-counts, kind="stable")]
    return {
        int(c): LABEL_PALETTE[i] if i < len(LABEL_PALETTE) else OTHER_COLOUR
        for i, c in enumerate(order)
    }


def label_image(labels: np.ndarray, colours: dict[int, tuple[int, int, int]]) -> np.ndarray:
    """``(H, W)`` class indices to ``(H, W, 3)`` uint8 colours."""
    lut_keys = np.array(sorted(colours), dtype=np.int64)
    lut = np.array([colours[int(k)] for k in lut_keys], dtype=np.uint8)
    return lut[np.searchsorted(lut_keys, np.asarray(labels, dtype=np.int64))]


def legend(entries: Sequence[tuple[tuple[int, int, int], str]], width: int) -> np.ndarray:
    """Colour swatches with their names, one per line, ``width`` pixels wide."""
    face = font()
    line = FONT_SIZE + LINE_GAP * 2
    canvas = Image.new("RGB", (width, max(1, len(entries)) * line), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for row, (colour, name) in enumerate(entries):
        top = row * line + LINE_GAP
        draw.rectangle((0, top, SWATCH, top + SWATCH), fill=colour, outline=TEXT)
        draw.text(
            (SWATCH + 2 * LINE_GAP, top - 1),
            fit_text(name, width - SWATCH - 6, face),
            fill=TEXT,
            font=face,
        )
    return np.asarray(canvas).copy()


def resize_panel(image: np.ndarray, side: int = PANEL_SIDE, *, smooth: bool = False) -> np.ndarray:
    """Scale ``(H, W, 3)`` uint8 so its longer side is ``side`` (nearest unless ``smooth``)."""
    height, width = image.shape[:2]
    factor = side / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    resample = Image.Resampling.BILINEAR if smooth else Image.Resampling.NEAREST
    return np.asarray(Image.fromarray(image).resize(size, resample)).copy()


def titled(panel: np.ndarray, title: str, footer: np.ndarray | None = None) -> np.ndarray:
    """``panel`` with ``title`` (may hold several lines) above and an optional footer image."""
    face = font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = [fit_text(t, panel.shape[1], face) for t in title.split("\n")]
    box = probe.multiline_textbbox((0, 0), "\n".join(lines), font=face)
    text_height = math.ceil(box[3]) + LINE_GAP
    footer_height = 0 if footer is None else footer.shape[0] + LINE_GAP
    width = max(panel.shape[1], 0 if footer is None else footer.shape[1])
    canvas = Image.new("RGB", (width, text_height + panel.shape[0] + footer_height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.multiline_text((0, 0), "\n".join(lines), fill=TEXT, font=face)
    canvas.paste(Image.fromarray(panel), (0, text_height))
    if footer is not None:
        canvas.paste(Image.fromarray(footer), (0, text_height + panel.shape[0] + LINE_GAP))
    return np.asarray(canvas).copy()


def row(panels: Sequence[np.ndarray], caption: str | None = None) -> np.ndarray:
    """Panels side by side, top-aligned, with padding and an optional caption line below."""
    height = max(p.shape[0] for p in panels) + 2 * PADDING
    width = sum(p.shape[1] for p in panels) + PADDING * (len(panels) + 1)
    caption_height = FONT_SIZE + 2 * LINE_GAP if caption else 0
    canvas = Image.new("RGB", (width, height + caption_height), BACKGROUND)
    left = PADDING
    for panel in panels:
        canvas.paste(Image.fromarray(panel), (left, PADDING))
        left += panel.shape[1] + PADDING
    if caption:
        ImageDraw.Draw(canvas).text(
            (PADDING, height),
            fit_text(caption, width - 2 * PADDING, font()),
            fill=TEXT,
            font=font(),
        )
    return np.asarray(canvas).copy()


def stack(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Rows one under the other, left-aligned, on white."""
    width = max(r.shape[1] for r in rows)
    canvas = np.full((sum(r.shape[0] for r in rows), width, 3), MAX_LEVEL, dtype=np.uint8)
    top = 0
    for image in rows:
        canvas[top : top + image.shape[0], : image.shape[1]] = image
        top += image.shape[0]
    return canvas


def outline(
    image: np.ndarray, box: tuple[int, int, int, int], colour: tuple[int, int, int], width: int = 2
) -> np.ndarray:
    """Copy of ``image`` with the ``(top, left, bottom, right)`` box drawn (exclusive ends)."""
    canvas = Image.fromarray(image)
    top, left, bottom, right = box
    ImageDraw.Draw(canvas).rectangle(
        (left, top, right - 1, bottom - 1), outline=colour, width=width
    )
    return np.asarray(canvas).copy()
