"""Selections resolve to the right seeds; ``--select`` text parses to them."""

from __future__ import annotations

import pytest
import torch

import deconvnet as dn
from deconvnet.faces.cli._select import parse_select


def test_topmaps_seeds_are_one_hot_at_each_maps_first_maximum():
    y = torch.zeros(2, 3, 2, 2)
    y[0, 2, 1, 0] = 3.0
    y[0, 0, 0, 1] = y[0, 0, 1, 1] = 2.0  # tie inside a map: row-major first wins
    y[1, 1, 0, 0] = 5.0
    seeds = dn.TopMaps(2).resolve(y)
    assert seeds.channels.tolist() == [[2, 0], [1, 0]]
    assert seeds.positions[0].tolist() == [[1, 0], [0, 1]]
    seed = seeds.materialize(y, 0, 2)  # (K, B, C, H, W)
    assert seed.shape == (2, 2, 3, 2, 2)
    assert seed[0, 0].nonzero().tolist() == [[2, 1, 0]] and float(seed[0, 0, 2, 1, 0]) == 3.0
    assert seed[1, 0].nonzero().tolist() == [[0, 0, 1]]
    assert float(seed.sum()) == 3.0 + 2.0 + 5.0 + 0.0


def test_threshold_rescale_matches_the_demos_in_place_arithmetic():
    y = torch.tensor([[[[100.0, 150.0], [200.0, 250.0]]]])
    seeds = dn.Threshold(150, rescale=True).resolve(y)
    blob = torch.where(y >= 150, y, 0)
    blob -= blob.min()
    blob /= blob.max()
    assert torch.equal(seeds.joint[:, 0], blob)
    assert float(seeds.values[0, 0]) == 250.0


def test_empty_threshold_gives_a_zero_seed():
    seeds = dn.Threshold(1e9).resolve(torch.ones(1, 2, 3, 3))
    assert float(seeds.joint.abs().sum()) == 0.0 and float(seeds.values[0, 0]) == 0.0


def test_mask_shape_is_checked():
    with pytest.raises(dn.SelectionError, match="does not broadcast"):
        dn.Mask(torch.ones(5, 5, dtype=torch.bool)).resolve(torch.ones(1, 2, 3, 3))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("top:9", dn.TopMaps(9)),
        ("map:12", dn.MapMax(12)),
        ("neuron:12,3,4", dn.Neuron(12, 3, 4)),
        ("whole:12", dn.WholeMap(12)),
        ("threshold:150", dn.Threshold(150.0)),
        ("unit:5", dn.Unit(5)),
        ("topunits:5", dn.TopUnits(5)),
    ],
)
def test_parse_select(text, expected):
    assert parse_select(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "top",
        "top:",
        "top:x",
        "map:1,2",
        "neuron:3",
        "foo:1",
        "threshold:nan",
        "map:-1",
        "top:0",
    ],
)
def test_parse_select_rejects(text):
    with pytest.raises(dn.SelectionError):
        parse_select(text)
