"""Sanity metrics against hand computations and scikit-image; the model is never changed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from deconvnet.engine.selection import MapMax, Threshold
from deconvnet.errors import SelectionError
from deconvnet.instruments.sanity import (
    SSIM_K1,
    SSIM_K2,
    cascading_randomisation,
    saliency_map,
    spearman,
    ssim,
)
from tests import _nets


def test_spearman_of_permutations_equals_the_textbook_formula():
    rng = np.random.default_rng(0)
    a = rng.permutation(20).astype(float)
    b = rng.permutation(20).astype(float)
    n = a.size
    d = a - b  # both are their own ranks (0..19)
    assert spearman(a, b) == pytest.approx(1 - 6 * (d**2).sum() / (n * (n * n - 1)), abs=1e-12)
    assert spearman(a, a[::-1].copy() * 0 + (19 - a)) == pytest.approx(-1.0)
    assert spearman(a, np.exp(a)) == pytest.approx(1.0)  # monotone map: ranks unchanged


def test_spearman_with_ties_uses_average_ranks():
    a = np.array([1.0, 2.0, 2.0, 3.0])
    b = np.array([1.0, 2.0, 3.0, 4.0])
    ranks_a = np.array([0.0, 1.5, 1.5, 3.0])  # by hand
    expected = np.corrcoef(ranks_a, np.arange(4.0))[0, 1]
    assert spearman(a, b) == pytest.approx(expected, abs=1e-12)
    assert math.isnan(spearman(np.ones(5), np.arange(5.0)))


def test_ssim_of_identical_images_is_one():
    image = np.random.default_rng(1).random((24, 30))
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-12)


def test_ssim_of_constant_images_by_hand():
    """No variance: SSIM = (2ab + C1) / (a^2 + b^2 + C1) at every position."""
    a, b = 0.2, 0.7
    c1 = SSIM_K1**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert ssim(np.full((11, 11), a), np.full((11, 11), b)) == pytest.approx(expected, abs=1e-12)
    assert SSIM_K2 == 0.03


def test_ssim_equals_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(2)
    x = rng.random((32, 40))
    y = np.clip(x + 0.2 * rng.standard_normal(x.shape), 0, 1)
    want = metrics.structural_similarity(
        x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
    )
    assert ssim(x, y) == pytest.approx(want, abs=1e-10)


def test_saliency_map_is_abs_channel_sum_over_max():
    projection = torch.tensor([[[1.0, -2.0]], [[-3.0, 0.0]]])
    np.testing.assert_allclose(saliency_map(projection), [[1.0, 0.5]])


def _snapshot(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, bool]]:
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        {k: p.requires_grad for k, p in model.named_parameters()},
    )


def _same(model: nn.Module, snapshot) -> bool:
    state, grads = snapshot
    now = model.state_dict()
    return set(now) == set(state) and all(torch.equal(now[k], state[k]) for k in state) and {
        k: p.requires_grad for k, p in model.named_parameters()
    } == grads


def test_cascade_rows_and_untouched_model():
    model = _nets.small_classifier()
    model[0].bias.requires_grad_(False)
    before = _snapshot(model)
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    result = cascading_randomisation(model, x, "3", MapMax(2))
    assert _same(model, before)
    assert [row.randomised[-1] if row.randomised else None for row in result.rows] == [
        None, "6", "3", "0"
    ]
    # The fc layer lies above the projected layer: randomising it changes nothing.
    assert result.rows[1].spearman == pytest.approx(1.0)
    assert result.rows[1].ssim == pytest.approx(1.0)
    assert torch.equal(result.projections[1], result.projections[0])
    assert result.rows[2].ssim < 0.99
    assert result.projections.shape == (4, 1, 3, 16, 16)


def test_joint_selection_is_pinned_and_model_untouched_on_error():
    model = _nets.small_classifier()
    before = _snapshot(model)
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    result = cascading_randomisation(model, x, "4", Threshold(0.1))
    assert result.seeds == ("mask",)
    with pytest.raises(SelectionError):
        cascading_randomisation(model, x, "3", MapMax(99))
    assert _same(model, before)
