"""The rule comparison sheet: one row per view and seed."""

from __future__ import annotations

import numpy as np
import torch

from deconvnet.engine.selection import TopMaps
from deconvnet.figures.compare import comparison_figure
from deconvnet.instruments.compare import compare_rules
from tests import _nets


def test_figure_has_two_rows_per_seed():
    model = _nets.small_conv()
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    result = compare_rules(model, x, "3", TopMaps(2))
    rgb = np.full((12, 12, 3), 128, np.uint8)
    sheet = comparison_figure(result, rgb)
    single = comparison_figure(compare_rules(model, x, "3", TopMaps(1)), rgb)
    assert sheet.dtype == np.uint8 and sheet.shape[1] == single.shape[1]
    assert sheet.shape[0] > 1.8 * single.shape[0]
