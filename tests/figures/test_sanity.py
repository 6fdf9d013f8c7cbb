"""The sanity-check figure: input patch then one titled tile per step, zoomed, never cut.

Oracles: the receptive-field box worked out by hand for the test net, the style's own text
measurement for title widths, and the instrument's ``active`` flags for inactive tiles.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deconvnet.engine.selection import MapMax, TopMaps
from deconvnet.figures.sanity import (
    MIN_TILE_SIDE,
    sanity_figure,
    sanity_panels,
    shown_steps,
)
from deconvnet.figures.style import NO_DATA, text_size, wrap_text
from deconvnet.instruments.sanity import STATUS_INACTIVE, cascading_randomisation
from tests import _nets


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)


def _cascade(select=None, **kwargs):
    model = _nets.small_classifier()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    return cascading_randomisation(model, x, "3", select or MapMax(2), **kwargs)


def _negative(module: nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for param in module.parameters(recurse=False):
            param.copy_(-(torch.rand(param.shape, generator=generator) + 0.1))


def test_figure_of_a_cascade_is_an_rgb_picture():
    picture = sanity_figure(_cascade(), _image())
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3


def test_panels_zoom_to_the_receptive_field_box_and_share_one_size():
    result = _cascade()
    image = _image()
    panels = sanity_panels(result, image)
    y, x = (int(v) for v in result.seeds[0].split(",")[1:])
    # by hand: conv3x3 p1, pool 2, conv3x3 p1 -> size 8, stride 2, box of unit 0 from -3
    top, left = max(2 * y - 3, 0), max(2 * x - 3, 0)
    bottom, right = min(2 * y + 5, 16), min(2 * x + 5, 16)
    patch = image[top:bottom, left:right]
    factor = -(-MIN_TILE_SIDE // max(patch.shape[:2]))  # ceil: small crops are upscaled
    np.testing.assert_array_equal(
        panels[0].tile, patch.repeat(factor, axis=0).repeat(factor, axis=1)
    )
    assert len(panels) == 1 + len(result.rows)
    assert {p.tile.shape for p in panels} == {panels[0].tile.shape}
    assert max(panels[0].tile.shape[:2]) >= MIN_TILE_SIDE


def test_full_frame_shows_the_whole_input():
    panels = sanity_panels(_cascade(), _image(), full_frame=True)
    factor = -(-MIN_TILE_SIDE // 16)
    np.testing.assert_array_equal(
        panels[0].tile, _image().repeat(factor, axis=0).repeat(factor, axis=1)
    )


def test_titles_fit_their_tiles_in_full():
    names = {"0": "a-very-long-layer-name/conv1x1_squeeze_branch", "3": "features.3"}
    result = _cascade(TopMaps(2))
    for seed in range(2):
        for panel in sanity_panels(result, _image(), seed=seed, names=names):
            wrapped = wrap_text(panel.title, panel.tile.shape[1])
            for line in wrapped.split("\n"):
                assert text_size(line)[0] <= panel.tile.shape[1], line
            # nothing cut: the same characters, only line breaks added
            assert wrapped.replace("\n", "").replace(" ", "") == panel.title.replace(
                "\n", ""
            ).replace(" ", "")
            assert "…" not in wrapped and "nan" not in wrapped


def test_wrap_breaks_long_names_after_separators():
    width = text_size("fire5/conv3x3_")[0]  # "fire5/conv3x3_2/relu" is wider
    assert wrap_text("fire5/conv3x3_2/relu", width).split("\n") == [
        "fire5/conv3x3_",
        "2/relu",
    ]
    assert wrap_text("step 1: down to x", 10_000) == "step 1: down to x"


def test_an_inactive_unit_is_a_labelled_grey_tile_not_black():
    result = _cascade(reinitialise=_negative)
    panels = sanity_panels(result, _image())
    steps = panels[1:]
    assert not steps[0].inactive
    for row, panel in zip(result.rows[1:], steps[1:], strict=True):
        assert not row.scores[0].active
        assert panel.inactive and STATUS_INACTIVE in panel.title and "nan" not in panel.title
        grey = np.all(panel.tile == NO_DATA, axis=2).mean()
        assert 0.9 < grey < 1.0  # the no-data grey, with the words written on it
        assert panel.tile.shape == steps[0].tile.shape


@pytest.mark.parametrize(("count", "expected"), [(3, [0, 1, 2]), (15, [0, 2, 4, 6, 8, 10, 12, 14])])
def test_shown_steps_keep_both_ends(count, expected):
    assert shown_steps(count) == expected
