"""Correspondence (§4.3, Table 1) against a brute-force loop over image pairs, a model blind
to the masked region, and the seeded random control."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from deconvnet.errors import InputError
from deconvnet.inputs.images import resized_rgb
from deconvnet.inputs.preprocessing import IMAGENET_TORCHVISION, Preprocessing
from deconvnet.instruments.correspondence import (
    RANDOM,
    box_in_input,
    correspondence,
    mask_box,
)

SIZE = 4
PARTS = [
    {"left eye": (2, 3, 5, 6), "nose": (8, 6, 11, 10)},
    {"left eye": (3, 2, 6, 5), "nose": (9, 7, 12, 11)},
    {"left eye": (1, 4, 4, 7), "nose": (7, 5, 10, 9)},
    {"left eye": (2, 2, 5, 5), "nose": (8, 8, 11, 12)},
]


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3), nn.ReLU()
    ).eval()


def _images(count: int = 4) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(1, 3, 14, 16, generator=generator) for _ in range(count)]


def _brute(model: nn.Sequential, images, boxes, stop: int) -> tuple[int, list[float]]:
    """Delta over ordered pairs and the per-pair fractions, by plain loops."""
    eps = []
    with torch.no_grad():
        for x, (top, left, bottom, right) in zip(images, boxes, strict=True):
            masked = x.clone()
            masked[:, :, top:bottom, left:right] = 0.0
            eps.append((model[: stop + 1](x) - model[: stop + 1](masked)).flatten().numpy())
    delta = 0
    for i in range(len(eps)):
        for j in range(len(eps)):
            if i != j:
                delta += sum(np.sign(a) != np.sign(b) for a, b in zip(eps[i], eps[j], strict=True))
    fractions = [
        float(np.mean(np.sign(eps[i]) != np.sign(eps[j])))
        for i, j in itertools.combinations(range(len(eps)), 2)
    ]
    return delta, fractions


def test_scores_equal_a_brute_force_loop_over_pairs() -> None:
    model, images = _net(), _images()
    result = correspondence(model, images, PARTS, ["1", "4"], size=SIZE, trials=3, seed=5)
    assert result.parts == ("left eye", "nose", RANDOM)
    for part in ("left eye", "nose"):
        boxes = [mask_box(p[part], SIZE, 14, 16) for p in PARTS]
        assert [m[part] for m in result.masks] == boxes
        for layer, stop in (("1", 1), ("4", 4)):
            delta, fractions = _brute(model, images, boxes, stop)
            score = result.scores[(part, layer)]
            assert score.delta == delta
            assert score.fractions == pytest.approx(fractions, abs=1e-12)
            assert score.mean == pytest.approx(np.mean(fractions), abs=1e-12)
            assert score.std == pytest.approx(np.std(fractions), abs=1e-12)
    for layer, stop in (("1", 1), ("4", 4)):
        trials = [_brute(model, images, list(t), stop) for t in result.random_masks]
        score = result.scores[(RANDOM, layer)]
        assert score.delta == pytest.approx(np.mean([d for d, _ in trials]))
        pooled = [f for _, fs in trials for f in fs]
        assert score.mean == pytest.approx(np.mean(pooled), abs=1e-12)
        assert score.std == pytest.approx(np.std(pooled), abs=1e-12)


class _LeftHalf(nn.Module):
    """Features of the left half of the image only: masks on the right change nothing."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x[..., : x.shape[-1] // 2]))


def test_a_model_blind_to_the_masked_region_scores_zero() -> None:
    right = [{"ear": (3, 10, 6, 14), "object": (0, 8, 14, 16)} for _ in range(3)]
    result = correspondence(_LeftHalf().eval(), _images(3), right, ["conv"], size=SIZE, trials=4)
    for part in ("ear", RANDOM):
        score = result.scores[(part, "conv")]
        assert (score.delta, score.mean, score.std) == (0.0, 0.0, 0.0)
    assert all(box[1] >= 8 for trial in result.random_masks for box in trial)


def test_the_random_control_is_seeded_and_reproducible() -> None:
    model, images = _net(), _images()
    first = correspondence(model, images, PARTS, ["4"], size=SIZE, trials=5, seed=3)
    again = correspondence(model, images, PARTS, ["4"], size=SIZE, trials=5, seed=3)
    other = correspondence(model, images, PARTS, ["4"], size=SIZE, trials=5, seed=4)
    assert first.random_masks == again.random_masks
    assert first.scores[(RANDOM, "4")] == again.scores[(RANDOM, "4")]
    assert first.random_masks != other.random_masks
    for trial in first.random_masks:
        for top, left, bottom, right in trial:
            assert (bottom - top, right - left) == (SIZE, SIZE)
            assert top >= 0 and bottom <= 14 and left >= 0 and right <= 16


def test_mask_boxes_stay_inside_and_boxes_follow_the_resize() -> None:
    assert mask_box((0, 0, 2, 2), 4, 14, 16) == (0, 0, 4, 4)
    assert mask_box((12, 14, 14, 16), 4, 14, 16) == (10, 12, 14, 16)
    photo = np.zeros((300, 400, 3), dtype=np.uint8)
    photo[90:150, 200:260] = 255
    box = (90, 200, 150, 260)
    for spec in (
        IMAGENET_TORCHVISION,
        Preprocessing(input_size=(227, 227), resize_rule="exact"),
        Preprocessing(input_size=(32, 32), resize_rule="none"),
    ):
        shown = resized_rgb(photo, spec)
        rows, cols = np.nonzero(shown[..., 0] > 127)
        found = (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)
        mapped = box_in_input(box, (300, 400), spec)
        assert np.abs(np.subtract(found, mapped)).max() <= 1, (spec.resize_rule, found, mapped)


def test_bad_inputs_are_refused() -> None:
    model, images = _net(), _images(2)
    with pytest.raises(InputError, match="at least 2"):
        correspondence(model, images[:1], PARTS[:1], ["1"])
    with pytest.raises(InputError, match="names parts"):
        correspondence(model, images, [PARTS[0], {"nose": (1, 1, 2, 2)}], ["1"])
    with pytest.raises(InputError, match="share one size"):
        correspondence(model, [images[0], torch.zeros(1, 3, 10, 10)], PARTS[:2], ["1"])
    with pytest.raises(InputError, match="larger than"):
        correspondence(model, images, PARTS[:2], ["1"], size=15)
