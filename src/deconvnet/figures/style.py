"""The look every figure shares: one set of colours, greys, spacing, font sizes and text helpers.

Each figure module keeps only the geometry that is its own (tile gaps, panel sizes); what
two pictures have in common is defined once here, so sheets, panels and charts match.
"""

from __future__ import annotations

import math

from PIL import Image, ImageDraw, ImageFont

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
RGB = tuple[int, int, int]

MAX_LEVEL = 255
"""The brightest 8-bit level."""
BACKGROUND: RGB = (255, 255, 255)
TEXT: RGB = (0, 0, 0)
NO_DATA: RGB = (230, 230, 230)
"""Cells with no value: NaN heatmap cells, occlusion margins no occluder centre covers."""
OUTSIDE_IMAGE: RGB = (200, 200, 200)
"""Parts of a receptive field that fall outside the image."""
EMPTY_SLOT: RGB = (235, 235, 235)
"""A tile slot with nothing to show (fewer images than k)."""
BOX_COLOUR: RGB = (255, 220, 0)
"""Receptive-field boxes drawn on the input."""
OCCLUDER_COLOUR: RGB = (255, 0, 0)
LABEL_BOX_COLOUR: RGB = (0, 0, 0)
LABEL_TEXT_COLOUR: RGB = (255, 255, 0)

PADDING = 8
"""Space around tiles, panels and sheets."""
LINE_GAP = 2
"""Space between lines of text and between a panel and its footer."""
FONT_SIZE = 12
"""Panel titles, captions, legends and top-k labels."""
SHEET_FONT_SIZE = 13
"""Tile labels of contact sheets."""
GRID_FONT_SIZE = 10
"""Map indices written on feature-grid cells."""
TITLE_FONT_SIZE = 16
"""Sheet titles."""


def font(size: int = FONT_SIZE) -> Font:
    """Pillow's built-in font, sized where Pillow >= 10.1 allows."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no size argument
        return ImageFont.load_default()


def text_size(text: str, face: Font) -> tuple[int, int]:
    """Width and height in pixels of ``text`` (may hold several lines) in ``face``."""
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    _, _, right, bottom = probe.multiline_textbbox((0, 0), text, font=face)
    return math.ceil(right), math.ceil(bottom)


def fit_text(text: str, width: int, face: Font) -> str:
    """``text`` cut with an ellipsis so it fits in ``width`` pixels."""
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    if probe.textlength(text, font=face) <= width:
        return text
    while text and probe.textlength(text + "…", font=face) > width:
        text = text[:-1]
    return text + "…"
