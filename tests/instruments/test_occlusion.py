"""Occlusion maps against a literal one-position-at-a-time loop, Captum, and built models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deconvnet.engine.engine import Deconvnet
from deconvnet.engine.selection import MapMax
from deconvnet.errors import InputError, UnsupportedLayerError
from deconvnet.inputs.preprocessing import Preprocessing
from deconvnet.instruments.occlusion.occlusion import Occluder, grey_fill, mean_fill, occlude
from tests import _nets

RTOL = 1e-5
"""Float32 sums in another order (crops vs whole images): relative to the largest value."""


def _small_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 5),
    ).eval()


class _Head(nn.Module):
    """A feature stack plus global pooling and a linear classifier."""

    def __init__(self, features: nn.Module, channels: int) -> None:
        super().__init__()
        self.features = features
        self.fc = nn.Linear(channels, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def _oracle(model, x, layer_module, channel, size, stride, fill):
    """Literal loop: one occluded image per forward pass, the full network each time."""
    rows = range(0, x.shape[2] - size + 1, stride)
    cols = range(0, x.shape[3] - size + 1, stride)
    seen = []
    handle = layer_module.register_forward_hook(lambda m, i, o: seen.append(o.clone()))
    probs, totals = [], []
    try:
        with torch.no_grad():
            for top in rows:
                for left in cols:
                    occluded = x.clone()
                    value = torch.tensor(fill).reshape(-1, 1, 1)
                    occluded[0, :, top : top + size, left : left + size] = value
                    probs.append(torch.softmax(model(occluded).flatten(1), 1)[0])
                    totals.append(seen[-1][0, channel].sum())
    finally:
        handle.remove()
    shape = (len(rows), len(cols))
    return torch.stack(probs).reshape(*shape, -1), torch.stack(totals).reshape(shape)


def _check_against_oracle(model, x, layer, occluder, method="auto"):
    result = occlude(model, x, layer, occluder, method=method)
    fill = occluder.fill if occluder.fill is not None else 0.0
    probs, totals = _oracle(
        model, x, model.get_submodule(layer), result.channel, occluder.size, occluder.stride, fill
    )
    scale = float(totals.abs().max())
    assert torch.allclose(result.activation, totals, rtol=0, atol=RTOL * scale)
    target = probs[..., result.target]
    assert torch.allclose(result.probability, target, rtol=0, atol=RTOL)
    assert torch.equal(result.top_class, probs.argmax(-1))
    return result


def test_spliced_equals_the_literal_loop():
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    result = _check_against_oracle(_small_net(), x, "6", Occluder(size=12, stride=4))
    assert result.method == "spliced" and result.splice_layer is not None


def test_naive_equals_the_literal_loop_with_a_fill_per_channel():
    x = torch.randn(1, 3, 40, 36, generator=torch.Generator().manual_seed(2))
    occluder = Occluder(size=9, stride=5, fill=(0.5, -1.0, 2.0), batch_size=7)
    result = _check_against_oracle(_small_net(1), x, "3", occluder, method="naive")
    assert result.method == "naive"


@pytest.mark.parametrize("build", [_nets.squeeze_like, _nets.resnet_like])
def test_branches_and_skips_still_equal_the_loop(build):
    """Fire concatenations and residual additions: no cut inside them may be spliced."""
    features = build()
    channels = 16 if build is _nets.squeeze_like else 8
    model = _Head(features, channels).eval()
    x = torch.randn(1, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    layer = "features.4" if build is _nets.squeeze_like else "features.3"
    _check_against_oracle(model, x, layer, Occluder(size=10, stride=6))


class _LeftHalf(nn.Module):
    """Looks only at the left 16 columns of its input."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _small_net(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x[..., :16])


def test_occluding_what_the_model_ignores_changes_nothing():
    model = _LeftHalf().eval()
    x = torch.randn(1, 3, 32, 40, generator=torch.Generator().manual_seed(4))
    result = occlude(model, x, "net.3", Occluder(size=6, stride=2))
    right = result.cols >= 16
    assert right.any()
    # Batched and single-image float32 sums may differ in the last bits: 1e-6.
    assert torch.allclose(
        result.probability[:, right],
        torch.full_like(result.probability[:, right], result.baseline_probability),
        rtol=0,
        atol=1e-6,
    )
    assert torch.allclose(
        result.activation[:, right],
        torch.full_like(result.activation[:, right], result.baseline_activation),
        rtol=1e-6,
        atol=0,
    )
    _check_against_oracle(model, x, "net.3", Occluder(size=6, stride=2))
    assert not torch.allclose(
        result.probability[:, ~right],
        torch.full_like(result.probability[:, ~right], result.baseline_probability),
    )


def test_label_map_on_a_constructed_model():
    x = torch.ones(1, 1, 32, 32)
    result = occlude(_nets.quadrant_classifier(), x, "0", Occluder(size=8, stride=8, fill=0.0))
    expected = torch.tensor([[2 * (r // 2) + c // 2 for c in range(4)] for r in range(4)])
    assert torch.equal(result.top_class, expected)


def test_probability_map_matches_captum_occlusion():
    captum = pytest.importorskip("captum.attr")
    model = _small_net(3)
    x = torch.randn(1, 3, 30, 30, generator=torch.Generator().manual_seed(5))
    occluder = Occluder(size=9, stride=3, batch_size=16)  # 21 = 7 strides: no partial window
    result = occlude(model, x, "3", occluder)
    with torch.no_grad():
        attribution = captum.Occlusion(lambda b: torch.softmax(model(b), 1)).attribute(
            x,
            sliding_window_shapes=(3, 9, 9),
            strides=(3, 3, 3),
            baselines=0.0,
            target=result.target,
            perturbations_per_eval=16,
        )[0, 0]
    total = torch.zeros(30, 30, dtype=torch.float64)
    count = torch.zeros(30, 30, dtype=torch.float64)
    for i, top in enumerate(result.rows.tolist()):
        for j, left in enumerate(result.cols.tolist()):
            total[top : top + 9, left : left + 9] += result.baseline_probability - float(
                result.probability[i, j]
            )
            count[top : top + 9, left : left + 9] += 1
    rebuilt = torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))
    assert torch.allclose(attribution.double(), rebuilt, atol=1e-6)


@pytest.mark.parametrize(
    "options",
    [
        {"size": 0},
        {"stride": -2},
        {"batch_size": 0},
        {"size": 2.5},
        {"fill": float("nan")},
        {"size": True},
    ],
)
def test_bad_occluders_are_refused_at_construction(options):
    with pytest.raises(InputError):
        Occluder(**options)


def test_bad_calls():
    model = _small_net()
    with pytest.raises(InputError, match="larger than"):
        occlude(model, torch.zeros(1, 3, 16, 16), "3", Occluder(size=20))
    with pytest.raises(InputError, match="one float image"):
        occlude(model, torch.zeros(2, 3, 16, 16), "3", Occluder(size=4))
    with pytest.raises(InputError, match="out of range"):
        occlude(model, torch.zeros(1, 3, 16, 16), "3", Occluder(size=4), label=5)
    with pytest.raises(InputError, match="method"):
        occlude(model, torch.zeros(1, 3, 16, 16), "3", Occluder(size=4), method="fast")


def test_defaults_scale_with_the_input():
    assert (Occluder.for_input(224, 300).size, Occluder.for_input(224, 300).stride) == (48, 8)
    assert (Occluder.for_input(32, 32).size, Occluder.for_input(32, 32).stride) == (7, 1)


def test_fill_values_from_the_preprocessing_spec():
    mean_std = Preprocessing((32, 32), mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2))
    assert mean_fill(mean_std) == (0.0, 0.0, 0.0)
    caffe_like = Preprocessing((8, 8), scale=255.0)
    assert mean_fill(caffe_like) == pytest.approx((127.5, 127.5, 127.5))
    assert grey_fill(mean_std, 0.5) == pytest.approx((0.0, 0.5, 1.0))


def test_the_projection_panel_follows_the_activation_policy():
    """A SiLU net: panel (c) is refused under ``strict`` before any occluder position is
    evaluated, and under ``relu-like`` it equals the engine's own relu-like projection."""
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.SiLU(),
        nn.Conv2d(6, 6, 3, padding=1),
        nn.GELU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    ).eval()
    x = torch.randn(1, 3, 24, 24, generator=torch.Generator().manual_seed(4))
    occluder = Occluder(size=8, stride=8)
    calls: list[tuple[int, int]] = []
    with pytest.raises(UnsupportedLayerError, match="--activations relu-like"):
        occlude(model, x, "2", occluder, progress=lambda done, total: calls.append((done, total)))
    assert all(done == 0 for done, _ in calls)
    result = occlude(model, x, "2", occluder, activations="relu-like")
    assert result.activations == "relu-like"
    with Deconvnet(model, activations="relu-like") as net:
        expected = net.project(x, "2", MapMax(result.channel)).images[0, 0]
    assert torch.equal(result.projection, expected) and bool(expected.any())
