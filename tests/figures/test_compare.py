"""The rule comparison (issue 23, item 5): rows = seeds, columns = rules, one display, each
row cut to its own seed's receptive field, the rule explained once per column.

Oracle for the boxes: the layer's receptive field from the engine's tracer, at each seed's
position (``ReceptiveField.box``), and the patch drawn there: the input framed to that box
and scaled to the tile, found pixel for pixel in the figure."""

from __future__ import annotations

import numpy as np
import torch

from deconvnet.engine.receptive import receptive_fields
from deconvnet.engine.selection import TopMaps
from deconvnet.figures.compare import TILE, comparison_figure
from deconvnet.figures.render import frame, scaled
from deconvnet.figures.style import OUTSIDE_IMAGE
from deconvnet.instruments.compare import compare_rules
from tests import _nets
from tests._pictures import places


def test_rows_are_seeds_each_cut_to_its_own_receptive_field() -> None:
    model = _nets.small_conv()
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    rgb = np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    result = compare_rules(model, x, "3", TopMaps(3))
    field = receptive_fields(model, (1, 3, 12, 12))["3"]
    assert result.positions is not None
    boxes = [field.box(*(int(p) for p in result.positions[k])) for k in range(3)]
    assert list(result.boxes) == boxes and len(set(boxes)) > 1  # not one union for all
    sheet = comparison_figure(result, rgb)
    for box in boxes:
        patch = scaled(frame(rgb, box, OUTSIDE_IMAGE), TILE)
        assert places(sheet, patch)
    one = comparison_figure(compare_rules(model, x, "3", TopMaps(1)), rgb)
    two = comparison_figure(compare_rules(model, x, "3", TopMaps(2)), rgb)
    row = two.shape[0] - one.shape[0]
    assert TILE < row < 1.5 * TILE  # one display per seed: one row of tiles, not three
    assert sheet.shape[0] == one.shape[0] + 2 * row
    assert sheet.shape[1] == one.shape[1] < 5 * (TILE + 40)  # input + three rules
