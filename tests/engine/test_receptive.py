"""Receptive-field arithmetic (deconvnet.receptive).

Oracles: hand-computed tables (CaffeNet, ZFNet, the small graphs below), and an empirical
one: the bounding box of the input-gradient support of a single output unit, in float64
with all-positive weights and inputs so no contribution cancels.
"""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deconvnet.engine.receptive import ReceptiveField, layer_table, receptive_fields
from deconvnet.errors import InputError


def _caffenet() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 11, stride=4),  # conv1
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),  # pool1
        nn.LocalResponseNorm(5),
        nn.Conv2d(8, 8, 5, padding=2, groups=2),  # conv2
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),  # pool2
        nn.LocalResponseNorm(5),
        nn.Conv2d(8, 8, 3, padding=1),  # conv3
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3, padding=1, groups=2),  # conv4
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3, padding=1, groups=2),  # conv5
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),  # pool5
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 10),
    )


# (index, size, stride, offset) worked by hand: size += (k-1)*stride_in, stride *= s,
# offset += ((k-1)/2 - pad)*stride_in
CAFFENET = [
    ("0", 11, 4, 5.0),  # conv1 11/4
    ("1", 11, 4, 5.0),  # relu1 keeps
    ("2", 19, 8, 9.0),  # pool1 3/2: 11 + 2*4, 5 + 1*4
    ("3", 19, 8, 9.0),  # norm1 keeps
    ("4", 51, 8, 9.0),  # conv2 5 pad 2: 19 + 4*8, 9 + (2-2)*8
    ("6", 67, 16, 17.0),  # pool2: 51 + 2*8, 9 + 8
    ("8", 99, 16, 17.0),  # conv3 3 pad 1: 67 + 2*16
    ("10", 131, 16, 17.0),  # conv4
    ("12", 163, 16, 17.0),  # conv5
    ("14", 195, 32, 33.0),  # pool5: 163 + 2*16, 17 + 16
]


def test_caffenet_layout() -> None:
    fields = receptive_fields(_caffenet(), (1, 3, 227, 227))
    for name, size, stride, offset in CAFFENET:
        assert fields[name] == ReceptiveField((size, size), (stride, stride), (offset, offset))
    assert "15" not in fields and "16" not in fields  # flatten, linear: not (N, C, H, W)
    pool5 = fields["14"]
    assert pool5.box(0, 0) == (-64, -64, 131, 131)  # centre 33, half-width 97
    assert pool5.box(0, 0, (227, 227)) == (0, 0, 131, 131)
    assert pool5.box(5, 2, (227, 227)) == (96, 0, 227, 195)  # centres 193 and 97


def test_zfnet_layout() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 7, stride=2, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, padding=1),
        nn.Conv2d(4, 4, 5, stride=2),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, padding=1),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.MaxPool2d(3, 2),
    )
    fields = receptive_fields(model, (1, 3, 224, 224))
    expected = {
        "0": (7, 2, 2.0),  # 7/2 pad 1: offset 3 - 1
        "2": (11, 4, 2.0),  # 7 + 2*2, 2 + (1-1)*2
        "3": (27, 8, 10.0),  # 11 + 4*4, 2 + 2*4
        "5": (43, 16, 10.0),  # 27 + 2*8, 10 + 0
        "6": (75, 16, 10.0),
        "7": (107, 16, 10.0),
        "8": (139, 16, 10.0),
        "9": (171, 32, 26.0),  # 139 + 2*16, 10 + 16
    }
    for name, (size, stride, offset) in expected.items():
        assert fields[name] == ReceptiveField((size, size), (stride, stride), (offset, offset))


def _gradient_box(model: nn.Module, shape: tuple[int, ...], layer: str, y: int, x: int):
    """Bounding box (top, left, bottom, right) of d unit / d input != 0, all channels.

    Summing the unit over channels gives the layer-wide field (the union over a concat).
    """
    captured: dict[str, torch.Tensor] = {}
    module = model.get_submodule(layer)
    handle = module.register_forward_hook(lambda m, i, o: captured.__setitem__("out", o))
    images = (0.5 + torch.rand(shape, dtype=torch.float64)).requires_grad_(True)
    try:
        model(images)
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(captured["out"][0, :, y, x].sum(), images)
    rows, cols = torch.nonzero(grad[0].abs().sum(0), as_tuple=True)
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1


def _positive(model: nn.Module) -> nn.Module:
    model.double()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.uniform_(0.1, 1.0)
    return model


def _check_against_gradients(model: nn.Module, shape: tuple[int, ...], exact_border: bool):
    """Every 4-D layer: interior and corner units, arithmetic box vs gradient support."""
    image_hw = (shape[2], shape[3])
    checked = 0
    for row in layer_table(model, shape):
        if row.rf is None:
            continue
        height, width = row.output_shape[2], row.output_shape[3]
        for y, x in {(0, 0), (height // 2, width // 2), (height - 1, width - 1), (0, width - 1)}:
            expected = row.rf.box(y, x, image_hw)
            got = _gradient_box(model, shape, row.name, y, x)
            inside = row.rf.box(y, x) == expected
            if inside or exact_border:
                assert got == expected, (row.name, y, x)
            else:  # holes (dilation, stride > kernel) may leave the clipped edge untouched
                assert expected[0] <= got[0] and expected[1] <= got[1]
                assert got[2] <= expected[2] and got[3] <= expected[3]
            checked += 1
    return checked


class ResidualBlock(nn.Module):
    """torchvision's BasicBlock shape, with a downsampling shortcut and a shared ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.conv1 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.shortcut = nn.AvgPool2d(2, 2)  # ResNet-D style
        self.relu = nn.ReLU()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.stem(images))
        return self.relu(self.conv2(self.relu(self.conv1(x))) + self.shortcut(x))


def test_residual_block() -> None:
    model = ResidualBlock()
    fields = receptive_fields(model, (1, 3, 32, 32))
    assert fields["stem"] == ReceptiveField((3, 3), (2, 2), (0.0, 0.0))  # pad 1: centre 1 - 1
    assert fields["conv1"] == ReceptiveField((7, 7), (4, 4), (0.0, 0.0))  # 3 + 2*2
    assert fields["conv2"] == ReceptiveField((15, 15), (4, 4), (0.0, 0.0))  # 7 + 2*4
    assert fields["shortcut"] == ReceptiveField((5, 5), (4, 4), (1.0, 1.0))  # 3 + 1*2, 0 + .5*2
    # the shared ReLU reports its last call: after the add, union of [-7, 7] and [-1, 3]
    assert fields["relu"] == ReceptiveField((15, 15), (4, 4), (0.0, 0.0))
    assert _check_against_gradients(_positive(model), (1, 3, 32, 32), exact_border=True) > 0


class Fire(nn.Module):
    """SqueezeNet's fire module: squeeze 1x1, expand 1x1 and 3x3, concatenated."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2)
        self.squeeze = nn.Conv2d(4, 2, 1)
        self.expand1x1 = nn.Conv2d(2, 3, 1)
        self.expand3x3 = nn.Conv2d(2, 3, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.squeeze(F.relu(self.conv(images))))
        return torch.cat([F.relu(self.expand1x1(x)), F.relu(self.expand3x3(x))], 1)


class FireNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fire = Fire()
        self.pool = nn.AvgPool2d(3, 2, ceil_mode=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.fire(images))


def test_fire_module_concat_takes_the_union() -> None:
    model = FireNet()
    fields = receptive_fields(model, (1, 3, 33, 33))
    assert fields["fire.conv"] == ReceptiveField((3, 3), (2, 2), (1.0, 1.0))
    assert fields["fire.expand1x1"] == ReceptiveField((3, 3), (2, 2), (1.0, 1.0))
    assert fields["fire.expand3x3"] == ReceptiveField((7, 7), (2, 2), (1.0, 1.0))
    assert fields["fire"] == ReceptiveField((7, 7), (2, 2), (1.0, 1.0))  # the larger branch
    assert fields["pool"] == ReceptiveField((11, 11), (4, 4), (3.0, 3.0))  # ceil_mode: same
    model = _positive(model)
    assert _check_against_gradients(model, (1, 3, 33, 33), exact_border=True) > 0


class ShiftedBranches(nn.Module):
    """Functional code only: asymmetric pads put two branches on opposite sides."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(2, 3, 3, 3))
        self.merge = nn.Identity()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        right = F.conv2d(F.pad(images, (0, 2, 0, 2)), self.weight)  # sees [i, i + 2]
        left = F.conv2d(F.pad(images, (2, 0, 2, 0)), self.weight)  # sees [i - 2, i]
        both = self.merge(torch.cat([right, left], dim=1))
        return self.merge(both[:, :, 1:, ::2])


def test_functional_pad_cat_and_slicing() -> None:
    model = ShiftedBranches()
    rows = layer_table(model, (1, 3, 12, 12))
    assert [row.name for row in rows] == ["merge"]
    # union [-2, 2] -> size 5, centre 0; then rows from 1 (centre 1), columns every 2nd
    assert rows[0].rf == ReceptiveField((5, 5), (1, 2), (1.0, 0.0))
    assert rows[0].output_shape == (1, 4, 11, 6)
    assert _check_against_gradients(_positive(model), (1, 3, 12, 12), exact_border=True) > 0


def _random_model(rng: random.Random) -> tuple[nn.Sequential, nn.Sequential, bool]:
    """Random conv/pool stack, once with avg pools (for gradients), once with max pools."""
    avg_layers: list[nn.Module] = []
    max_layers: list[nn.Module] = []
    size, channels, dense = 64, 3, True
    while len(avg_layers) < 5:
        kernel, stride = rng.randint(1, 5), rng.randint(1, 3)
        padding = rng.randint(0, kernel // 2)
        dilation = rng.choice([1, 1, 2]) if kernel > 1 else 1
        pool = rng.random() < 0.35
        if pool:
            dilation = 1
        extent = dilation * (kernel - 1) + 1
        out = (size + 2 * padding - extent) // stride + 1
        if out < 3:
            break
        dense = dense and dilation == 1 and kernel >= stride
        if pool:
            avg_layers.append(nn.AvgPool2d(kernel, stride, padding))
            max_layers.append(nn.MaxPool2d(kernel, stride, padding))
        else:
            same = stride == 1 and rng.random() < 0.3
            conv = nn.Conv2d(
                channels, 2, kernel, stride, "same" if same else padding, dilation=dilation
            )
            avg_layers.append(conv)
            max_layers.append(conv)
            avg_layers.append(nn.ReLU())
            max_layers.append(nn.ReLU())
            channels = 2
            if same:
                out = size
        size = out
    return nn.Sequential(*avg_layers), nn.Sequential(*max_layers), dense


@pytest.mark.parametrize("seed", range(12))
def test_random_stacks_match_gradient_support(seed: int) -> None:
    avg_model, max_model, dense = _random_model(random.Random(seed))
    if len(avg_model) == 0:
        pytest.skip("generator produced no layer for this seed")
    shape = (1, 3, 64, 64)
    fields = receptive_fields(avg_model, shape)
    assert receptive_fields(max_model, shape) == fields  # max and avg share geometry
    assert _check_against_gradients(_positive(avg_model), shape, exact_border=dense) > 0


def test_global_and_adaptive_pooling() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),  # 16 -> 14
        nn.AdaptiveAvgPool2d(7),  # 14 / 7: an ordinary 2/2 pool
        nn.AdaptiveMaxPool2d(3),  # 7 / 3: uneven windows -> global
        nn.Conv2d(4, 4, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Unflatten(1, (4, 1, 1)),
    )
    fields = receptive_fields(model, (1, 3, 16, 16))
    assert fields["1"] == ReceptiveField((4, 4), (2, 2), (1.5, 1.5))  # 3 + 1*1, 1 + 0.5
    whole = ReceptiveField((16, 16), (16, 16), (7.5, 7.5), is_global=True)
    assert fields["2"] == fields["3"] == fields["4"] == fields["6"] == whole
    assert whole.box(2, 1) == (0, 0, 16, 16)


def test_layer_table_rows() -> None:
    rows = layer_table(_caffenet(), (2, 3, 227, 227))
    assert [row.name for row in rows] == [str(i) for i in range(17)]
    assert rows[0].type == "Conv2d" and rows[0].output_shape == (2, 8, 55, 55)
    assert rows[16].type == "Linear" and rows[16].output_shape == (2, 10) and rows[16].rf is None


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_padding_modes_and_same() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 2, 3, padding=2, padding_mode="reflect"),
        nn.Conv2d(2, 2, 4, padding="same"),  # PyTorch pads 1 before, 2 after
    )
    fields = receptive_fields(model, (1, 3, 20, 20))
    assert fields["0"] == ReceptiveField((3, 3), (1, 1), (-1.0, -1.0))  # 1 - 2
    assert fields["1"] == ReceptiveField((6, 6), (1, 1), (-0.5, -0.5))  # -1 + (1.5 - 1)


class Stateful(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout2d(0.5)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] < 8:
            raise RuntimeError("input too small for this model")
        return self.drop(self.bn(self.conv(images)))


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_model_is_left_untouched() -> None:
    model = Stateful().train()
    with torch.no_grad():
        model.bn.running_mean.fill_(0.25)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_before = torch.get_rng_state()
    fields = receptive_fields(model, (2, 3, 10, 10))
    assert fields["drop"] == ReceptiveField((3, 3), (1, 1), (1.0, 1.0))
    assert model.training and _no_hooks(model)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert torch.equal(torch.get_rng_state(), rng_before)
    with pytest.raises(InputError, match="too small"):
        receptive_fields(model, (1, 3, 5, 5))
    assert _no_hooks(model)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_bad_input_shape() -> None:
    with pytest.raises(InputError, match="input_shape"):
        receptive_fields(nn.Conv2d(3, 3, 3), (3, 32, 32))
    with pytest.raises(InputError, match="input_shape"):
        receptive_fields(nn.Conv2d(3, 3, 3), (1, 3, 0, 32))


class _UnusedBranch(nn.Module):
    """A block holding a module its forward never calls (timm's ``drop_path`` beside a
    missing shortcut)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.drop_path = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_modules_the_forward_pass_never_calls_are_left_out() -> None:
    """The survey of every module must not require each one to run (before: every timm
    EfficientNet failed with "layers [...drop_path] were not reached")."""
    model = nn.Sequential(_UnusedBranch(), nn.ReLU())
    rows = layer_table(model, (1, 3, 16, 16))
    assert [row.name for row in rows] == ["0", "0.conv", "1"]
    assert receptive_fields(model, (1, 3, 16, 16))["1"].size == (3, 3)
