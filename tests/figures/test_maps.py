"""Readable feature maps (issue 23, item 2): each map enlarged by a whole factor and
numbered, one grey scale with a colour bar or each map its own, pages for large layers.

Oracle: maps with known values; the tile of map c must be exactly its values scaled to
grey and repeated ``factor`` times in both directions (nearest neighbour)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deconvnet.errors import InputError
from deconvnet.figures.maps import MAPS_PER_PAGE, MIN_TILE, maps_figure, pages, shared_scale
from deconvnet.figures.style import BACKGROUND
from tests._pictures import places


def _find(canvas: np.ndarray, tile: np.ndarray) -> tuple[int, int]:
    """Top-left of the one place where ``tile`` occurs in ``canvas``."""
    found = places(canvas, tile)
    assert len(found) == 1, f"tile found {len(found)} times"
    return found[0]


def test_each_map_is_enlarged_by_a_whole_factor_and_numbered() -> None:
    maps = torch.arange(4 * 13 * 13, dtype=torch.float32).reshape(4, 13, 13)
    figure = maps_figure(
        maps,
        [10, 11, 12, 13],
        title="fire9: 4 maps",
        contrast="shared",
        scale=(0.0, float(maps.max())),
    )
    factor = -(-MIN_TILE // 13)
    grey = np.round(maps[2].numpy() / float(maps.max()) * 255).astype(np.uint8)
    tile = np.repeat(np.repeat(grey, factor, axis=0), factor, axis=1)
    y, x = _find(figure, np.repeat(tile[:, :, None], 3, axis=2))
    above = figure[y - 14 : y, x : x + 40]
    assert (above != BACKGROUND).any()  # its number is written above it
    assert figure.shape[1] >= 2 * 13 * factor


def test_a_shared_scale_has_a_colour_bar_and_per_map_contrast_stretches_each() -> None:
    maps = torch.stack([torch.rand(9, 9), 10 * torch.rand(9, 9)])
    shared = maps_figure(maps, [0, 1], title="t", contrast="shared")
    own = maps_figure(maps, [0, 1], title="t", contrast="tile")
    assert shared.shape[0] > own.shape[0]  # the bar
    weak = maps[0].numpy()
    grey = np.round((weak - weak.min()) / (weak.max() - weak.min()) * 255).astype(np.uint8)
    factor = -(-MIN_TILE // 9)
    tile = np.repeat(np.repeat(grey, factor, axis=0), factor, axis=1)
    _find(own, np.repeat(tile[:, :, None], 3, axis=2))  # stretched to full range on its own
    with pytest.raises(InputError):
        maps_figure(maps, [0], title="t")


def test_pages_and_the_shared_scale() -> None:
    assert [len(p) for p in pages(512)] == [MAPS_PER_PAGE] * 8
    assert [list(p) for p in pages(5, 2)] == [[0, 1], [2, 3], [4]]
    values = torch.zeros(1, 100, 100)
    values[0, 0, :10] = 1000.0  # 0.1 % of the values: above the clip
    values[0, 1:, :] = torch.linspace(0, 1, 100)
    low, high = shared_scale(values)
    assert low == 0.0 and 0.99 <= high <= 1.0
