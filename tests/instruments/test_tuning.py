"""Tuning curves against literal oracles: the filters' own Fourier peaks (real weights of
the default model and ImageNet SqueezeNet), the colour a uniform field's linear response
prefers, and the definitions of the stimuli and of the selectivity index."""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest
import torch

from deconvnet import models
from deconvnet.instruments import tuning as T

ORACLE_GRID = 64
"""The filters' DFT is taken zero-padded to this size (the sampled 2-D Fourier transform)."""
AGREE_DEGREES = 22.5
AGREE_FRACTION = 0.8


@cache
def _model(name: str) -> torch.nn.Module:
    weights = {"squeezenet1_0": "deep-compression"}.get(name)
    return models.load(name, weights=weights).eval() if weights else models.load(name).eval()


@cache
def _conv1_tuning(name: str) -> T.LayerTuning:
    return T.tuning(_model(name), "conv1")


def fourier_orientation(weight: np.ndarray) -> float:
    """The issue's oracle, literally: the angle of the peak of the filter's 2-D Fourier
    magnitude summed over input channels (frequencies below one cycle per filter width,
    which have no angle to speak of, left out), in the tuning's convention: degrees
    counter-clockwise from image-right, y up, in [0, 180)."""
    _, height, width = weight.shape
    magnitude = np.abs(np.fft.fft2(weight, s=(ORACLE_GRID, ORACLE_GRID))).sum(axis=0)
    ky = np.fft.fftfreq(ORACLE_GRID)[:, None]
    kx = np.fft.fftfreq(ORACLE_GRID)[None, :]
    magnitude = np.where(np.hypot(ky, kx) >= 1.0 / max(height, width), magnitude, 0.0)
    row, col = np.unravel_index(np.argmax(magnitude), magnitude.shape)
    return math.degrees(math.atan2(-ky[row, 0], kx[0, col])) % 180.0


def angle_gap(a: float, b: float) -> float:
    gap = abs(a - b) % 180.0
    return min(gap, 180.0 - gap)


def filter_agreement(name: str) -> tuple[int, int]:
    """(maps with OSI >= 0.3 whose preferred orientation is within 22.5 degrees of their
    filter's Fourier orientation, maps with OSI >= 0.3)."""
    model = _model(name)
    found = _conv1_tuning(name)
    weight = dict(model.named_modules())["features.0"].weight.detach().numpy()
    if found.channels.numel() != weight.shape[0]:
        raise AssertionError("every map is measured")
    oriented = [int(c) for c in found.channels[found.osi >= T.OSI_MIN]]
    preferred = found.preferred_orientation
    agree = sum(
        angle_gap(float(preferred[c]), fourier_orientation(weight[c])) <= AGREE_DEGREES
        for c in oriented
    )
    return agree, len(oriented)


@pytest.mark.parametrize("name", ["default", "squeezenet1_0"])
def test_preferred_orientation_is_the_filters_fourier_orientation(name: str) -> None:
    agree, oriented = filter_agreement(name)
    # measured: default 24 of 25 (96 %), SqueezeNet 66 of 71 (93 %)
    assert oriented >= 10, f"only {oriented} oriented maps"
    assert agree / oriented >= AGREE_FRACTION, f"{agree} of {oriented} agree"


def uniform_field_oracle(name: str, channel: int) -> int:
    """The colour field a map's filter prefers by linear algebra: a uniform field ``v``
    (RGB in [0, 1]) gives ``Σ_c (Σ_xy w_c) (v_c scale − mean_c) / std_c + b`` at every
    position away from the border; the index of the stimulus colour maximising it."""
    model = _model(name)
    spec = model.deconvnet_card.preprocessing
    weight = dict(model.named_modules())["features.0"].weight.detach().double()
    gain = weight[channel].sum(dim=(1, 2)) / torch.tensor(spec.std, dtype=torch.float64)
    if spec.channel_order == "BGR":
        gain = gain.flip(0)  # to RGB
    shown = T.stimuli(spec.input_size)
    colours = torch.tensor(
        [shown.colour(i) for i in range(len(shown.colours))], dtype=torch.float64
    )
    return int((colours / 255.0 * spec.scale @ gain).argmax())


def colour_blobs(name: str, count: int) -> list[int]:
    """The ``count`` conv1 maps whose filters are most nearly a colour blob: the largest
    share of the filter's energy at zero frequency (its per-channel sums)."""
    weight = dict(_model(name).named_modules())["features.0"].weight.detach().double()
    dc = weight.sum(dim=(2, 3)).pow(2).sum(dim=1) / weight[0, 0].numel()
    energy = weight.pow(2).sum(dim=(1, 2, 3))
    return [int(c) for c in torch.argsort(dc / energy, descending=True)[:count]]


@pytest.mark.parametrize("name", ["default", "squeezenet1_0"])
def test_colour_blob_filters_prefer_their_colour(name: str) -> None:
    found = _conv1_tuning(name)
    shown = found.stimuli
    for channel in colour_blobs(name, 4):
        expected = shown.colours[uniform_field_oracle(name, channel)]
        got = found.unit(channel).preferred_colour_hsv
        hue_gap = abs(expected[0] - got[0]) % 360
        assert min(hue_gap, 360 - hue_gap) <= 360 / T.HUES, (channel, expected, got)
        assert found.unit(channel).osi < T.OSI_MIN  # a blob is not oriented


@pytest.mark.parametrize(("orientation", "period"), [(0, 0), (3, 1), (9, 2), (13, 3)])
def test_a_grating_has_its_stated_orientation_and_period(orientation: int, period: int) -> None:
    shown = T.stimuli((64, 64), 32)
    image = shown.grating(orientation, period, 1)[:, :, 0].astype(np.float64)
    grid = 1024
    spectrum = np.abs(np.fft.fft2(image - image.mean(), s=(grid, grid)))
    ky, kx = np.unravel_index(np.argmax(spectrum), spectrum.shape)
    fy, fx = np.fft.fftfreq(grid)[ky], np.fft.fftfreq(grid)[kx]
    angle = math.degrees(math.atan2(-fy, fx)) % 180.0
    # a finite grating's peak sits within about one cycle per image of the true frequency
    assert angle_gap(angle, shown.orientations[orientation]) <= 3.0
    assert np.hypot(fy, fx) == pytest.approx(1 / shown.periods[period], abs=1.5 / 64)


def test_stimulus_set_is_the_issues() -> None:
    shown = T.stimuli((227, 227), 59)
    assert len(shown.orientations) == 16 and len(shown.periods) == 4 and len(shown.phases) == 4
    assert len(shown.colours) == T.HUES * 3 * 2
    assert shown.periods[0] == pytest.approx(2.5) and shown.periods[-1] == pytest.approx(59)
    assert T.stimuli((32, 32), 5).periods[-1] == pytest.approx(8.0)  # at least 8 px
    assert T.stimuli((32, 32), 300).periods[-1] == pytest.approx(32.0)  # at most the input


def test_selectivity_index_is_one_minus_circular_variance() -> None:
    angles = [180.0 * i / 16 for i in range(16)]
    flat = torch.ones(16, dtype=torch.float64)
    single = torch.zeros(16, dtype=torch.float64)
    single[5] = 3.0
    # r(θ) = 1 + cos 2θ: resultant Σ cos² 2θ = 8, total 16 -> 0.5
    cosine = torch.tensor([1 + math.cos(2 * math.radians(a)) for a in angles], dtype=torch.float64)
    found = T.selectivity(torch.stack([flat, single, cosine, -flat]), angles)
    assert found.tolist() == pytest.approx([0.0, 1.0, 0.5, 0.0], abs=1e-12)


def test_responses_are_the_maps_maxima_on_the_stimuli_and_the_model_is_untouched() -> None:
    model = _model("default")
    before = {key: value.clone() for key, value in model.state_dict().items()}
    found = T.tuning(model, "conv2", maps=[3, 7], batch_size=50)
    spec = model.deconvnet_card.preprocessing
    image = found.stimuli.grating(5, 2, 3)
    x = (
        torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
        - torch.tensor(spec.mean)[:, None, None]
    ) / torch.tensor(spec.std)[:, None, None]
    with torch.no_grad():
        maps = model.features[:5](x[None])
    assert found.gratings[:, 5, 2, 3].tolist() == pytest.approx(
        maps[0, [3, 7]].amax(dim=(1, 2)).double().tolist(), abs=1e-5
    )
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    assert model.features[0]._forward_hooks == {} and not model.training
    unit = found.unit(7)
    assert unit.best_response == pytest.approx(float(found.gratings[1].max()))
    assert np.array_equal(unit.grating_image(), found.stimuli.grating(*unit.best_grating))


def test_bad_requests_are_one_clear_error() -> None:
    from deconvnet.errors import InputError, SelectionError

    model = _model("default")
    with pytest.raises(SelectionError, match=r"maps must be in 0\.\.47"):
        T.tuning(model, "conv1", maps=[48])
    with pytest.raises(ValueError, match="batch_size"):
        T.tuning(model, "conv1", batch_size=0)
    bare = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    with pytest.raises(InputError, match="preprocessing"):
        T.tuning(bare, "0")
    found = T.tuning(model, "conv1", maps=[2])
    with pytest.raises(SelectionError, match="not measured"):
        found.unit(3)
