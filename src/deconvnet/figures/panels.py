"""Figure pieces: colour maps, colour bars, label maps, legends and titled panels.

Shared by the occlusion, comparison, sanity and projection figures so they look alike
(their colours, fonts and spacing come from :mod:`deconvnet.figures.style`). Colour maps
and colour bars are matplotlib's (drawn on private Agg figures); image tiles stay arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import matplotlib.ticker
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from deconvnet.figures.style import (
    BACKGROUND,
    DPI,
    FONT_FAMILY,
    FONT_SIZE,
    LINE_GAP,
    MAX_LEVEL,
    NO_DATA,
    PADDING,
    RGB,
    TEXT,
    draw_text,
    rendered,
    text_image,
    text_size,
    wrap_text,
)

SEQUENTIAL_MAP = "viridis"
"""Colour map of heat maps with no sign (activations, probabilities)."""
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


def colormap(
    values: np.ndarray,
    low: float | None = None,
    high: float | None = None,
    *,
    name: str = SEQUENTIAL_MAP,
) -> np.ndarray:
    """``(H, W)`` floats to ``(H, W, 3)`` uint8 through matplotlib's colour map ``name``.

    ``[low, high]`` spans the map (default: the data's min and max); a constant map is the
    middle colour. NaN shows as the no-data grey.
    """
    data = np.asarray(values, dtype=np.float64)
    finite = data[np.isfinite(data)]
    low = float(finite.min()) if low is None and finite.size else (low or 0.0)
    high = float(finite.max()) if high is None and finite.size else (high or 0.0)
    span = high - low
    unit = (data - low) / span if span > 0 else np.full(data.shape, 0.5)
    unit = np.clip(np.nan_to_num(unit, nan=0.0), 0.0, 1.0)
    rgb = np.asarray(matplotlib.colormaps[name](unit, bytes=True))[..., :3].copy()
    rgb[~np.isfinite(data)] = NO_DATA
    return rgb


def colour_bar(
    low: float,
    high: float,
    width: int = PANEL_SIDE,
    *,
    name: str = SEQUENTIAL_MAP,
    label: str | None = None,
) -> np.ndarray:
    """A horizontal matplotlib colour bar ``width`` pixels wide, with ticks (and ``label``)."""
    if not high > low:
        high = low + 1.0
    height = 3 * SWATCH + 2 * FONT_SIZE + (FONT_SIZE + LINE_GAP if label else 0)
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="white")
    canvas = FigureCanvasAgg(figure)
    bottom = (2 * FONT_SIZE + (FONT_SIZE + LINE_GAP if label else 0)) / height
    axes = figure.add_axes((0.1, bottom, 0.8, 1.5 * SWATCH / height))
    mappable = ScalarMappable(norm=Normalize(low, high), cmap=matplotlib.colormaps[name])
    bar = figure.colorbar(mappable, cax=axes, orientation="horizontal")
    bar.ax.tick_params(labelsize=FONT_SIZE - 2, length=3, pad=1)
    bar.ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=4))
    for tick in bar.ax.get_xticklabels():
        tick.set_fontfamily(FONT_FAMILY)
    if label:
        bar.set_label(label, fontsize=FONT_SIZE - 1, family=FONT_FAMILY, labelpad=1)
    return rendered(canvas)[..., :3].copy()


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
    """Colour swatches with their names, one per line (wrapped, never cut), ``width`` wide."""
    rows = []
    for colour, name in entries:
        text = wrap_text(name, width - SWATCH - 3 * LINE_GAP)
        height = max(text_size(text)[1], SWATCH + 2 * LINE_GAP) + LINE_GAP
        line = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
        line[LINE_GAP + 1 : LINE_GAP + SWATCH + 1, :SWATCH] = TEXT
        line[LINE_GAP + 2 : LINE_GAP + SWATCH, 1 : SWATCH - 1] = colour
        draw_text(line, SWATCH + 2 * LINE_GAP, 0, text)
        rows.append(line)
    if not rows:
        return np.full((1, width, 3), BACKGROUND, dtype=np.uint8)
    return np.concatenate(rows, axis=0)


def resize_panel(image: np.ndarray, side: int = PANEL_SIDE, *, smooth: bool = False) -> np.ndarray:
    """Scale ``(H, W, 3)`` uint8 so its longer side is ``side`` (nearest unless ``smooth``)."""
    height, width = image.shape[:2]
    factor = side / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    resample = Image.Resampling.BILINEAR if smooth else Image.Resampling.NEAREST
    return np.asarray(Image.fromarray(image).resize(size, resample)).copy()


def titled(
    panel: np.ndarray, title: str, footer: np.ndarray | None = None, *, wrap: bool = True
) -> np.ndarray:
    """``panel`` with ``title`` above (wrapped to the panel's width, never cut) and an
    optional footer image below."""
    width = max(panel.shape[1], 0 if footer is None else footer.shape[1])
    heading = text_image(wrap_text(title, width) if wrap else title)
    width = max(width, heading.shape[1])
    text_height = heading.shape[0] + LINE_GAP
    footer_height = 0 if footer is None else footer.shape[0] + LINE_GAP
    canvas = np.full(
        (text_height + panel.shape[0] + footer_height, width, 3), BACKGROUND, dtype=np.uint8
    )
    canvas[: heading.shape[0], : heading.shape[1]] = heading
    canvas[text_height : text_height + panel.shape[0], : panel.shape[1]] = panel
    if footer is not None:
        top = text_height + panel.shape[0] + LINE_GAP
        canvas[top : top + footer.shape[0], : footer.shape[1]] = footer
    return canvas


def row(panels: Sequence[np.ndarray], caption: str | None = None) -> np.ndarray:
    """Panels side by side, top-aligned, with padding and an optional caption below
    (wrapped to the row's width)."""
    height = max(p.shape[0] for p in panels) + 2 * PADDING
    width = sum(p.shape[1] for p in panels) + PADDING * (len(panels) + 1)
    note = text_image(wrap_text(caption, width - 2 * PADDING)) if caption else None
    caption_height = note.shape[0] + PADDING if note is not None else 0
    canvas = np.full((height + caption_height, width, 3), BACKGROUND, dtype=np.uint8)
    left = PADDING
    for panel in panels:
        canvas[PADDING : PADDING + panel.shape[0], left : left + panel.shape[1]] = panel
        left += panel.shape[1] + PADDING
    if note is not None:
        canvas[height : height + note.shape[0], PADDING : PADDING + note.shape[1]] = note
    return canvas


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


def captioned(tile: np.ndarray, caption: str) -> np.ndarray:
    """``tile`` under a one-line caption whose strip is one line high whatever its letters,
    so the tiles of a row stay level."""
    text = level_text(caption)
    strip = np.full(
        (text.shape[0] + LINE_GAP, max(tile.shape[1], text.shape[1]), 3), BACKGROUND, np.uint8
    )
    strip[: text.shape[0], : text.shape[1]] = text
    return stack([strip, tile])


STRUT = " Ág"
"""Appended (then cut off) when rendering one-line labels, so every label spans the same
ascent and descent and labels side by side share a baseline."""


def level_text(text: str, colour: RGB = TEXT) -> np.ndarray:
    """``text`` as a one-line image as tall as any line, its baseline where every label's is."""
    return text_image(text + STRUT, colour=colour)[:, : text_size(text)[0]]
