"""Pictures from tensors (deconvnet.figures.render).

Oracles: Caffe's ``vis_square`` copied literally from the classification notebook, literal
display formulas, exact tile search in contact sheets, and round trips through Pillow/json.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deconvnet.errors import InputError
from deconvnet.figures.render import (
    DisplayRange,
    contact_sheet,
    crop_box,
    feature_grid,
    shared_range,
    to_display,
)

RNG = np.random.default_rng(1)


def vis_square(data: np.ndarray, padsize: int = 1, padval: float = 1.0) -> np.ndarray:
    """Caffe's examples/00-classification vis_square, minus the plotting (and on a copy)."""
    data = data.copy()
    data = (data - data.min()) / (data.max() - data.min())
    n = int(np.ceil(np.sqrt(data.shape[0])))
    padding = ((0, n**2 - data.shape[0]), (0, padsize), (0, padsize)) + ((0, 0),) * (data.ndim - 3)
    data = np.pad(data, padding, mode="constant", constant_values=(padval, padval))
    data = data.reshape((n, n) + data.shape[1:]).transpose(  # noqa: RUF005 (verbatim)
        (0, 2, 1, 3) + tuple(range(4, data.ndim + 1))  # noqa: RUF005
    )
    return data.reshape((n * data.shape[1], n * data.shape[3]) + data.shape[4:])  # noqa: RUF005


# ---------------------------------------------------------------- feature_grid


@pytest.mark.parametrize("count", [1, 5, 9, 10, 96])
def test_feature_grid_matches_caffe_vis_square(count: int) -> None:
    maps = RNG.normal(size=(count, 6, 7))
    grid = feature_grid(maps)
    columns = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / columns))
    expected = np.round(vis_square(maps) * 255).astype(np.uint8)[: rows * 7]  # no empty rows
    assert grid.shape == (*expected.shape, 3) and grid.dtype == np.uint8
    for channel in range(3):
        np.testing.assert_array_equal(grid[:, :, channel], expected)


def test_feature_grid_per_map_normalisation_and_padding() -> None:
    maps = RNG.normal(size=(4, 3, 3)) * np.array([1.0, 10.0, 100.0, 0.0])[:, None, None]
    grid = feature_grid(maps, normalise="map", padding=2, pad_value=0.0)[:, :, 0]
    assert grid.shape == (2 * 5, 2 * 5)
    for index in range(3):
        tile = grid[(index // 2) * 5 : (index // 2) * 5 + 3, (index % 2) * 5 : (index % 2) * 5 + 3]
        m = maps[index]
        np.testing.assert_array_equal(
            tile, np.round((m - m.min()) / (m.max() - m.min()) * 255).astype(np.uint8)
        )
    np.testing.assert_array_equal(grid[5:8, 5:8], 0)  # the constant map
    np.testing.assert_array_equal(grid[3:5], 0)  # separators at pad_value 0


def test_feature_grid_never_modifies_its_input() -> None:
    maps = torch.randn(6, 5, 5)
    before = maps.clone()
    feature_grid(maps, labels=True)
    torch.testing.assert_close(maps, before, rtol=0, atol=0)
    array = RNG.normal(size=(6, 5, 5))
    copy = array.copy()
    feature_grid(array, normalise="map")
    np.testing.assert_array_equal(array, copy)


def test_feature_grid_upscaling_and_labels() -> None:
    maps = RNG.normal(size=(4, 4, 4))
    plain = feature_grid(maps, min_tile=16)
    upscaled = maps.repeat(4, axis=1).repeat(4, axis=2)
    np.testing.assert_array_equal(plain[:, :, 0], np.round(vis_square(upscaled) * 255))
    labelled = feature_grid(maps, labels=True, min_tile=16)
    assert labelled.shape == plain.shape
    changed = np.any(labelled != plain, axis=2)
    for index in range(4):  # every tile got a label in its top-left corner, nothing else
        top, left = (index // 2) * 17, (index % 2) * 17
        assert changed[top : top + 8, left : left + 8].any()
        assert not changed[top + 14 : top + 16, left : left + 16].any()
    assert feature_grid(maps, labels=True).shape[0] >= 2 * 32  # labels imply readable tiles


def test_feature_grid_rejects_bad_input() -> None:
    with pytest.raises(InputError):
        feature_grid(np.zeros((3, 4)))
    with pytest.raises(InputError):
        feature_grid(np.zeros((3, 4, 4)), normalise="channel")  # type: ignore[arg-type]


# ---------------------------------------------------------------- to_display


def test_minmax_display_is_joint_over_channels_and_flips_bgr() -> None:
    projection = RNG.normal(size=(3, 4, 5))
    low, high = projection.min(), projection.max()
    expected = np.round((projection - low) / (high - low) * 255).astype(np.uint8)
    np.testing.assert_array_equal(to_display(projection), expected.transpose(1, 2, 0))
    bgr = to_display(torch.from_numpy(projection), channel_order="BGR")
    np.testing.assert_array_equal(bgr, expected[::-1].transpose(1, 2, 0))


def test_signed_display_puts_zero_at_grey_and_keeps_sign() -> None:
    projection = np.array([[[-2.0, -1.0, 0.0, 1.0]]])  # (1, 1, 4)
    shown = to_display(projection, mode="signed")
    np.testing.assert_array_equal(shown[0, :, 0], [1, 64, 128, 192])  # 128 + 127 * x / 2
    assert shown.shape == (1, 4, 3) and (shown[..., 0] == shown[..., 2]).all()
    np.testing.assert_array_equal(to_display(np.zeros((3, 2, 2)), mode="signed"), 128)
    np.testing.assert_array_equal(to_display(np.ones((3, 2, 2))), 0)


def test_shared_scale_keeps_relative_strength() -> None:
    strong = RNG.normal(size=(3, 6, 6))
    weak = strong / 4
    for mode in ("minmax", "signed"):
        scale = shared_range([strong, weak], mode)
        own = to_display(weak, mode)
        common = to_display(weak, mode, scale=scale)
        assert np.ptp(common.astype(int)) < np.ptp(own.astype(int)) / 2
    signed = shared_range([strong, weak], "signed")
    assert signed.high == -signed.low == np.abs(strong).max()
    x = np.array([[[-3.0, 3.0]]])
    np.testing.assert_array_equal(
        to_display(x, "minmax", scale=DisplayRange(-1.0, 1.0))[0, :, 0], [0, 255]
    )  # clipped beyond the shared range
    with pytest.raises(InputError):
        DisplayRange(1.0, 0.0)
    with pytest.raises(InputError):
        to_display(np.zeros((2, 3, 3)))


# ---------------------------------------------------------------- crop_box


def test_crop_box_clips_and_copies() -> None:
    image = RNG.integers(0, 255, size=(10, 12, 3), dtype=np.uint8)
    crop = crop_box(image, (-3, 8, 4, 20))
    np.testing.assert_array_equal(crop, image[0:4, 8:12])
    crop[...] = 0
    assert image[0:4, 8:12].any()  # a copy, not a view
    projection = torch.randn(3, 10, 12)
    torch.testing.assert_close(
        crop_box(projection, (2, 3, 5, 7), channels_first=True), projection[:, 2:5, 3:7]
    )
    with pytest.raises(InputError, match="outside"):
        crop_box(image, (10, 0, 15, 5))


# ---------------------------------------------------------------- contact_sheet


def _find(sheet: np.ndarray, tile: np.ndarray) -> list[tuple[int, int]]:
    height, width = tile.shape[:2]
    hits = []
    for y, x in np.argwhere(np.all(sheet == tile[0, 0], axis=2)):
        if np.array_equal(sheet[y : y + height, x : x + width], tile):
            hits.append((int(y), int(x)))
    return hits


def test_contact_sheet_places_upscaled_tiles_and_labels() -> None:
    tiles = [RNG.integers(0, 256, size=(13, 13, 3), dtype=np.uint8) for _ in range(5)]
    labels = [f"conv5 ch {i}\nvalue {i * 1.5:.2f} @ (3, {i})" for i in range(5)]
    sheet = contact_sheet(tiles, labels)
    assert sheet.dtype == np.uint8 and sheet.ndim == 3
    positions = []
    for tile in tiles:
        up = tile.repeat(10, axis=0).repeat(10, axis=1)  # ceil(128 / 13) = 10
        hits = _find(sheet, up)
        assert len(hits) == 1
        positions.append(hits[0])
    assert len({y for y, _ in positions}) == 2 and len({x for _, x in positions}) == 3  # 3 cols
    for y, x in positions:  # dark text right under each tile
        assert (sheet[y + 130 : y + 170, x : x + 130] < 100).any()
    two_columns = contact_sheet(tiles, labels, columns=2)
    assert (
        len({y for y, _ in (_find(two_columns, t.repeat(10, 0).repeat(10, 1))[0] for t in tiles)})
        == 3
    )


def test_contact_sheet_grey_tiles_and_errors() -> None:
    grey = RNG.integers(0, 256, size=(200, 150), dtype=np.uint8)
    sheet = contact_sheet([grey], ["x"])
    assert len(_find(sheet, np.repeat(grey[:, :, None], 3, axis=2))) == 1  # not upscaled
    with pytest.raises(InputError, match="one label per tile"):
        contact_sheet([grey], ["a", "b"])
    with pytest.raises(InputError):
        contact_sheet([grey.astype(np.float32)], ["a"])


def test_shared_range_clip_percent_ignores_outliers() -> None:
    from deconvnet.figures.render import shared_range

    values = np.concatenate([np.linspace(-1.0, 1.0, 1000), [100.0, -100.0]])
    assert shared_range([values.reshape(1, 1, -1)], "minmax").high == 100.0
    clipped = shared_range([values.reshape(1, 1, -1)], "minmax", clip_percent=0.5)
    assert clipped.high == pytest.approx(np.percentile(values, 99.5))
    assert clipped.high < 1.0 and clipped.low > -1.0
    signed = shared_range([values.reshape(1, 1, -1)], "signed", clip_percent=0.5)
    assert signed.high == pytest.approx(np.percentile(np.abs(values), 99.5))
    with pytest.raises(InputError):
        shared_range([values], "minmax", clip_percent=50)
