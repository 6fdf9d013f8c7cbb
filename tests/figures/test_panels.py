"""Figure pieces: colour maps' ends and no-data cells, colour bars, wrapped titles."""

from __future__ import annotations

import numpy as np

from deconvnet.figures import panels
from deconvnet.figures.style import FONT_SIZE, NO_DATA, text_size

VIRIDIS_ENDS = ((68, 1, 84), (253, 231, 37))
"""matplotlib's viridis at 0 and 1 (its published table, rounded to 8 bits)."""
RDBU_R_MIDDLE_WHITE = 240
"""RdBu_r at 0.5 is near white (247, 247, 247): every channel above this."""


def test_colormap_ends_and_missing_cells() -> None:
    values = np.array([[0.0, 1.0], [np.nan, 0.5]])
    rgb = panels.colormap(values)
    # matplotlib quantises by flooring: within one level of the rounded table
    assert np.abs(rgb[0, 0].astype(int) - VIRIDIS_ENDS[0]).max() <= 1
    assert np.abs(rgb[0, 1].astype(int) - VIRIDIS_ENDS[1]).max() <= 1
    assert tuple(rgb[1, 0]) == NO_DATA


def test_diverging_map_is_white_at_zero_red_positive_blue_negative() -> None:
    rgb = panels.colormap(np.array([[-1.0, 0.0, 1.0]]), -1.0, 1.0, name="RdBu_r")
    blue, white, red = (rgb[0, i].astype(int) for i in range(3))
    assert white.min() > RDBU_R_MIDDLE_WHITE
    assert blue[2] > blue[0] and red[0] > red[2]


def test_colour_bar_has_the_asked_width_and_its_ramp() -> None:
    bar = panels.colour_bar(0.0, 1.0, 200)
    assert bar.shape[1] == 200 and bar.shape[2] == 3
    # somewhere in the bar a row runs from viridis' dark end to its bright end
    rows = [r for r in bar if (np.abs(r.astype(int) - VIRIDIS_ENDS[1]).sum(axis=1) < 30).any()]
    assert rows, "no row of the colour bar reaches viridis' bright end"


def test_titles_wrap_instead_of_being_cut() -> None:
    panel = np.zeros((50, 120, 3), dtype=np.uint8)
    title = "step 7: randomised down to features.0 (every layer), spearman 0.12, ssim 0.34"
    drawn = panels.titled(panel, title)
    assert drawn.shape[1] == 120
    one_line = text_size("A", FONT_SIZE)[1]
    assert drawn.shape[0] - 50 >= 3 * one_line  # several lines above the panel


def test_legend_rows_keep_the_whole_name() -> None:
    long_name = "great grey owl, great gray owl, Strix nebulosa (40%)"
    shown = panels.legend([((255, 0, 0), long_name)], 120)
    assert shown.shape[1] == 120
    assert shown.shape[0] >= 2 * text_size("A", FONT_SIZE)[1]
