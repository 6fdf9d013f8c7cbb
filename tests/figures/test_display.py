"""The display-exact check: two projections compared as the 8-bit pictures ``show`` draws.

Oracle: pictures built here level by level, and the check's numbers recomputed by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deconvnet.engine.precision import DISPLAY_HALF_RANGE, expected_display_exact
from deconvnet.errors import InputError
from deconvnet.figures.display import display_match, display_matches
from deconvnet.figures.render import show


def _projection(seed: int = 0, shape=(3, 20, 24)) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape)


def test_identical_projections_pass_with_infinite_psnr():
    values = _projection()
    match = display_match(values, values.copy())
    assert match.psnr == math.inf and match.within == match.identical == 1.0
    assert match.max_relative_error == 0.0 and match.passed


def test_the_psnr_is_that_of_the_8_bit_pictures():
    full = _projection(1)
    reduced = full * (1 + 1e-2 * np.random.default_rng(2).normal(size=full.shape))
    a, b = show(reduced).astype(float), show(full).astype(float)
    expected = 10 * math.log10(255**2 / np.mean((a - b) ** 2))
    match = display_match(reduced, full)
    assert match.psnr == pytest.approx(expected)
    peak = np.abs(full).max()
    assert match.max_relative_error == pytest.approx(np.abs(reduced - full).max() / peak)
    assert match.within == pytest.approx(np.mean(np.abs(a - b).max(axis=2) <= 2))


def test_two_percent_of_pixels_three_levels_off_fail():
    """High PSNR, but more than 1 % of pixels off by more than 2 levels: not display-exact."""
    full = np.full((3, 10, 10), 1e-4)  # non-zero everywhere: the box is the whole frame
    full[0, 0, 0] = 1.0  # the peak: 127 levels above grey
    reduced = full.copy()
    step = 1 / DISPLAY_HALF_RANGE
    reduced[1, 5, :2] = 3 * step  # 2 of 100 pixels, 3 levels off
    match = display_match(reduced, full)
    assert match.psnr > 40 and match.within == pytest.approx(0.98)
    assert not match.passed
    reduced[1, 5, 1] = 0.0  # 1 pixel of 100 off: passes
    assert display_match(reduced, full).passed


def test_noise_below_40_db_fails():
    full = _projection(3)
    noisy = full + 0.05 * np.abs(full).max() * np.random.default_rng(4).normal(size=full.shape)
    match = display_match(noisy, full)
    assert match.psnr < 40 and not match.passed


def test_the_grey_outside_the_units_field_does_not_count():
    """Compared on the box holding every non-zero value: a field in a large empty frame
    gets the same PSNR as the field alone."""
    full = np.zeros((3, 200, 200))
    reduced = np.zeros((3, 200, 200))
    field = _projection(5, (3, 20, 20))
    full[:, 50:70, 80:100] = field
    noise = np.random.default_rng(6).normal(size=field.shape)
    reduced[:, 50:70, 80:100] = field * (1 + 0.03 * noise)
    alone = display_match(reduced[:, 50:70, 80:100], full[:, 50:70, 80:100])
    assert display_match(reduced, full) == alone


def test_batches_compare_projection_by_projection():
    full = torch.randn(2, 3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    matches = display_matches(full.clone().to(torch.bfloat16).float(), full)
    assert len(matches) == 6 and all(m.passed for m in matches)


def test_shapes_must_agree():
    with pytest.raises(InputError, match="equal"):
        display_match(np.zeros((3, 4, 4)), np.zeros((3, 4, 5)))
    with pytest.raises(InputError, match="equal"):
        display_matches(torch.zeros(2, 3, 4, 4), torch.zeros(1, 3, 4, 4))
    with pytest.raises(InputError, match="equal"):
        display_matches(torch.zeros(4, 4), torch.zeros(4, 4))


def test_the_engine_s_display_is_this_one():
    """The engine predicts the check with the peak at 127 levels from grey: ``show``'s."""
    values = np.zeros((3, 2, 2))
    values[0, 0, 0] = -2.0
    values[1, 1, 1] = 2.0
    picture = show(values)
    assert picture[0, 0, 0] == 128 - DISPLAY_HALF_RANGE
    assert picture[1, 1, 1] == 128 + DISPLAY_HALF_RANGE


def test_the_prediction_agrees_with_the_check_on_gaussian_errors():
    """Relative errors whose RMS is just below and above the predicted limit."""
    generator = torch.Generator().manual_seed(7)
    full = torch.randn(1, 3, 40, 40, generator=generator)
    noise = torch.randn(1, 3, 40, 40, generator=generator)
    for relative, passes in ((1e-3, True), (5e-2, False)):
        reduced = full + relative * full.norm() / math.sqrt(full.numel()) * noise
        measured = display_match(reduced[0], full[0]).passed
        predicted = bool(expected_display_exact(reduced, torch.tensor([relative**2]))[0])
        assert measured is passes and predicted is passes
