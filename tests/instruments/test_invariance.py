"""Invariance (Fig. 5): transforms against literal NumPy samplers, distances against NumPy,
and a model built to be exactly invariant to circular shifts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from deconvnet.errors import InputError
from deconvnet.instruments.invariance import (
    default_amounts,
    invariance,
    normalised_distance,
    transform_images,
)

ATOL = 1e-5
"""float32 bilinear blends against float64 NumPy."""


def _image(height: int = 7, width: int = 9, channels: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, channels, height, width, generator=torch.Generator().manual_seed(seed))


def _numpy_sample(x: np.ndarray, source, fill: float) -> np.ndarray:
    """Literal loop: every output pixel blends the four input pixels around its source
    position ``source(i, j) -> (y, x)``; pixels outside the input read ``fill``."""
    channels, height, width = x.shape
    out = np.zeros_like(x, dtype=np.float64)

    def pixel(c: int, r: int, q: int) -> float:
        return float(x[c, r, q]) if 0 <= r < height and 0 <= q < width else fill

    for i in range(height):
        for j in range(width):
            y, xx = source(i, j)
            y0, x0 = math.floor(y), math.floor(xx)
            wy, wx = y - y0, xx - x0
            for c in range(channels):
                out[c, i, j] = (
                    pixel(c, y0, x0) * (1 - wy) * (1 - wx)
                    + pixel(c, y0, x0 + 1) * (1 - wy) * wx
                    + pixel(c, y0 + 1, x0) * wy * (1 - wx)
                    + pixel(c, y0 + 1, x0 + 1) * wy * wx
                )
    return out


@pytest.mark.parametrize(
    ("transform", "amount"), [("translate", 0), ("scale", 1), ("rotate", 0), ("rotate", 360)]
)
def test_identity_amounts_return_the_input_exactly(transform: str, amount: float) -> None:
    x = _image()
    assert torch.equal(transform_images(x, transform, amount, fill=3.0), x)


def test_translation_moves_content_down_and_fills_or_wraps() -> None:
    x = _image()
    down = transform_images(x, "translate", 2, fill=-4.0)
    assert torch.equal(down[..., 2:, :], x[..., :-2, :])
    assert bool((down[..., :2, :] == -4.0).all())
    assert torch.equal(
        transform_images(x, "translate", -3, canvas="wrap"), torch.roll(x, -3, dims=2)
    )


def test_rotation_by_90_degrees_is_counter_clockwise() -> None:
    x = _image(9, 9)
    turned = transform_images(x, "rotate", 90)
    assert torch.allclose(turned, torch.rot90(x, 1, dims=(2, 3)), atol=ATOL)


@pytest.mark.parametrize(
    ("transform", "amount"), [("scale", 1.3), ("scale", 0.6), ("rotate", 30), ("translate", 1.5)]
)
def test_transforms_equal_a_literal_numpy_sampler(transform: str, amount: float) -> None:
    x = _image()
    height, width = x.shape[-2:]
    cy, cx = (height - 1) / 2, (width - 1) / 2
    theta = math.radians(amount)

    def source(i: int, j: int) -> tuple[float, float]:
        if transform == "translate":
            return i - amount, float(j)
        if transform == "scale":
            return cy + (i - cy) / amount, cx + (j - cx) / amount
        # the inverse of a counter-clockwise turn on screen (y down)
        dy, dx = i - cy, j - cx
        return cy + math.cos(theta) * dy + math.sin(theta) * dx, cx - math.sin(
            theta
        ) * dy + math.cos(theta) * dx

    expected = _numpy_sample(x[0].double().numpy(), source, fill=0.5)
    got = transform_images(x, transform, amount, fill=0.5)[0].double().numpy()
    np.testing.assert_allclose(got, expected, atol=ATOL)


class _GlobalMax(nn.Module):
    """Circular convolution, ReLU, global max pooling, linear: every circular shift of the
    input gives exactly the same pooled features."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 6, 3, padding=1, padding_mode="circular")
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


def test_global_max_pooling_is_invariant_to_circular_shifts() -> None:
    model = _GlobalMax().eval()
    images = [_image(seed=1), _image(seed=2)]
    result = invariance(model, images, "translate", [-3, 0, 2, 5], ["relu", "pool"], canvas="wrap")
    assert result.distance["pool"].abs().max() < 1e-6
    assert result.distance["relu"][:, [0, 2, 3]].min() > 0.1  # the maps themselves move
    assert bool((result.distance["relu"][:, 1] == 0).all())
    with torch.no_grad():
        base = torch.softmax(torch.cat([model(x) for x in images]), dim=1)
    expected = base[torch.arange(2), base.argmax(dim=1)]
    assert torch.allclose(result.probability, expected[:, None].expand(2, 4), atol=1e-6)
    assert not any(m._forward_hooks for m in model.modules())


def test_rotation_by_zero_gives_distance_zero_and_distances_equal_numpy() -> None:
    model = _GlobalMax().eval()
    images = [_image(seed=3), _image(seed=4)]
    amounts = [0.0, 20.0, 45.0]
    result = invariance(
        model, images, "rotate", amounts, [model.conv, model.pool], labels=[1, None]
    )
    assert result.layers == ("conv", "pool")
    assert bool((result.distance["conv"][:, 0] == 0).all())
    assert bool((result.distance["pool"][:, 0] == 0).all())
    for n, x in enumerate(images):
        with torch.no_grad():
            original = model.conv(x).flatten().double().numpy()
            probs = torch.softmax(model(x), dim=1)[0]
        target = 1 if n == 0 else int(probs.argmax())
        assert result.targets[n] == target
        for k, amount in enumerate(amounts):
            moved = transform_images(x, "rotate", amount)
            with torch.no_grad():
                feature = model.conv(moved).flatten().double().numpy()
                p = float(torch.softmax(model(moved), dim=1)[0, target])
            unit = np.linalg.norm(
                feature / np.linalg.norm(feature) - original / np.linalg.norm(original)
            )
            assert float(result.distance["conv"][n, k]) == pytest.approx(unit, abs=1e-5)
            raw = np.linalg.norm(feature - original)
            assert float(result.raw_distance["conv"][n, k]) == pytest.approx(raw, rel=1e-5)
            assert float(result.probability[n, k]) == pytest.approx(p, abs=1e-6)
    assert result.feature_sizes == {"conv": 6 * 7 * 9, "pool": 6}


def test_normalised_distance_bounds_and_zero_vectors() -> None:
    f = torch.tensor([[3.0, 4.0]])
    assert torch.allclose(normalised_distance(f, torch.tensor([[6.0, 8.0]])), torch.tensor([0.0]))
    assert torch.allclose(normalised_distance(f, torch.tensor([[-3.0, -4.0]])), torch.tensor([2.0]))
    assert torch.allclose(
        normalised_distance(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])),
        torch.tensor([math.sqrt(2)]),
    )
    assert torch.allclose(normalised_distance(f, torch.zeros(1, 2)), torch.tensor([1.0]))


def test_default_amounts_and_bad_options() -> None:
    assert default_amounts("translate")[0] == -60 and default_amounts("translate", 112)[0] == -30
    assert default_amounts("rotate")[-1] == 360
    x = _image()
    with pytest.raises(InputError, match="transform must be"):
        transform_images(x, "shear", 1)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="> 0 for scale"):
        transform_images(x, "scale", 0)
    with pytest.raises(InputError, match="canvas"):
        transform_images(x, "rotate", 3, canvas="mirror")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="labels"):
        invariance(_GlobalMax(), [x], "rotate", [0], ["conv"], labels=[1, 2])
