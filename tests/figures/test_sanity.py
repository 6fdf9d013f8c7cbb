"""The sanity-check figure: one titled panel per randomisation step."""

from __future__ import annotations

import numpy as np
import torch

from deconvnet.engine.selection import MapMax
from deconvnet.figures.sanity import sanity_figure
from deconvnet.instruments.sanity import cascading_randomisation
from tests import _nets


def test_figure_of_a_cascade_is_an_rgb_picture():
    model = _nets.small_classifier()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    result = cascading_randomisation(model, x, "3", MapMax(2))
    picture = sanity_figure(result)
    assert picture.dtype == np.uint8 and picture.shape[2] == 3
