"""``Deconvnet.project_units``: single units of several layers from one forward pass, one
reverse pass per unit whatever the number per image (no padding), each equal to
``Deconvnet.project`` with one ``Neuron`` on that image alone (the oracle; float64, ≤ 1e-10
relative to the largest value of the projection)."""

from __future__ import annotations

import gc
import warnings

import pytest
import torch
from torch import nn

import deconvnet as dn
from deconvnet.engine import windowed
from deconvnet.engine.graph import Recorder
from deconvnet.engine.projection import UnitProjections
from deconvnet.engine.selection import UnitList
from deconvnet.errors import SelectionError
from tests import _nets
from tests import _torchvision as tv
from tests.engine.test_windowed import Mixed

TOL = 1e-10
PER_IMAGE = (3, 0, 1)
"""Units per image of the batch: ragged, and one image has none."""


def _x(shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float64)


def ragged_units(net: dn.Deconvnet, x: torch.Tensor, layer: str, seed: int) -> UnitList:
    """:data:`PER_IMAGE` units per image, the first at the map's strongest unit (a unit
    that fires), the others anywhere."""
    y = net.layer_output(x, layer)
    generator = torch.Generator().manual_seed(seed)
    images, channels, positions = [], [], []
    for image, count in enumerate(PER_IMAGE):
        for n in range(count):
            channel = int(torch.randint(y.shape[1], (1,), generator=generator))
            if n == 0:
                flat = int(y[image, channel].argmax())
                position = [flat // y.shape[3], flat % y.shape[3]]
            else:
                position = [
                    int(torch.randint(size, (1,), generator=generator)) for size in y.shape[2:]
                ]
            images.append(image)
            channels.append(channel)
            positions.append(position)
    return UnitList(torch.tensor(images), torch.tensor(channels), torch.tensor(positions))


def assert_each_unit_is_its_neuron(
    net: dn.Deconvnet, x: torch.Tensor, layer: str, units: UnitList, found: object
) -> None:
    assert isinstance(found, UnitProjections)
    height, width = x.shape[-2:]
    assert found.reverse_passes == len(units)
    for n, (image, channel, position) in enumerate(
        zip(units.images.tolist(), units.channels.tolist(), units.positions.tolist(), strict=True)
    ):
        oracle = net.project(x[image : image + 1], layer, dn.Neuron(channel, *position))
        expected = oracle.images[0, 0]
        got = found.crop(n, (0, 0, height, width))
        scale = max(float(expected.abs().max()), 1e-300)
        assert float((got - expected).abs().max()) <= TOL * scale, (layer, n)
        assert float(found.values[n]) == pytest.approx(float(oracle.values[0, 0]), rel=1e-12)


def count_seeds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Seeds per windowed reverse call."""
    sizes: list[int] = []
    original = windowed.reverse_windows

    def spy(graph, image_index, *args, **kwargs):  # type: ignore[no-untyped-def]
        sizes.append(len(image_index))
        return original(graph, image_index, *args, **kwargs)

    monkeypatch.setattr(windowed, "reverse_windows", spy)
    return sizes


def forwards(model: nn.Module) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    calls: list[int] = []
    return calls, model.register_forward_pre_hook(lambda module, inputs: calls.append(1))


CASES = [
    # a convolution whose BatchNorm folds into it, then a later layer in the same pass
    ("vgg_bn", ["features.0", "features.4", "features.12"], {}),
    ("vgg_bn", ["features.0", "features.12"], {"rule": "guided"}),
    # a concatenation (fire modules)
    ("squeeze", ["3", "4"], {}),
    # residual sums, a pre-activation BatchNorm (DenseNet), a layer inside a block
    ("resnet", ["layer1.0.bn2", "layer2"], {"collisions": "overwrite"}),
    ("densenet", ["features.denseblock1.denselayer2.relu2", "features.denseblock2"], {}),
]


def _model(name: str) -> tuple[nn.Module, torch.Tensor]:
    if name == "vgg_bn":
        return _nets.vgg_bn().double().eval(), _x((3, 3, 16, 16))
    if name == "squeeze":
        return _nets.squeeze_like().double().eval(), _x((3, 3, 32, 32))
    if name == "resnet":
        return _nets.torchvision_resnet().double().eval(), _x((3, 3, 32, 32))
    model = tv.calibrated(tv.DenseNet(width=8, blocks=(3, 2)), size=32).double()
    return model, _x((3, 3, 32, 32))


@pytest.mark.parametrize(("name", "layers", "options"), CASES)
def test_every_unit_equals_its_own_neuron_from_one_forward_pass(
    monkeypatch: pytest.MonkeyPatch, name: str, layers: list[str], options: dict[str, str]
) -> None:
    model, x = _model(name)
    with dn.Deconvnet(model, **options) as net:
        units = {layer: ragged_units(net, x, layer, seed) for seed, layer in enumerate(layers)}
        net.project_units(x, units)  # the first call per layer and shape counts call sites
        sizes = count_seeds(monkeypatch)
        calls, handle = forwards(model)
        found = net.project_units(x, units)
        handle.remove()
        monkeypatch.undo()
        assert len(calls) == 1  # one forward pass for every layer
        assert sum(sizes) == sum(len(chosen) for chosen in units.values())  # nothing padded
        for layer in layers:
            assert_each_unit_is_its_neuron(net, x, layer, units[layer], found[layer])


def test_the_folds_of_one_layer_do_not_reach_another(monkeypatch: pytest.MonkeyPatch) -> None:
    """A BatchNorm after the convolution ``features.0`` folds into its filters for layers
    above it, never for ``features.0`` itself: each layer's graph is what a forward pass
    stopping there records."""
    model, x = _model("vgg_bn")
    graphs: list[object] = []
    original = Recorder.graph

    def spy(self: Recorder, at: object = None) -> object:
        graphs.append(original(self, at))  # type: ignore[arg-type]
        return graphs[-1]

    monkeypatch.setattr(Recorder, "graph", spy)
    with dn.Deconvnet(model) as net:
        units = {layer: ragged_units(net, x, layer, 0) for layer in ("features.0", "features.5")}
        net.project_units(x, units)
    low, high = graphs[-2:]
    low_conv = next(node for node in low.nodes if node.kind == "conv")  # type: ignore[attr-defined]
    high_conv = next(node for node in high.nodes if node.kind == "conv")  # type: ignore[attr-defined]
    assert torch.equal(low_conv.weight, model.features[0].weight.detach())
    assert not torch.equal(high_conv.weight, model.features[0].weight.detach())
    assert [node.kind for node in low.nodes] == ["conv"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("layer", ["head", "layer1.0.relu#2"])
def test_layers_the_windowed_pass_cannot_follow_go_one_image_at_a_time(
    monkeypatch: pytest.MonkeyPatch, layer: str
) -> None:
    """An op with no windowed rule (a custom autograd Function) or a ``#call`` index: the
    general path, one call per image's run of units, still one reverse pass per unit."""
    if layer == "head":
        model = tv.calibrated(Mixed("custom"), size=24, seed=3).double()
        x = _x((3, 3, 12, 12))
    else:
        model = _nets.torchvision_resnet().double().eval()
        x = _x((3, 3, 32, 32))
    # a custom autograd Function is refused under the rectifying rules (its backward is its
    # own gradient): the gradient rule runs it
    rule = "gradient" if layer == "head" else None
    with dn.Deconvnet(model, rule) as net:
        units = {layer: ragged_units(net, x, layer, 5)}
        sizes = count_seeds(monkeypatch)
        found = net.project_units(x, units)
        monkeypatch.undo()
        assert sizes == []  # not windowed
        assert_each_unit_is_its_neuron(net, x, layer, units[layer], found[layer])


def test_windows_are_cut_to_any_box_zero_outside() -> None:
    model, x = _model("squeeze")
    with dn.Deconvnet(model) as net:
        units = {"4": ragged_units(net, x, "4", 2)}
        found = net.project_units(x, units)["4"]
        full = found.crop(0, (0, 0, 32, 32))
        assert torch.equal(found.crop(0, (4, 6, 20, 30)), full[:, 4:20, 6:30])
        beyond = found.crop(0, (-3, -2, 35, 36))  # a box reaching outside the input
        assert torch.equal(beyond[:, 3:35, 2:34], full)
        assert float(beyond[:, :3].abs().max()) == 0
        with pytest.raises(IndexError):
            found.crop(len(found.values), (0, 0, 1, 1))


def test_units_outside_the_maps_are_refused() -> None:
    model, x = _model("squeeze")
    with dn.Deconvnet(model) as net:
        for images, channels, positions in (
            ([3], [0], [[0, 0]]),  # the batch has 3 images
            ([0], [999], [[0, 0]]),
            ([0], [0], [[99, 0]]),
            ([0], [0], [[0, -1]]),
        ):
            units = UnitList(torch.tensor(images), torch.tensor(channels), torch.tensor(positions))
            with pytest.raises(SelectionError):
                net.project_units(x, {"4": units})


def _live_tensor_bytes() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance on torch.distributed's deprecated aliases
        warnings.simplefilter("ignore")
        return sum(
            obj.untyped_storage().nbytes()
            for obj in gc.get_objects()
            if isinstance(obj, torch.Tensor)
        )


@pytest.mark.parametrize("inplace", [True, False])
@pytest.mark.parametrize("call", ["project_units", "project"])
def test_no_tensor_of_the_forward_outlives_the_call(call, inplace):
    """The recorded forward runs under autograd; a rule that held its input kept, after an
    in-place ReLU, the whole forward's saved tensors alive (a cycle through autograd's
    graph that Python's collector cannot see: ResNet-50 ``layer3``, 16 images a call, grew
    by ~1 GB per call). ``project`` with a joint selection takes the vjp path each call."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(inplace=inplace),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(inplace=inplace),
        nn.Conv2d(8, 4, 3, padding=1),
    ).eval()
    x = _x((2, 3, 32, 32)).float()
    units = {
        "5": UnitList(torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([[3, 4], [5, 6]]))
    }
    with dn.Deconvnet(model) as net:

        def run() -> None:
            if call == "project_units":
                net.project_units(x, units)
            else:
                net.project(x, "5", dn.WholeMap(1))

        run()
        before = _live_tensor_bytes()
        for _ in range(3):
            run()
        assert _live_tensor_bytes() == before
