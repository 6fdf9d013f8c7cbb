"""The look every figure shares: one set of colours, greys, spacing, font sizes, and text.

Each figure module keeps only the geometry that is its own (tile gaps, panel sizes); what
two pictures have in common is defined once here, so sheets, panels and charts match.
Text is laid out and rendered by matplotlib's Agg renderer (anti-aliased DejaVu Sans,
measured exactly), never with a process-wide backend switch: the library builds its own
``Figure`` objects, so a user's pyplot settings are untouched.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import IdentityTransform

RGB = tuple[int, int, int]

MAX_LEVEL = 255
"""The brightest 8-bit level."""
BACKGROUND: RGB = (255, 255, 255)
TEXT: RGB = (0, 0, 0)
MUTED_TEXT: RGB = (90, 90, 90)
"""Secondary text: column headers' notes, units, provenance lines."""
WARNING_TEXT: RGB = (170, 60, 0)
"""Notes that change how a picture reads (blank projections and why)."""
NO_DATA: RGB = (230, 230, 230)
"""Cells with no value: NaN heatmap cells, occlusion margins no occluder centre covers."""
OUTSIDE_IMAGE: RGB = (200, 200, 200)
"""Parts of a receptive field that fall outside the image."""
EMPTY_SLOT: RGB = (235, 235, 235)
"""A tile slot with nothing to show (fewer images than k)."""
BOX_COLOUR: RGB = (255, 220, 0)
"""Receptive-field boxes drawn on the input when one colour is enough."""
OCCLUDER_COLOUR: RGB = (255, 0, 0)
LABEL_BOX_COLOUR: RGB = (0, 0, 0)
LABEL_TEXT_COLOUR: RGB = (255, 255, 0)
UNIT_COLOURS: tuple[RGB, ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (170, 110, 40),
)
"""Distinct box colours for the units of one sheet (Sasha Trubetskoy's palette); they
repeat after twelve."""

PADDING = 8
"""Space around tiles, panels and sheets."""
LINE_GAP = 2
"""Space between lines of text and between a panel and its footer."""
DPI = 72
"""Rendering resolution of text: at 72 dpi one point is one pixel, so font sizes below
are pixel heights of the em box."""
FONT_SIZE = 13
"""Panel titles, captions, legends and top-k labels."""
SHEET_FONT_SIZE = 14
"""Tile labels of contact sheets."""
GRID_FONT_SIZE = 12
"""Map indices written on feature-grid cells."""
HEADER_FONT_SIZE = 15
"""Column headers of sheets."""
TITLE_FONT_SIZE = 18
"""Sheet titles."""
WORD_SEPARATORS = "/._-"
"""A word too wide for its line is broken after one of these where possible."""
FONT_FAMILY = "DejaVu Sans"
"""Ships with matplotlib, so every machine draws the same glyphs."""


def text_size(text: str, size: int = FONT_SIZE, *, bold: bool = False) -> tuple[int, int]:
    """Width and height in pixels of ``text`` (may hold several lines) at ``size``."""
    alpha = _text_alpha(text, size, bold)
    return alpha.shape[1], alpha.shape[0]


def text_image(
    text: str,
    size: int = FONT_SIZE,
    *,
    colour: RGB = TEXT,
    background: RGB = BACKGROUND,
    bold: bool = False,
) -> np.ndarray:
    """``text`` rendered on ``background`` as a tight ``(H, W, 3)`` uint8 image."""
    alpha = _text_alpha(text, size, bold)[..., None]
    ink = np.asarray(colour, dtype=np.float64)
    paper = np.asarray(background, dtype=np.float64)
    blended: np.ndarray = np.round(alpha * ink + (1 - alpha) * paper).astype(np.uint8)
    return blended


def draw_text(
    canvas: np.ndarray,
    left: int,
    top: int,
    text: str,
    size: int = FONT_SIZE,
    *,
    colour: RGB = TEXT,
    bold: bool = False,
) -> tuple[int, int]:
    """Draw ``text`` onto ``canvas`` (H, W, 3 uint8, in place) with its box's top-left at
    ``(left, top)``, blended over what is there; clipped at the edges. Returns its size."""
    alpha = _text_alpha(text, size, bold)
    height, width = alpha.shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + height, canvas.shape[0]), min(left + width, canvas.shape[1])
    if y1 > y0 and x1 > x0:
        a = alpha[y0 - top : y1 - top, x0 - left : x1 - left, None]
        region = canvas[y0:y1, x0:x1].astype(np.float64)
        ink = np.asarray(colour, dtype=np.float64)
        canvas[y0:y1, x0:x1] = np.round(a * ink + (1 - a) * region).astype(np.uint8)
    return width, height


def wrap_text(text: str, width: int, size: int = FONT_SIZE, *, bold: bool = False) -> str:
    """``text`` with line breaks added between words so each line fits ``width`` pixels.

    Nothing is cut: a single word wider than ``width`` is broken after a separator
    (``fire5/`` | ``conv3x3_2``) or, failing that, between characters.
    Existing line breaks are kept.
    """
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if text_size(candidate, size, bold=bold)[0] <= width or not line:
                line = candidate
            else:
                lines.append(line)
                line = word
            while len(line) > 1 and text_size(line, size, bold=bold)[0] > width:
                cut = _longest_prefix(line, width, size, bold)
                lines.append(line[:cut])
                line = line[cut:]
        lines.append(line)
    return "\n".join(lines)


def line_height(size: int = FONT_SIZE) -> int:
    """Height of one line of text at ``size`` (what a caption row reserves per line)."""
    return text_size("Ag", size)[1]


def rendered(canvas: FigureCanvasAgg) -> np.ndarray:
    """Draw a private Agg canvas and return its pixels, ``(H, W, 4)`` uint8 (a copy)."""
    canvas.draw()  # type: ignore[no-untyped-call]
    return np.asarray(canvas.buffer_rgba()).copy()  # type: ignore[no-untyped-call]


def _longest_prefix(word: str, width: int, size: int, bold: bool) -> int:
    """Where to break ``word``: after its last separator (``/ . _ -``, as in layer names)
    within the longest prefix that fits ``width``, else at that prefix's end."""
    cut = len(word) - 1
    while cut > 1 and text_size(word[:cut], size, bold=bold)[0] > width:
        cut -= 1
    separators = [n for n in range(1, cut + 1) if word[n - 1] in WORD_SEPARATORS]
    return separators[-1] if separators else cut


@functools.lru_cache(maxsize=8192)
def _text_alpha(text: str, size: int, bold: bool) -> np.ndarray:
    """Coverage ``(H, W)`` in [0, 1] of ``text`` drawn by matplotlib's Agg renderer."""
    if not text:
        return np.zeros((math.ceil(size * 1.2), 0))
    figure = Figure(dpi=DPI)
    canvas = FigureCanvasAgg(figure)
    artist = figure.text(
        0,
        0,
        text,
        fontsize=size,
        family=FONT_FAMILY,
        weight="bold" if bold else "normal",
        color="black",
        transform=IdentityTransform(),
    )
    extent = artist.get_window_extent(canvas.get_renderer())  # type: ignore[no-untyped-call]
    width, height = math.ceil(extent.width) + 2, math.ceil(extent.height) + 2
    figure.set_size_inches(width / DPI, height / DPI)
    artist.set_position((1 - extent.x0, 1 - extent.y0))
    figure.patch.set_alpha(0.0)
    rgba = rendered(canvas)
    alpha = rgba[..., 3].astype(np.float64) / MAX_LEVEL
    alpha.setflags(write=False)
    return alpha
