"""A unit's card and optimised image written as a page section: PNG + JSON, names inside
the folder, the JSON holding the instrument's numbers and naming its pictures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deconvnet import models
from deconvnet.figures.faithfulness import card_record
from deconvnet.figures.unit_sections import unit_stem, write_card_section, write_dream_section
from deconvnet.instruments.dream import DreamSettings, dream
from deconvnet.instruments.faithfulness import FaithfulnessSettings, UnitImage, faithfulness_card
from deconvnet.instruments.unit_sanity import unit_sanity


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_card_section_files_hold_the_card(tmp_path: Path) -> None:
    model = models.load("default")
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    card = faithfulness_card(
        model, "conv2", 4, [UnitImage(x, name="noise")], settings=FaithfulnessSettings(steps=4)
    )
    sanity = unit_sanity(model, x, "conv2", 4, card.images[0].position, rules=("gradient",))
    section = write_card_section(card, tmp_path, display_name="conv2", sanity=sanity)
    assert section.picture == tmp_path.resolve() / "conv2_map4_faithfulness.png"
    assert _png(section.picture).shape[1] > 600
    on_disk = json.loads(section.document.read_text())
    assert on_disk == json.loads(json.dumps(section.record))
    assert on_disk["figure"] == section.picture.name
    assert on_disk["gain"] == json.loads(json.dumps(card_record(card)["gain"]))
    assert on_disk["sanity"]["map"] == 4 and on_disk["sanity"]["cached"] is False
    assert set(on_disk["sanity"]["steps"]) == {"gradient"}


def test_dream_section_files_hold_the_image(tmp_path: Path) -> None:
    model = models.load("default")
    (result,) = dream(model, "conv2", [7], settings=DreamSettings(steps=3), dataset_top1={7: 1e9})
    section = write_dream_section(result, tmp_path, display_name="conv2")
    assert np.array_equal(_png(section.picture), result.image)
    record = json.loads(section.document.read_text())
    assert record["image_file"] == "conv2_map7_dream.png"
    assert (tmp_path / record["figure"]).is_file()
    assert record["beats_dataset"] is False and len(record["trajectory"]) == 3
    assert record["layer_alias"] == "conv2" and record["map"] == 7


@pytest.mark.parametrize(
    ("layer", "expected"), [("features.4", "features.4_map3"), ("a/../b", "a_.._b_map3")]
)
def test_stems_are_one_path_component(layer: str, expected: str) -> None:
    assert unit_stem(layer, 3) == expected
    assert "/" not in unit_stem("x" * 500, 3) and len(unit_stem("x" * 500, 3)) <= 96
