"""The faithfulness card, the layer summary and the optimised images drawn, and their JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from deconvnet import models
from deconvnet.figures.dream import dream_figure, dream_record
from deconvnet.figures.faithfulness import (
    card_figure,
    card_record,
    layers_figure,
    sanity_line,
    summary_record,
)
from deconvnet.figures.files import write_json
from deconvnet.instruments.dream import DreamSettings, dream
from deconvnet.instruments.faithfulness import (
    FaithfulnessCard,
    FaithfulnessSettings,
    UnitImage,
    faithfulness_card,
    summarise,
)
from deconvnet.instruments.unit_sanity import SanityStep, UnitSanity

SMALL = FaithfulnessSettings(steps=4, random_seeds=2)


@pytest.fixture(scope="module")
def default_model() -> nn.Module:
    return models.load("default")


@pytest.fixture(scope="module")
def cards(default_model: nn.Module) -> list[FaithfulnessCard]:
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(21))
    return [
        faithfulness_card(
            default_model, layer, channel, [UnitImage(x, name="noise")], settings=SMALL
        )
        for layer, channel in (("conv1", 2), ("conv1", 3), ("conv2", 4))
    ]


def test_card_figure_and_record(cards: list[FaithfulnessCard], tmp_path: Path) -> None:
    card = cards[2]
    sanity = UnitSanity(
        "features.4",
        4,
        (1, 1),
        0,
        {
            "gradient": (
                SanityStep(0, None, 1.0, 1.0, "ok"),
                SanityStep(1, "features.4", 0.4, 0.3, "ok"),
                SanityStep(2, "features.0", None, None, "unit inactive"),
            )
        },
        cached=False,
        key="0" * 64,
    )
    picture = card_figure(card, display_name="conv2", sanity=sanity)
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    assert picture.shape[1] > 900 and picture.shape[0] > 300
    assert (picture < 250).mean() > 0.02  # curves and text were drawn
    line = sanity_line(sanity)
    assert "gradient: spearman 0.40, ssim 0.30 (1 of 2 layers; then unit inactive)" in line
    record = card_record(card, display_name="conv2")
    path = write_json(record, tmp_path / "card.json")  # finite numbers only
    read = json.loads(path.read_text())
    assert read["auc"]["deletion/mean"]["gradient"] == pytest.approx(
        card.auc["deletion/mean"]["gradient"]
    )
    assert len(read["images"][0]["curves"]["insertion/blur"]["random"]) == SMALL.steps + 1
    assert np.asarray(read["images"][0]["random_curves"]["deletion/blur"]).shape == (2, 5)


def test_a_unit_that_never_fires_is_drawn_with_a_note(default_model: nn.Module) -> None:
    x = torch.zeros(1, 3, 32, 32)
    with torch.no_grad():
        maps = default_model.features[:5](x)[0]  # conv2, before its ReLU
    lowest = int(maps.flatten().argmin())
    channel, rest = divmod(lowest, maps.shape[1] * maps.shape[2])
    position = divmod(rest, maps.shape[2])
    assert float(maps[channel][position]) < 0
    dead = faithfulness_card(
        default_model, "conv2", channel, [UnitImage(x, position=position)], settings=SMALL
    )
    assert not dead.active_images
    picture = card_figure(dead)
    assert picture.shape[2] == 3
    assert card_record(dead)["auc"]["deletion/mean"]["gradient"] is None


def test_layers_figure_and_summary_record(cards: list[FaithfulnessCard], tmp_path: Path) -> None:
    summary = summarise(cards)
    picture = layers_figure(summary, display_names={"features.0": "conv1", "features.4": "conv2"})
    assert picture.dtype == np.uint8 and picture.shape[1] >= 990
    record = summary_record(summary)
    write_json(record, tmp_path / "layers.json")
    assert [r["layer"] for r in record] == ["features.0", "features.4"]
    assert record[0]["units"] == sum(bool(c.active_images) for c in cards[:2])


def test_dream_figure_and_record(default_model: nn.Module, tmp_path: Path) -> None:
    results = dream(
        default_model,
        "conv2",
        [0, 1],
        settings=DreamSettings(steps=2),
        dataset_top1={0: -100.0, 1: 100.0},
    )
    picture = dream_figure(results, display_name="conv2")
    assert picture.dtype == np.uint8 and picture.shape[1] >= 2 * 192
    assert ((picture[..., 0] > 150) & (picture[..., 1] < 60)).any()  # the red flag of map 1
    record = dream_record(results[1], image_file="dream/conv2_map1.png")
    write_json(record, tmp_path / "dream.json")
    assert record["beats_dataset"] is False and len(record["trajectory"]) == 2
    with pytest.raises(ValueError):
        dream_figure([])
