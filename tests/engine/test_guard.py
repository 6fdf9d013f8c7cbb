"""The model is never modified; reused modules need a call index; rule gradient is the gradient."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from torch import nn

import deconvnet as dn
from deconvnet import topk
from deconvnet.instruments.occlusion import occlude
from tests import _nets

GRADIENT_TOL = 1e-10
"""float64: the rule gradient and torch.autograd.grad differ only by summation order."""


def _state(model: nn.Module) -> dict[str, Any]:
    """Everything a call could change: state dict (buffers included), flags, hooks."""
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "hooks": [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for m in model.modules()
        ],
    }


def _assert_same(before: dict[str, Any], model: nn.Module) -> None:
    after = _state(model)
    assert before["state"].keys() == after["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), key
    assert before["training"] == after["training"]
    assert before["requires_grad"] == after["requires_grad"]
    assert before["hooks"] == after["hooks"]


@pytest.mark.parametrize("build", [_nets.torchvision_resnet, _nets.vgg_bn])
def test_train_mode_is_refused_and_leaves_the_model_alone(build: Any) -> None:
    model = build()
    model.conv1.weight.requires_grad_(False) if hasattr(model, "conv1") else None
    before = _state(model)
    assert any(k.endswith("num_batches_tracked") for k in before["state"])
    layer = "layer1.0.conv1" if hasattr(model, "layer1") else "features.3"
    x = torch.randn(2, 3, 32, 32)
    with dn.Deconvnet(model) as net:
        with (
            pytest.warns(UserWarning, match="train mode"),
            pytest.raises(dn.TrainingModeError, match=r"bn1|features\.1.*model\.eval\(\)"),
        ):
            net.project(x, layer=layer, select=dn.TopMaps(2))
        with pytest.warns(UserWarning), pytest.raises(dn.TrainingModeError):
            net.layer_output(x, layer)
    _assert_same(before, model)
    assert model.training


@pytest.mark.parametrize("build", [_nets.torchvision_resnet, _nets.vgg_bn])
def test_eval_models_untouched_after_success_and_failure(build: Any) -> None:
    model = build().eval()
    before = _state(model)
    reference = model(torch.ones(1, 3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    layer = "layer2.0.conv2" if hasattr(model, "layer1") else "features.10"
    with dn.Deconvnet(model) as net:
        net.project(x, layer=layer, select=dn.TopMaps(2))
        net.layer_output(x, layer)
        with pytest.raises(dn.SelectionError):
            net.project(x, layer=layer, select=dn.MapMax(999))
        with pytest.raises(dn.InputError):
            net.project(torch.randn(1, 5, 32, 32), layer=layer, select=dn.MapMax(0))
    _assert_same(before, model)
    assert torch.equal(model(torch.ones(1, 3, 32, 32)), reference)


class _CountingForward(nn.Module):
    """A forward that replaces a buffer, registers a hook and flips a mode, then fails.

    (An in-place ``self.calls += 1`` would be refused outright: the engine's one forward
    runs under ``torch.func.vjp``, which does not let a forward mutate captured tensors.)"""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls = self.calls + 1
        self.conv.register_forward_hook(lambda *args: None)
        self.conv.training = True
        if x.shape[-1] != 8:
            raise RuntimeError("this model takes 8×8 inputs only")
        return self.conv(x)


def test_buffers_flags_and_hooks_restored_after_a_failing_forward() -> None:
    model = _CountingForward().eval()
    before = _state(model)
    with pytest.raises(dn.InputError, match="forward pass failed"):
        dn.Deconvnet(model).project(torch.randn(1, 3, 9, 9), "conv", dn.TopMaps(1))
    dn.Deconvnet(model).project(torch.randn(1, 3, 8, 8), "conv", dn.TopMaps(1))
    _assert_same(before, model)


def test_in_place_forward_does_not_change_the_callers_tensor() -> None:
    model = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(3, 4, 3)).eval()
    x = torch.randn(1, 3, 8, 8)
    original = x.clone()
    net = dn.Deconvnet(model)
    net.project(x, "1", dn.TopMaps(2))
    net.layer_output(x, "1")
    occlude(model, x, "1")
    assert torch.equal(x, original)


def test_a_module_called_twice_is_an_error_listing_its_calls() -> None:
    model = _nets.torchvision_resnet().eval()
    x = torch.randn(1, 3, 32, 32)
    net = dn.Deconvnet(model)
    with pytest.raises(
        dn.InputError,
        match=r"'layer1\.0\.relu' is called 2 times .*#1 after layer1\.0\.bn1; "
        r"#2 after layer1\.0\.bn2.*layer1\.0\.relu#1 … layer1\.0\.relu#2",
    ):
        net.project(x, "layer1.0.relu", dn.TopMaps(1))
    with pytest.raises(dn.InputError, match="called 2 times"):
        net.layer_output(x, "layer1.0.relu")
    with pytest.raises(dn.LayerNotFoundError, match="no call #3"):
        net.layer_output(x, "layer1.0.relu#3")
    with pytest.raises(dn.LayerNotFoundError, match="call index"):
        occlude(model, x, "layer1.0.relu#2")


def test_call_sites_are_counted_once_per_image_shape_whatever_the_batch() -> None:
    """The top-k projection stage batches 1 to 8 images per call: the check for a module
    called twice costs one single-image forward pass per image shape, not one per batch
    size (it cost SqueezeNet's sparse projection stage about a third of its time)."""
    model = _nets.torchvision_resnet().eval()
    images: list[int] = []
    handle = model.register_forward_pre_hook(lambda m, inputs: images.append(len(inputs[0])))
    net = dn.Deconvnet(model)
    seen = []
    for batch in (3, 1, 2, 3, 5):
        images.clear()
        net.layer_output(torch.randn(batch, 3, 32, 32), "layer2")
        seen.append(list(images))
    handle.remove()
    assert seen == [[1, 3], [1], [2], [3], [5]]  # the count (one image) once, then none
    with pytest.raises(dn.InputError, match="called 2 times"):  # still checked, any batch
        net.layer_output(torch.randn(4, 3, 32, 32), "layer1.0.relu")


def test_call_index_selects_that_call() -> None:
    model = _nets.torchvision_resnet().double().eval()
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    seen: list[torch.Tensor] = []
    handle = model.layer1[0].relu.register_forward_hook(lambda m, i, o: seen.append(o.clone()))
    with torch.no_grad():
        model(x)
    handle.remove()
    net = dn.Deconvnet(model, rule="gradient")
    for call in (1, 2):
        output = net.layer_output(x, f"layer1.0.relu#{call}")
        assert torch.equal(output, seen[call - 1])
    projection = net.project(x, "layer1.0.relu#2", dn.MapMax(3))
    assert projection.layer == "layer1.0.relu#2"
    # oracle: the gradient of the chosen unit of the second call, by autograd
    inp = x.clone().requires_grad_(True)
    outputs: list[torch.Tensor] = []
    handle = model.layer1[0].relu.register_forward_hook(lambda m, i, o: outputs.append(o))
    model(inp)
    handle.remove()
    c, (h, w) = 3, projection.positions[0, 0].tolist()
    (grad,) = torch.autograd.grad(outputs[1][0, c, h, w], inp)
    scale = grad.abs().max()
    value = projection.values[0, 0]
    assert (projection.images[0, 0] - value * grad[0]).abs().max() <= GRADIENT_TOL * scale * value


def test_rule_gradient_is_the_plain_gradient_through_lrn() -> None:
    model = _nets.lrn_net().double()
    x = torch.randn(1, 3, 20, 20, dtype=torch.float64)
    net = dn.Deconvnet(model, rule="gradient")
    assert net.policy.lrn == "gradient"
    projection = net.project(x, "4", dn.MapMax(2))
    inp = x.clone().requires_grad_(True)
    out = model(inp)
    h, w = projection.positions[0, 0].tolist()
    (grad,) = torch.autograd.grad(out[0, 2, h, w], inp)
    expected = grad[0] * out[0, 2, h, w].detach()
    error = (projection.images[0, 0] - expected).abs().max() / expected.abs().max()
    assert error <= GRADIENT_TOL
    # the other rules keep the paper's default
    assert dn.Deconvnet(model).policy.lrn == "skip"


def test_aliases_are_accepted_and_listed() -> None:
    model = _nets.vgg_like()
    model.layer_aliases = {"conv2": "3"}  # type: ignore[assignment]
    x = torch.randn(1, 3, 32, 32)
    net = dn.Deconvnet(model)
    by_alias = net.project(x, "conv2", dn.TopMaps(2))
    by_name = net.project(x, "3", dn.TopMaps(2))
    assert by_alias.layer == "3" and by_alias.layer_alias == "conv2"
    assert torch.equal(by_alias.images, by_name.images)
    assert torch.equal(net.layer_output(x, "conv2"), net.layer_output(x, "3"))
    with pytest.raises(dn.LayerNotFoundError, match="did you mean conv2"):
        net.project(x, "conv9", dn.TopMaps(2))


def test_topk_and_occlude_take_aliases(tmp_path: Any) -> None:
    from PIL import Image

    model = _nets.small_classifier() if hasattr(_nets, "small_classifier") else None
    assert model is not None
    model.layer_aliases = {"first": "0"}  # type: ignore[assignment]
    for i in range(3):
        Image.new("RGB", (16, 16), (40 * i, 90, 200 - 30 * i)).save(tmp_path / f"{i}.png")
    data = dn.datasets.ImageFolder(tmp_path, dn.Preprocessing((16, 16)))
    index = topk.scan(model, data, ["first"], k=2)
    assert index.layers == ["0"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = occlude(model, torch.rand(1, 3, 16, 16), "first")
    assert result.layer == "0"
