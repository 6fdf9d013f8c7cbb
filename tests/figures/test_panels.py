"""Figure pieces: the colour map's ends and its no-data cells."""

from __future__ import annotations

import numpy as np

from deconvnet.figures import panels
from deconvnet.figures.style import NO_DATA


def test_colormap_ends_and_missing_cells():
    values = np.array([[0.0, 1.0], [np.nan, 0.5]])
    rgb = panels.colormap(values)
    assert tuple(rgb[0, 0]) == tuple(panels.VIRIDIS_ANCHORS[0].astype(np.uint8))
    assert tuple(rgb[0, 1]) == tuple(panels.VIRIDIS_ANCHORS[-1].astype(np.uint8))
    assert tuple(rgb[1, 0]) == NO_DATA
