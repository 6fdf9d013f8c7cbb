"""The Fig. 4, Fig. 5 and Table 1 figures: layout, colours and the numbers they print."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deconvnet.figures import panels
from deconvnet.figures.correspondence import correspondence_figure, table_rows
from deconvnet.figures.evolution import DEFAULT_TILE, TILE_GAP, evolution_sheet
from deconvnet.figures.invariance import CHART_WIDTH, amount_label, invariance_figure
from deconvnet.figures.style import EMPTY_SLOT
from deconvnet.inputs.datasets import open_dataset
from deconvnet.inputs.preprocessing import Preprocessing
from deconvnet.instruments.correspondence import RANDOM, correspondence
from deconvnet.instruments.evolution import evolve
from deconvnet.instruments.invariance import invariance


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()


def test_evolution_sheet_has_a_column_per_checkpoint_and_marks_missing_cells(tmp_path: Path):
    path = tmp_path / "x.npz"
    np.savez(path, x=np.random.default_rng(0).integers(0, 256, (4, 12, 12, 3)).astype(np.uint8))
    data = open_dataset(path, Preprocessing(input_size=(12, 12), resize_rule="none"))
    model = _net()
    states = [model.state_dict()] * 3
    result = evolve(model, states, data, ["1"], maps=[0, 2])
    sheet = evolution_sheet(result, "1", tile=200, display_names={"1": "relu"})
    fewer = dataclasses.replace(result, labels=result.labels[:2])
    assert sheet.shape[1] - evolution_sheet(fewer, "1", tile=200).shape[1] == 200 + TILE_GAP
    sheet = evolution_sheet(result, "1")
    cells = {k: v for k, v in result.cells.items() if k != ("1", 2, 1)}
    holed = evolution_sheet(dataclasses.replace(result, cells=cells), "1")
    empty = [(picture == EMPTY_SLOT).all(axis=2).sum() for picture in (holed, sheet)]
    assert empty[0] - empty[1] >= DEFAULT_TILE * DEFAULT_TILE - 2 * DEFAULT_TILE


def test_invariance_figure_draws_one_chart_per_layer_plus_probability():
    model = _net()
    images = [torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(s)) for s in (0, 1)]
    result = invariance(model, images, "rotate", [0, 90, 180], ["0", "1"])
    previews = [np.zeros((12, 12, 3), np.uint8)] * 3
    picture = invariance_figure(result, ["a.png", "b.png"], previews)
    assert picture.dtype == np.uint8 and picture.shape[1] == 3 * CHART_WIDTH
    for colour in panels.LABEL_PALETTE[:2]:  # each image's line
        assert (np.abs(picture.astype(int) - colour).sum(axis=2) < 30).any()
    assert [amount_label(t, a) for t, a in (("translate", 20), ("scale", 1.3), ("rotate", 60))] == [
        "+20 px",
        "×1.3",
        "60°",
    ]


def test_correspondence_figure_paints_the_masks_and_prints_the_scores():
    model = _net()
    images = [torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(s)) for s in (0, 1)]
    parts = [{"eye": (2, 2, 6, 6)}, {"eye": (3, 3, 7, 7)}]
    result = correspondence(model, images, parts, ["1"], size=4, trials=2)
    rows = table_rows(result, {"1": "relu"})
    assert rows[0] == ["part", "relu: mean ± std (Δ)"]
    score = result.scores[("eye", "1")]
    assert rows[1] == ["eye", f"{score.mean:.4f} ± {score.std:.4f} ({score.delta:,.0f})"]
    assert rows[2][0] == "random (2 trials)" and result.parts[-1] == RANDOM
    rgb = [np.zeros((16, 16, 3), np.uint8)] * 2
    picture = correspondence_figure(result, rgb, ["a", "b"], fill_rgb=(10, 200, 30))
    # 4 masks, 40 px once upscaled: at least a 30 px core each keeps the exact fill colour
    assert (picture == (10, 200, 30)).all(axis=2).sum() >= 4 * 30 * 30
