"""Every entry point leaves the model as it found it: no hooks, same state, same mode.

Checked after a successful call and after a call that fails part-way.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import deconvnet as dn
from deconvnet import topk
from deconvnet.engine.receptive import receptive_fields
from deconvnet.inputs import datasets
from deconvnet.inputs.preprocessing import Preprocessing
from deconvnet.instruments import compare, sanity
from deconvnet.instruments.occlusion import occlusion
from tests import _nets


def classifier() -> nn.Module:
    """A small conv net with a classifier head, in eval mode, with a BatchNorm buffer."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )
    return model.eval()


def hooks_left(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def assert_untouched(model: nn.Module, before: dict[str, torch.Tensor], grads: list[bool]) -> None:
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[key], after[key]) for key in before)
    assert [p.requires_grad for p in model.parameters()] == grads
    assert all(p.grad is None for p in model.parameters())
    assert hooks_left(model) == 0
    assert not model.training


def _npz(tmp_path) -> datasets.ImageDataset:
    rng = np.random.default_rng(0)
    path = tmp_path / "data.npz"
    np.savez(path, x=rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8))
    return datasets.open_dataset(path, Preprocessing(input_size=(16, 16), resize_rule="none"))


CALLS = {
    "project": lambda m, x, d: dn.Deconvnet(m).project(x, "4", dn.TopMaps(2)),
    "project overwrite": lambda m, x, d: dn.Deconvnet(m, collisions="overwrite").project(
        x, "4", dn.WholeMap(1)
    ),
    "layer_output": lambda m, x, d: dn.Deconvnet(m).layer_output(x, "4"),
    "receptive_fields": lambda m, x, d: receptive_fields(m, tuple(x.shape)),
    "compare": lambda m, x, d: compare.compare_rules(m, x, "4", dn.TopMaps(1)),
    "occlude": lambda m, x, d: occlusion.occlude(m, x, "4", occlusion.Occluder(size=4, stride=4)),
    "sanity": lambda m, x, d: sanity.cascading_randomisation(m, x, "4", dn.TopMaps(1)),
    "topk": lambda m, x, d: topk.scan(m, d, ["4"], k=2),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_entry_point_leaves_no_trace(tmp_path, name):
    model = classifier()
    model[0].weight.requires_grad_(False)
    before = copy.deepcopy(model.state_dict())
    grads = [p.requires_grad for p in model.parameters()]
    x = torch.randn(1, 3, 16, 16)
    CALLS[name](model, x, _npz(tmp_path))
    assert_untouched(model, before, grads)


@pytest.mark.parametrize(
    "call",
    [
        lambda m, x: dn.Deconvnet(m).project(x, "4", dn.MapMax(99)),  # selection error
        lambda m, x: dn.Deconvnet(m).project(torch.randn(1, 5, 16, 16), "4", dn.MapMax(0)),
        lambda m, x: compare.compare_rules(m, x, "4", dn.MapMax(99)),
        lambda m, x: sanity.cascading_randomisation(m, x, "4", dn.MapMax(99)),
        lambda m, x: occlusion.occlude(m, torch.randn(1, 5, 16, 16), "4"),
    ],
    ids=["project", "project-input", "compare", "sanity", "occlude"],
)
def test_failures_leave_no_trace(call):
    model = classifier()
    before = copy.deepcopy(model.state_dict())
    grads = [p.requires_grad for p in model.parameters()]
    with pytest.raises(dn.DeconvnetError):
        call(model, torch.randn(1, 3, 16, 16))
    assert_untouched(model, before, grads)


def test_a_module_that_raises_mid_forward_leaves_no_hooks():
    class Boom(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), Boom(), nn.Conv2d(4, 4, 1)).eval()
    with pytest.raises(dn.InputError, match="boom"):
        dn.Deconvnet(model).project(torch.randn(1, 3, 8, 8), "3", dn.MapMax(0))
    assert hooks_left(model) == 0
    for _ in range(50):  # repeated use: nothing accumulates
        dn.Deconvnet(_nets.vgg_like()).project(torch.randn(1, 3, 32, 32), "9", dn.TopMaps(1))
