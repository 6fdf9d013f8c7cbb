"""Text drawn by matplotlib: legible sizes, exact wrapping, clipped drawing."""

from __future__ import annotations

import numpy as np
import pytest

from deconvnet.figures import style

MIN_LABEL_PX = 11
"""The issue's floor for label text height."""


@pytest.mark.parametrize("size", [style.FONT_SIZE, style.SHEET_FONT_SIZE, style.GRID_FONT_SIZE])
def test_label_text_is_at_least_11_px_tall(size: int) -> None:
    ink = style.text_image("Ag", size) < 128  # dark pixels
    rows = np.flatnonzero(ink.any(axis=(1, 2)))
    assert rows[-1] - rows[0] + 1 >= MIN_LABEL_PX


def test_wrap_never_exceeds_the_width_and_keeps_every_character() -> None:
    text = "cascading randomisation of fire5/concat, averyveryverylongwordthatmustbreak ok"
    for width in (40, 90, 200):
        wrapped = style.wrap_text(text, width)
        for line in wrapped.split("\n"):
            assert style.text_size(line)[0] <= width or len(line) == 1
        assert wrapped.replace("\n", "").replace(" ", "") == text.replace(" ", "")


def test_draw_text_blends_in_place_and_clips_at_edges() -> None:
    canvas = np.full((20, 30, 3), 255, dtype=np.uint8)
    width, height = style.draw_text(canvas, 20, 10, "WWWW", colour=(255, 0, 0))
    assert width > 10 and height > 10  # it reports its full size though clipped
    inked = canvas[10:, 20:]
    assert (inked[..., 1] < 200).any()  # red ink: green falls
    assert (canvas[:10] == 255).all() and (canvas[:, :20] == 255).all()


def test_text_image_is_tight_on_its_background() -> None:
    image = style.text_image("x", 14, background=(0, 0, 255), colour=(255, 255, 0))
    assert tuple(image[0, 0]) == (0, 0, 255)
    assert image.shape[0] < 3 * 14 and image.shape[1] < 3 * 14
