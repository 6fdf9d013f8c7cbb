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
