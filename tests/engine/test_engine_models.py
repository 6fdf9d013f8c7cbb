"""Engine on graphs and activation forms; Captum as the peer oracle; model left untouched."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import deconvnet as dn
from tests import _nets

TOL = 1e-5


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def captum_neuron(model, x, layer, neuron, method: str) -> torch.Tensor:
    from captum.attr import NeuronDeconvolution, NeuronGuidedBackprop

    cls = NeuronDeconvolution if method == "zeiler" else NeuronGuidedBackprop
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(model, layer).attribute(x.clone(), neuron_selector=neuron).detach()


@pytest.mark.parametrize("rule", ["zeiler", "guided"])
@pytest.mark.parametrize(
    ("build", "layer", "size"),
    [
        (_nets.vgg_like, "9", 32),  # VGG-style conv stack
        (_nets.vgg_like, "12", 32),  # fc layer
        (_nets.squeeze_like, "4", 64),  # fire modules: concat
        (_nets.resnet_like, "4", 32),  # basic blocks: add, BatchNorm, reused ReLU
    ],
)
def test_equals_captum_on_models_without_lrn(build, layer, size, rule):
    model = build().double()
    x = torch.randn(
        2, 3, size, size, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    with dn.Deconvnet(model, rule=rule) as net:
        fc = layer == "12"
        res = net.project(x, layer=layer, select=dn.TopUnits(3) if fc else dn.TopMaps(3))
    module = model.get_submodule(layer)
    for b in range(2):
        for k in range(3):
            channel = int(res.channels[b, k])
            neuron = (channel,) if fc else (channel, *(int(p) for p in res.positions[b, k]))
            # Captum seeds with 1; ours with the activation value: scale to compare.
            expected = captum_neuron(model, x[b : b + 1], module, neuron, rule)[0]
            assert expected.abs().max() > 0
            assert rel_error(res.images[b, k], expected * res.values[b, k]) <= TOL


@pytest.mark.parametrize(
    "form", ["functional", "torch", "method", "inplace_method", "functional_inplace"]
)
@pytest.mark.parametrize("rule", ["zeiler", "guided", "gradient"])
def test_relu_forms_give_the_same_result(form, rule):
    base = _nets.vgg_like()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with dn.Deconvnet(nn.Sequential(base), rule=rule) as net:
        expected = net.project(x, layer="0.9", select=dn.TopMaps(4))
    twin = _nets.FunctionalTwin(base, form)
    with dn.Deconvnet(twin, rule=rule) as net:
        got = net.project(x, layer="base.9", select=dn.TopMaps(4))
    assert torch.equal(got.channels, expected.channels)
    assert rel_error(got.images, expected.images) <= TOL


def test_reused_relu_module_gives_the_same_result():
    base = _nets.vgg_like()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with dn.Deconvnet(nn.Sequential(base)) as net:
        expected = net.project(x, layer="0.9", select=dn.TopMaps(4))
    with dn.Deconvnet(_nets.ReusedReLU(base)) as net:
        got = net.project(x, layer="base.9", select=dn.TopMaps(4))
    assert rel_error(got.images, expected.images) <= TOL


def test_functional_relu_is_not_silently_the_gradient():
    """Captum's trap: functional ReLUs must be rectified like modules, not left as gradients."""
    twin = _nets.FunctionalTwin(_nets.vgg_like(), "functional")
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with dn.Deconvnet(twin, rule="zeiler") as net:
        zeiler = net.project(x, layer="base.9", select=dn.TopMaps(1)).images
    with dn.Deconvnet(twin, rule="gradient") as net:
        gradient = net.project(x, layer="base.9", select=dn.TopMaps(1)).images
    assert gradient.abs().max() > 0
    assert rel_error(zeiler, gradient) > 0.1


def test_zeiler_rectifies_the_signal_not_the_forward_mask():
    """tf_cnnvis's "deconv" is the guided rule; ours must differ from it on real nets."""
    model = _nets.caffenet(width=8)
    x = torch.randn(1, 3, 227, 227, generator=torch.Generator().manual_seed(4))
    with dn.Deconvnet(model, rule="zeiler") as net:
        zeiler = net.project(x, layer="13", select=dn.TopMaps(1)).images
    with dn.Deconvnet(model, rule="guided") as net:
        guided = net.project(x, layer="13", select=dn.TopMaps(1)).images
    assert rel_error(zeiler, guided) > 0.1


def test_sum_collisions_keep_values_that_max_unpool_loses():
    """A hand-built mirror with nn.MaxUnpool2d drops values where 3×3/2 windows overlap."""
    pool = nn.MaxPool2d(3, 2, return_indices=True)
    x = torch.tensor(
        [[[[0.0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 9, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]]]
    )
    model = nn.Sequential(pool)
    with dn.Deconvnet(model) as net:
        res = net.project(x, layer="0", select=dn.WholeMap(0))
    out, idx = pool(x)
    unpooled = nn.MaxUnpool2d(3, 2)(out, idx, output_size=x.shape)
    assert float(res.images[0, 0, 0, 2, 2]) == 36.0  # four windows chose the centre: summed
    assert float(unpooled[0, 0, 2, 2]) == 9.0


@pytest.mark.parametrize(
    "activation",
    [nn.LeakyReLU(0.1), nn.PReLU(8), nn.ReLU6(), nn.ReLU6(inplace=True), nn.Threshold(0, 0)],
)
def test_relu_variants_have_rules(activation):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), activation, nn.Conv2d(8, 4, 3)).double()
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    for rule in ("zeiler", "guided", "gradient"):
        with dn.Deconvnet(model, rule=rule) as net:
            res = net.project(x, layer="2", select=dn.MapMax(1))
        y = model(x)
        signal = torch.zeros_like(y)
        pos = tuple(int(p) for p in res.positions[0, 0])
        signal[(0, 1, *pos)] = y[(0, 1, *pos)]
        signal = torch.nn.grad.conv2d_input(model[1](model[0](x)).shape, model[2].weight, signal)
        pre = model[0](x)
        if rule == "zeiler":
            if isinstance(activation, (nn.ReLU6, nn.Threshold)):
                signal = torch.relu(signal)
            else:
                signal = activation(signal)
        else:
            if isinstance(activation, nn.ReLU6):
                local = ((pre > 0) & (pre < 6)).double()
            elif isinstance(activation, nn.Threshold):
                local = (pre > 0).double()
            else:
                slope = (
                    activation.negative_slope
                    if isinstance(activation, nn.LeakyReLU)
                    else activation.weight.view(1, -1, 1, 1)
                )
                local = torch.where(pre > 0, torch.ones_like(pre), slope * torch.ones_like(pre))
            signal = signal * local
            if rule == "guided":
                signal = torch.relu(signal)
        expected = torch.nn.grad.conv2d_input(x.shape, model[0].weight, signal)
        assert rel_error(res.images[0, 0], expected[0].detach()) <= TOL, rule


@pytest.mark.parametrize(
    "activation", [nn.GELU(), nn.SiLU(), nn.ELU(), nn.Sigmoid(), nn.Tanh(), nn.Hardtanh()]
)
def test_activations_without_a_rule_raise_naming_the_module(activation):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), activation, nn.Conv2d(4, 4, 3))
    x = torch.randn(1, 3, 10, 10)
    with dn.Deconvnet(model) as net, pytest.raises(dn.UnsupportedLayerError, match=r"module 1 \("):
        net.project(x, layer="2", select=dn.MapMax(0))
    assert _no_hooks(model)
    with dn.Deconvnet(model, rule="gradient") as net:
        assert net.project(x, layer="2", select=dn.MapMax(0)).images.abs().sum() > 0


def _snapshot(model: nn.Module):
    return (
        copy.deepcopy(model.state_dict()),
        [p.requires_grad for p in model.parameters()],
        [p.grad for p in model.parameters()],
    )


def _no_hooks(model: nn.Module) -> bool:
    return all(
        not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
        for m in model.modules()
    )


def test_model_comes_back_untouched_after_success_and_failure():
    model = _nets.resnet_like()
    model[0].weight.requires_grad_(False)
    before = _snapshot(model)
    x = torch.randn(1, 3, 32, 32)
    with dn.Deconvnet(model, collisions="overwrite", lrn="reapply") as net:
        net.project(x, layer="4", select=dn.TopMaps(2))
        with pytest.raises(dn.SelectionError):
            net.project(x, layer="4", select=dn.MapMax(99))
        with pytest.raises(dn.InputError):
            net.project(torch.randn(1, 5, 32, 32), layer="4", select=dn.MapMax(0))
    after = _snapshot(model)
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert before[1] == after[1]
    assert all(g is None for g in after[2])  # no parameter gradients computed
    assert _no_hooks(model)
    assert model.training is False


def test_bad_inputs_give_clear_errors():
    model = _nets.vgg_like()
    x = torch.randn(1, 3, 32, 32)
    with dn.Deconvnet(model) as net:
        with pytest.raises(dn.LayerNotFoundError, match=r"no layer .features.99. \(\d+ layer"):
            net.project(x, layer="features.99", select=dn.MapMax(0))
        with pytest.raises(dn.LayerNotFoundError, match="not part of the model"):
            net.project(x, layer=nn.ReLU(), select=dn.MapMax(0))
        with pytest.raises(dn.SelectionError, match="channel 16 out of range"):
            net.project(x, layer="9", select=dn.MapMax(16))
        with pytest.raises(dn.SelectionError, match="outside"):
            net.project(x, layer="9", select=dn.Neuron(0, 8, 0))
        with pytest.raises(dn.SelectionError, match="Unit"):
            net.project(x, layer="12", select=dn.MapMax(0))
        with pytest.raises(dn.SelectionError, match="fc layer"):
            net.project(x, layer="9", select=dn.Unit(0))
        with pytest.raises(dn.InputError, match="floating point"):
            net.project(x.to(torch.uint8), layer="9", select=dn.MapMax(0))
        with pytest.raises(dn.InputError, match="batched input"):
            net.project(torch.randn(3, 32, 32), layer="9", select=dn.MapMax(0))
        with pytest.raises(dn.InputError, match="forward pass failed"):
            net.project(torch.randn(1, 4, 32, 32), layer="9", select=dn.MapMax(0))
        with pytest.raises(dn.SelectionError):
            net.project(x, layer="9", select=dn.TopMaps(17))
        with pytest.raises(TypeError):
            net.project(x, layer="9", select="top:9")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rule='deconv'"):
        dn.Deconvnet(model, rule="deconv")


def test_project_works_inside_no_grad_and_in_float64():
    model = _nets.vgg_like().double()
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad(), dn.Deconvnet(model) as net:
        res = net.project(x, layer="9", select=dn.TopMaps(2))
    assert res.images.dtype == torch.float64 and res.images.abs().max() > 0


def test_layer_not_downstream_of_the_input():
    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.spare = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            return self.conv(x)

    with dn.Deconvnet(Unused()) as net, pytest.raises(dn.LayerNotFoundError, match="not reached"):
        net.project(torch.randn(1, 3, 8, 8), layer="spare", select=dn.MapMax(0))


def test_layer_given_as_module_and_ties_pick_first_maximum():
    model = nn.Sequential(nn.Identity())
    x = torch.zeros(1, 2, 3, 3)
    x[0, 0, 1, 2] = x[0, 0, 2, 0] = 5.0  # tie: row-major first is (1, 2)
    x[0, 1, 0, 0] = 5.0  # tie between maps: channel order
    with dn.Deconvnet(model) as net:
        res = net.project(x, layer=model[0], select=dn.TopMaps(2))
    assert res.layer == "0"
    assert res.channels.tolist() == [[0, 1]]
    assert res.positions[0, 0].tolist() == [1, 2]
