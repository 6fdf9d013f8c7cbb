"""Fig. 7's panels and legend on a model whose answer is built in."""

from __future__ import annotations

import numpy as np
import torch

from deconvnet.figures.occlusion import figure, figure_panels, legend_entries
from deconvnet.instruments.occlusion import Occluder, occlude
from tests import _nets


def test_legend_and_label_panel_on_a_constructed_model():
    x = torch.ones(1, 1, 32, 32)
    result = occlude(_nets.quadrant_classifier(), x, "0", Occluder(size=8, stride=8, fill=0.0))
    names = ["top-left", "top-right", "bottom-left", "bottom-right"]
    entries = legend_entries(result, names)
    assert sorted(text for _, text in entries) == sorted(f"{n} (25%)" for n in names)
    colours = dict((text.split(" (")[0], colour) for colour, text in entries)
    assert len(set(colours.values())) == 4
    panels = figure_panels(result, np.full((32, 32, 3), 255, np.uint8), names)
    assert set(panels) == {"input", "activation", "projection", "probability", "label", "legend"}
    sheet = figure(result, np.full((32, 32, 3), 255, np.uint8), names)
    assert sheet.dtype == np.uint8 and sheet.ndim == 3 and sheet.shape[2] == 3
    # The label panel shows each quadrant in its legend colour (panel is titled: find them).
    label_panel = panels["label"].reshape(-1, 3)
    for colour in colours.values():
        assert (label_panel == colour).all(axis=1).any()


def test_panels_name_the_layer_by_alias_and_the_footer_gives_the_fill_in_pixels() -> None:
    """Issue 23, items 6 and 7. Oracle: drawing with an alias table must give exactly the
    picture of a result whose layer is literally called by the alias; the footer differs
    from the one in input units."""
    import dataclasses

    x = torch.ones(1, 1, 32, 32)
    result = occlude(_nets.quadrant_classifier(), x, "0", Occluder(size=8, stride=8, fill=0.0))
    image = np.full((32, 32, 3), 255, np.uint8)
    aliased = figure_panels(result, image, aliases={"quadrants": "0"})["activation"]
    renamed = figure_panels(dataclasses.replace(result, layer="quadrants"), image)["activation"]
    plain = figure_panels(result, image)["activation"]
    np.testing.assert_array_equal(aliased, renamed)
    assert not np.array_equal(aliased, plain)
    labelled = figure(result, image, fill_label="the mean pixel, RGB 124, 116, 104")
    assert not np.array_equal(labelled, figure(result, image))


def test_the_fill_back_in_pixels() -> None:
    from deconvnet import models
    from deconvnet.instruments.occlusion import fill_pixels, mean_fill
    from deconvnet.models._meta import CIFAR10_MEAN

    default = models.load("default").preprocessing
    np.testing.assert_allclose(
        fill_pixels(mean_fill(default), default), [255 * m for m in CIFAR10_MEAN], rtol=1e-12
    )
    caffe = models.load("squeezenet1_0", "deep-compression").preprocessing  # BGR 104, 117, 123
    np.testing.assert_allclose(fill_pixels(mean_fill(caffe), caffe), [123.0, 117.0, 104.0])
