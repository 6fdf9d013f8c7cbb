"""Feature visualisation by optimisation: the input it builds, determinism, the cache, and a
model left exactly as it was."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from deconvnet import models
from deconvnet.engine.capture import forward_until
from deconvnet.errors import InputError, SelectionError
from deconvnet.inputs.images import normalise, preprocess
from deconvnet.inputs.preprocessing import PRESETS, Preprocessing
from deconvnet.instruments.cache import ResultCache
from deconvnet.instruments.dream import CACHE_KIND, DreamSettings, dream
from deconvnet.instruments.work import WorkLimitError
from tests import _nets

FEW = DreamSettings(steps=12)


@pytest.fixture(scope="module")
def default_model() -> nn.Module:
    return models.load("default")


@pytest.mark.parametrize(
    "spec",
    [
        models.load("default").preprocessing,
        PRESETS["caffe-imagenet"],
        PRESETS["caffe-lenet"],
        Preprocessing(
            input_size=(6, 5),
            channel_order="BGR",
            scale=255.0,
            mean=(1.0, 2.0, 3.0),
            std=(2.0, 3.0, 4.0),
            mean_image=np.random.default_rng(0).uniform(0, 255, (3, 8, 7)).astype(np.float32),
        ),
    ],
    ids=["cifar", "caffe-imagenet", "grey", "mean-image"],
)
def test_normalise_is_preprocess_after_resizing(spec: Preprocessing) -> None:
    size = spec.input_size
    pixels = np.random.default_rng(1).integers(0, 256, (*size, 3), dtype=np.uint8)
    exact = Preprocessing(**{**spec.__dict__, "resize_rule": "none"})
    want = preprocess(pixels, exact, min_side=1)
    rgb = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
    torch.testing.assert_close(normalise(rgb, spec), want, rtol=1e-5, atol=1e-4)


def test_the_objective_rises_and_the_image_beats_its_start(default_model: nn.Module) -> None:
    (result,) = dream(default_model, "conv2", [3], settings=FEW)
    assert result.image.shape == (32, 32, 3) and result.image.dtype == np.uint8
    assert len(result.trajectory) == FEW.steps
    assert result.trajectory[-1] > result.trajectory[0]
    assert result.position == (8, 8) and result.box is not None
    x = normalise(
        torch.from_numpy(result.image).permute(2, 0, 1)[None].float() / 255,
        default_model.preprocessing,
    )
    module = default_model.get_submodule("features.4")
    with torch.no_grad():
        maps = forward_until(default_model, x, {"features.4": module})["features.4"][0, 3]
    assert result.centre == pytest.approx(float(maps[8, 8]), rel=1e-5)
    assert result.activation == result.centre
    assert result.peak == pytest.approx(float(maps.max()), rel=1e-5)
    assert result.mean == pytest.approx(float(maps.mean()), rel=1e-5)


def test_the_channel_objective_is_the_maps_mean(default_model: nn.Module) -> None:
    (result,) = dream(
        default_model, "conv3", [1], settings=DreamSettings(steps=6, objective="channel")
    )
    assert result.activation == result.mean and result.compared == result.peak


def test_a_seeded_run_is_repeated_bit_for_bit(default_model: nn.Module) -> None:
    first = dream(default_model, "conv2", [0, 5], settings=FEW, batch_size=2)
    again = dream(default_model, "conv2", [0, 5], settings=FEW, batch_size=2)
    for a, b in zip(first, again, strict=True):
        assert a.trajectory == b.trajectory
        assert np.array_equal(a.image, b.image)
    other = dream(default_model, "conv2", [0], settings=DreamSettings(steps=12, seed=1))
    assert other[0].trajectory != first[0].trajectory


def test_a_units_draws_do_not_depend_on_its_batch(default_model: nn.Module) -> None:
    """Each unit has its own generator: alone or beside another, the same path (up to the
    float rounding of a batched convolution)."""
    alone = dream(default_model, "conv2", [5], settings=DreamSettings(steps=4))[0]
    together = dream(default_model, "conv2", [0, 5], settings=DreamSettings(steps=4), batch_size=2)[
        1
    ]
    np.testing.assert_allclose(alone.trajectory, together.trajectory, rtol=1e-4)


def test_the_dataset_top1_is_compared(default_model: nn.Module) -> None:
    low, high = dream(default_model, "conv2", [0, 1], settings=FEW, dataset_top1={0: -1e9, 1: 1e9})
    assert low.beats_dataset is True and high.beats_dataset is False
    (none,) = dream(default_model, "conv2", [2], settings=FEW)
    assert none.beats_dataset is None


def test_results_are_cached_by_model_unit_and_settings(
    default_model: nn.Module, tmp_path: Path
) -> None:
    cache = ResultCache(tmp_path)
    (made,) = dream(default_model, "conv2", [4], settings=FEW, cache=cache)
    calls: list[tuple[int, int | None]] = []
    (read,) = dream(
        default_model,
        "conv2",
        [4],
        settings=FEW,
        cache=cache,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert not made.cached and read.cached and calls == [(0, 0)]
    assert np.array_equal(made.image, read.image)
    assert (read.activation, read.trajectory, read.key) == (
        made.activation,
        made.trajectory,
        made.key,
    )
    (changed,) = dream(
        default_model, "conv2", [4], settings=DreamSettings(steps=12, seed=3), cache=cache
    )
    assert not changed.cached and changed.key != made.key
    other = models.load("default")
    with torch.no_grad():
        other.features[0].bias.add_(1.0)
    assert not dream(other, "conv2", [4], settings=FEW, cache=cache)[0].cached
    entry = tmp_path / CACHE_KIND / f"{made.key}.json"
    document = json.loads(entry.read_text())
    entry.write_text(json.dumps({**document, "activation": "high"}))  # tampered: not used
    (again,) = dream(default_model, "conv2", [4], settings=FEW, cache=cache)
    assert not again.cached and again.activation == made.activation
    (tmp_path / CACHE_KIND / f"{made.key}.png").write_bytes(b"not a png")
    assert not dream(default_model, "conv2", [4], settings=FEW, cache=cache)[0].cached


def test_the_model_is_left_exactly_as_it_was() -> None:
    model = _nets.caffenet(width=16)
    model.preprocessing = Preprocessing(input_size=(67, 67))  # type: ignore[assignment]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    dream(model, "4", [0, 1], settings=DreamSettings(steps=3))

    class Stop(Exception):
        pass

    def fail(done: int, total: int | None) -> None:
        if done > 0:
            raise Stop

    with pytest.raises(Stop):
        dream(model, "4", [2], settings=DreamSettings(steps=3), progress=fail)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert not any(m.training for m in model.modules())
    assert all(
        not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
        for m in model.modules()
    )


def test_train_mode_and_bad_requests_are_refused(default_model: nn.Module) -> None:
    with pytest.raises(SelectionError):
        dream(default_model, "conv2", [96], settings=FEW)
    with pytest.raises(WorkLimitError):
        dream(default_model, "conv2", [0, 1], settings=FEW, max_work=FEW.steps)
    for bad in (
        {"objective": "pixel"},
        {"steps": 0},
        {"learning_rate": 0.0},
        {"size": (4, 4)},
        {"jitter": -1},
    ):
        with pytest.raises(InputError):
            DreamSettings(**bad)  # type: ignore[arg-type]
    model = _nets.vgg_bn()
    model.train()
    with pytest.raises(InputError, match="train mode"), pytest.warns(UserWarning):
        dream(model, "features.0", [0], settings=FEW, preprocessing=PRESETS["unit"])


def test_a_unit_dead_on_the_grey_start_moves_with_the_redirected_gradient() -> None:
    """A ReLU unit that is zero on every image near grey: the plain gradient is zero, so
    the image never changes; the redirected ReLU gradient lets it start."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(inplace=True)).eval()
    with torch.no_grad():
        model[0].weight.fill_(0.1)
        model[0].bias.fill_(-2.0)  # needs a bright patch to fire
    model.preprocessing = Preprocessing(input_size=(16, 16))  # type: ignore[assignment]
    plain = DreamSettings(steps=30, redirect_relu=False)
    (stuck,) = dream(model, "1", [0], settings=plain)
    assert set(stuck.trajectory) == {0.0} and stuck.activation == 0.0
    (moved,) = dream(model, "1", [0], settings=DreamSettings(steps=30))
    assert moved.activation > 0 and max(moved.trajectory) > 0


def test_the_redirected_relu_passes_only_where_nothing_else_does() -> None:
    from deconvnet.instruments.dream import RedirectedReLU

    x = torch.tensor([[-1.0, 2.0, -3.0], [-1.0, -2.0, -3.0]])
    signal = torch.tensor([[0.5, -0.5, -0.5], [0.5, -0.5, -0.25]])
    rule = RedirectedReLU()
    got = rule.backward(signal, *rule.saved(x, rule.forward(x)))
    # image 0: its own gradient gets through at x = 2, so it is the plain gradient;
    # image 1: none gets through, so the signal passes except where it pushes lower (0.5 > 0)
    assert got.tolist() == [[0.0, -0.5, 0.0], [0.0, -0.5, -0.25]]


def test_the_jitter_is_scaled_to_what_the_unit_sees() -> None:
    from deconvnet.engine.receptive import ReceptiveField
    from deconvnet.instruments.dream import _jitter

    def field(side: int) -> ReceptiveField:
        return ReceptiveField((side, side), (4, 4), (5.0, 5.0))

    assert _jitter(field(19), (227, 227)) == 1  # SqueezeNet fire2
    assert _jitter(field(155), (227, 227)) == 4
    assert _jitter(field(400), (227, 227)) == 6  # the field covers the image
    assert _jitter(None, (32, 32)) == 1
    (result,) = dream(
        models.load("default"), "conv2", [0], settings=DreamSettings(steps=2, jitter=3)
    )
    assert result.jitter == 3
