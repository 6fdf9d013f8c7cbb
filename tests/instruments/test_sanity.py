"""Sanity metrics against hand computations and scikit-image; the model is never changed;
only the layers the projection depends on are randomised (checked by re-initialising each
layer alone); a unit killed by randomisation reads as inactive, never NaN."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from deconvnet.engine.engine import Deconvnet
from deconvnet.engine.selection import MapMax, Threshold, TopMaps
from deconvnet.errors import InputError, SelectionError
from deconvnet.instruments.sanity import (
    SSIM_K1,
    SSIM_K2,
    STATUS_INACTIVE,
    STATUS_OK,
    cascading_randomisation,
    saliency_map,
    spearman,
    split_layers,
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
    return (
        set(now) == set(state)
        and all(torch.equal(now[k], state[k]) for k in state)
        and {k: p.requires_grad for k, p in model.named_parameters()} == grads
    )


def test_cascade_randomises_only_the_layers_below_and_leaves_the_model():
    model = _nets.small_classifier()
    model[0].bias.requires_grad_(False)
    before = _snapshot(model)
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    result = cascading_randomisation(model, x, "3", MapMax(2))
    assert _same(model, before)
    # The fc layer "6" lies above the projected layer: it is skipped, not a 1.00 step.
    assert result.skipped == ("6",)
    assert [row.randomised for row in result.rows] == [(), ("3",), ("3", "0")]
    assert result.rows[1].status == STATUS_OK
    assert result.rows[1].ssim is not None and result.rows[1].ssim < 0.99
    for row in result.rows:
        assert (row.status == STATUS_INACTIVE) == (row.spearman is None)
    assert result.projections.shape == (3, 1, 3, 16, 16)


def test_joint_selection_is_pinned_and_model_untouched_on_error():
    model = _nets.small_classifier()
    before = _snapshot(model)
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    result = cascading_randomisation(model, x, "4", Threshold(0.1))
    assert result.seeds == ("mask",)
    with pytest.raises(SelectionError):
        cascading_randomisation(model, x, "3", MapMax(99))
    assert _same(model, before)


class Concat(nn.Module):
    def forward(self, *parts: torch.Tensor) -> torch.Tensor:
        return torch.cat(parts, 1)


class TwoBranches(nn.Module):
    """stem -> (left, right) -> cat -> head; ``left`` runs before ``right``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.left = nn.Conv2d(4, 3, 3, padding=1)
        self.right = nn.Conv2d(4, 3, 1)
        self.relu = nn.ReLU()
        self.cat = Concat()
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.relu(self.stem(x))
        return self.head(self.cat(self.relu(self.left(s)), self.relu(self.right(s))))


def _changes_projection(model: nn.Module, x: torch.Tensor, layer: str, module: str) -> bool:
    """Oracle: re-initialise ``module`` alone on a copy and look at the projection."""
    with Deconvnet(model) as net:
        before = net.project(x, layer, TopMaps(1)).images
    changed = copy.deepcopy(model)
    with torch.no_grad():
        for param in changed.get_submodule(module).parameters(recurse=False):
            param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(5)))
    with Deconvnet(changed) as net:
        after = net.project(x, layer, TopMaps(1)).images
    return not torch.equal(before, after)


@pytest.mark.parametrize(
    ("layer", "feeding"),
    [
        ("left", ("stem", "left")),
        ("right", ("stem", "right")),  # left ran first but does not feed it
        ("cat", ("stem", "left", "right")),
        ("head", ("stem", "left", "right", "head")),
    ],
)
def test_split_follows_the_graph_not_the_names(layer, feeding):
    torch.manual_seed(3)
    model = TwoBranches().eval()
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(4))
    split = split_layers(model, x, layer)
    assert split.feeding == feeding
    every = ("stem", "left", "right", "head")
    assert split.skipped == tuple(n for n in every if n not in feeding)
    for name in every:
        assert _changes_projection(model, x, layer, name) == (name in feeding), name


def test_split_of_a_fire_module_branch():
    model = _nets.squeeze_like()
    x = torch.randn(1, 3, 40, 40, generator=torch.Generator().manual_seed(6))
    split = split_layers(model, x, "3.expand1x1_activation")
    assert split.feeding == ("0", "3.squeeze", "3.expand1x1")
    assert split.skipped == ("3.expand3x3", "4.squeeze", "4.expand1x1", "4.expand3x3")
    whole = split_layers(model, x, "3")  # the fire module's concatenation
    assert whole.feeding == ("0", "3.squeeze", "3.expand1x1", "3.expand3x3")


def test_split_leaves_batchnorm_statistics_and_grads_alone():
    model = _nets.resnet_like().train()
    before = _snapshot(model)
    x = torch.randn(2, 3, 16, 16)
    rng_state = torch.get_rng_state()
    split = split_layers(model, x, "3.bn2")
    assert split.feeding == ("0", "3.conv1", "3.bn1", "3.conv2", "3.bn2")
    assert split.skipped == ("4.conv1", "4.bn1", "4.conv2", "4.bn2")
    assert _same(model, before) and model.training
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng_state)


def test_a_layer_fed_by_no_weights_is_refused():
    model = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(3, 2, 1)).eval()
    with pytest.raises(InputError, match="depends on no parameters"):
        cascading_randomisation(model, torch.randn(1, 3, 8, 8), "0", MapMax(0))


def _negative(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialisation that provably kills a ReLU unit: all weights and biases < 0."""
    with torch.no_grad():
        for param in module.parameters(recurse=False):
            param.copy_(-(torch.rand(param.shape, generator=generator) + 0.1))


def test_a_unit_killed_by_randomisation_is_inactive_not_nan():
    model = _nets.small_conv()
    x = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(7))  # >= 0 input
    result = cascading_randomisation(model, x, "4", TopMaps(2), reinitialise=_negative)
    first, *rest = result.rows
    assert first.status == STATUS_OK and first.spearman == 1.0
    for row in rest:  # conv "3" negative on relu'd inputs: every activation of "4" is 0
        assert row.status == STATUS_INACTIVE
        assert row.spearman is None and row.ssim is None and row.spearman_signed is None
        assert all(not s.active and s.spearman is None for s in row.scores)
        assert not torch.any(result.projections[row.step] != 0)


def test_partly_inactive_steps_average_the_units_that_fire():
    model = _nets.small_conv()
    x = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(8))
    kept = 0

    def kill_all_but_one(module: nn.Module, generator: torch.Generator) -> None:
        if isinstance(module, nn.Conv2d) and module.out_channels == 5:  # the projected conv
            with torch.no_grad():
                module.bias[:] = -1e6
                module.bias[kept_channel] = 1e6

    with Deconvnet(model) as net:
        seeds = net.project(x, "4", TopMaps(3))
    kept_channel = int(seeds.channels[0, kept])
    result = cascading_randomisation(model, x, "4", TopMaps(3), reinitialise=kill_all_but_one)
    row = result.rows[1]
    assert [s.active for s in row.scores] == [k == kept for k in range(3)]
    assert row.status == "2 of 3 units inactive"
    # the unit that fires is compared on its own: the mean over one seed is its score
    assert row.scores[kept].spearman is not None
    assert row.spearman == row.scores[kept].spearman
    reference = result.projections[0, kept]
    box = result.boxes[kept]
    assert box is not None
    crop = (slice(None), slice(box[0], box[2]), slice(box[1], box[3]))
    assert row.spearman == pytest.approx(
        spearman(saliency_map(reference[crop]), saliency_map(result.projections[1, kept][crop]))
    )


def test_boxes_are_the_receptive_fields_of_the_seeds():
    model = _nets.small_classifier()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    result = cascading_randomisation(model, x, "3", TopMaps(2))
    for k, seed in enumerate(result.seeds):
        y, x_ = (int(v) for v in seed.split(",")[1:])
        # by hand: conv3x3 p1, pool 2, conv3x3 p1 -> size 8, stride 2, first box at -3
        top, left = 2 * y - 3, 2 * x_ - 3
        assert result.boxes[k] == (max(top, 0), max(left, 0), min(top + 8, 16), min(left + 8, 16))


def _nudge(module: nn.Module, generator: torch.Generator) -> None:
    """A small change of every weight: the unit keeps firing, its projection moves."""
    with torch.no_grad():
        for param in module.parameters(recurse=False):
            param.add_(0.1 * torch.randn(param.shape, generator=generator))


@pytest.mark.parametrize(("channel", "unchanged_step"), [(1, 1), (4, 2)])
def test_a_step_that_cannot_reach_the_unit_is_marked_as_the_step_before(channel, unchanged_step):
    """Randomised in turn: right (channels 3-5 of the cat), left (0-2), stem."""
    torch.manual_seed(3)
    model = TwoBranches().eval()
    with torch.no_grad():  # every map of the cat fires somewhere
        model.left.bias.fill_(1.0)
        model.right.bias.fill_(1.0)
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(4))
    result = cascading_randomisation(model, x, "cat", MapMax(channel), reinitialise=_nudge)
    assert [row.randomised[-1] for row in result.rows[1:]] == ["right", "left", "stem"]
    assert all(row.status == STATUS_OK for row in result.rows)
    for row in result.rows:
        assert row.same_as_previous == (row.step == unchanged_step)
    same = result.rows[unchanged_step]
    assert torch.equal(result.projections[unchanged_step], result.projections[unchanged_step - 1])
    assert same.spearman == result.rows[unchanged_step - 1].spearman
