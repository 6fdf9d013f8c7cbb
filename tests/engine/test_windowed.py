"""The windowed reverse pass on recorded graphs equals the general autograd path (itself
checked against the paper and Captum), on chains, graph twins, constructed blocks and the
benchmark's architectures, under every rule and both collision modes (float64, ≤ 1e-10
relative to the largest projection value)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import deconvnet as dn
from deconvnet.engine import window, windowed
from deconvnet.engine.graph import Recorder
from deconvnet.engine.ops import convolution
from deconvnet.engine.ops import pooling as windowed_pooling
from tests import _nets
from tests import _torchvision as tv

TOL = 1e-10
OPTIONS = [
    {},
    {"rule": "guided"},
    {"rule": "gradient"},
    {"rule": "none"},
    {"collisions": "overwrite"},
    {"rule": "guided", "collisions": "overwrite"},
]
LRN_OPTIONS = [
    {"lrn": "reapply"},
    {"lrn": "gradient", "rule": "guided"},
    {"rule": "none", "lrn": "reapply", "collisions": "overwrite"},
]


def _graphs(monkeypatch, *, general: bool = False) -> list[object]:
    """Spy on the recorder: the graphs it hands the engine (None: general path), or force
    the general path."""
    seen: list[object] = []
    original = Recorder.graph

    def spy(self: Recorder) -> object:
        graph = None if general else original(self)
        seen.append(graph)
        return graph

    monkeypatch.setattr(Recorder, "graph", spy)
    return seen


def both_paths(monkeypatch, model, x, layer, select, **options):
    """(windowed, general) projections; asserts the first really ran windowed."""
    with dn.Deconvnet(model, **options) as net:
        seen = _graphs(monkeypatch)
        fast = net.project(x, layer, select)
        assert seen and seen[-1] is not None, "the windowed path was not used"
        _graphs(monkeypatch, general=True)
        general = net.project(x, layer, select)
        monkeypatch.undo()
    return fast, general


def assert_equal_paths(monkeypatch, model, x, layer, select=None, **options):
    fast, general = both_paths(monkeypatch, model, x, layer, select or dn.TopMaps(4), **options)
    assert torch.equal(fast.channels, general.channels)
    scale = general.images.abs().max()
    assert scale > 0
    assert float((fast.images - general.images).abs().max() / scale) <= TOL


def _x(shape, seed=1, scale=1.0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float64) * scale


# -- chains ---------------------------------------------------------------------------------


@pytest.mark.parametrize("options", OPTIONS + LRN_OPTIONS)
@pytest.mark.parametrize("layer", ["4", "13", "14"])
def test_caffenet(monkeypatch, options, layer):
    model = _nets.caffenet(width=8).double()
    x = _x((2, 3, 227, 227), scale=60)  # LRN far from identity
    assert_equal_paths(monkeypatch, model, x, layer, dn.TopMaps(5), **options)


@pytest.mark.parametrize("position", [(0, 0), (12, 12), (0, 12), (6, 0)])
def test_border_units_on_zfnet(monkeypatch, position):
    model = _nets.zfnet(width=8).double()
    x = _x((1, 3, 224, 224), seed=2)
    fast, general = both_paths(monkeypatch, model, x, "12", dn.Neuron(3, *position), rule="guided")
    assert float((fast.images - general.images).abs().max()) <= TOL * max(
        1.0, float(general.images.abs().max())
    )


def test_vgg_with_batchnorm_and_dropout(monkeypatch):
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Dropout(),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2),
        nn.ReLU(),
    )
    model = model.double().eval()
    model[1].running_var.fill_(2.0)
    model[1].weight.data.uniform_(0.5, 1.5)
    assert_equal_paths(monkeypatch, model, _x((2, 3, 20, 20)), "6")


@pytest.mark.parametrize("size", [4, 5])
def test_lrn_gradient_window_even_and_odd_sizes(monkeypatch, size):
    model = nn.Sequential(
        nn.Conv2d(3, 7, 3),
        nn.ReLU(),
        nn.LocalResponseNorm(size, alpha=0.5, beta=0.75, k=2.0),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(7, 6, 3),
    )
    model = model.double().eval()
    x = _x((2, 3, 21, 21), scale=3)
    assert_equal_paths(monkeypatch, model, x, "4", dn.TopMaps(3), lrn="gradient")
    with dn.Deconvnet(model, lrn="gradient") as net, dn.Deconvnet(model) as skip:
        assert not torch.allclose(  # the LRN matters here
            net.project(x, "4", dn.TopMaps(3)).images, skip.project(x, "4", dn.TopMaps(3)).images
        )


# -- graph twins and constructed blocks -------------------------------------------------------


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize(
    ("build", "layer", "size"),
    [
        (_nets.resnet_like, "4", 16),  # add, BatchNorm, a ReLU module used twice, in place
        (_nets.squeeze_like, "4", 64),  # fire modules: concat
    ],
)
def test_graph_twins(monkeypatch, options, build, layer, size):
    model = build().double()
    assert_equal_paths(monkeypatch, model, _x((2, 3, size, size)), layer, **options)


@pytest.mark.parametrize(
    "form", ["functional", "torch", "method", "inplace_method", "functional_inplace"]
)
def test_relu_in_every_form(monkeypatch, form):
    model = _nets.FunctionalTwin(_nets.vgg_like(), form).double()
    assert_equal_paths(monkeypatch, model, _x((2, 3, 32, 32)), "base.9", rule="guided")
    reused = _nets.ReusedReLU(_nets.vgg_like()).double()
    assert_equal_paths(monkeypatch, reused, _x((2, 3, 32, 32)), "base.9")


class Residual(nn.Module):
    """A stride-2 residual block with a 1x1 projection shortcut and ReLU6."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv1 = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(12)
        self.act = nn.ReLU6()
        self.conv2 = nn.Conv2d(12, 12, 3, padding=1, groups=3)
        self.shortcut = nn.Conv2d(8, 12, 1, stride=2)
        self.head = nn.Conv2d(12, 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        out = self.conv2(self.act(self.bn1(self.conv1(x))))
        out = torch.add(out, self.shortcut(x))
        return self.head(F.relu6(out))


class Inception(nn.Module):
    """Branches of different kernels and pools, concatenated, and a constant added."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2)
        self.b1 = nn.Conv2d(8, 4, 1)
        self.b3 = nn.Conv2d(8, 4, 3, padding="same")
        self.b5 = nn.Conv2d(8, 4, 5, padding=2, dilation=1)
        self.pool = nn.MaxPool2d(3, 1, padding=1)
        self.head = nn.Conv2d(28, 6, 3, padding="valid")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        branches = [
            self.b1(x),
            self.b3(x),
            self.b5(x),
            F.avg_pool2d(x, 3, 1, 1, count_include_pad=False),
            self.pool(x),
        ]
        y = torch.cat(branches, dim=1) + 0.5
        y = F.avg_pool2d(F.relu(y), 3, 2, padding=1, ceil_mode=True)
        return self.head(y)


class Shuffle(nn.Module):
    """ShuffleNet-v2 unit: channel split, depthwise conv, concat, channel shuffle."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.pw = nn.Conv2d(4, 4, 1)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Conv2d(8, 6, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        keep, work = x.chunk(2, dim=1)
        work = F.relu(self.bn(self.dw(F.relu(self.pw(work)))))
        y = torch.cat((keep, work), dim=1)
        b, c, h, w = y.shape
        y = y.view(b, 2, c // 2, h, w).transpose(1, 2).contiguous().view(b, -1, h, w)
        y = F.adaptive_max_pool2d(y, (h // 2, w // 2))
        return F.adaptive_avg_pool2d(self.head(y), 2)


def _seeded(model: nn.Module) -> nn.Module:
    return tv.calibrated(model, size=24, seed=3).double()


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("block", [Residual, Inception, Shuffle])
def test_constructed_blocks(monkeypatch, options, block):
    model = _seeded(block())
    assert_equal_paths(monkeypatch, model, _x((2, 3, 24, 24)), "head", **options)


def test_a_dense_block(monkeypatch):
    model = tv.calibrated(tv.DenseNet(width=8, blocks=(3, 2)), size=32).double()
    for options in OPTIONS:
        assert_equal_paths(
            monkeypatch, model, _x((2, 3, 32, 32)), "features.denseblock2", **options
        )


# -- the benchmark's architectures (reduced width and input) ---------------------------------


ARCHITECTURES = [
    (tv.resnet18, ["layer3", "layer4"]),
    (tv.resnet50, ["layer3", "layer4"]),
    (tv.vgg16_bn, ["features.22", "features.42"]),
    (tv.densenet121, ["features.denseblock3", "features.denseblock4"]),
]


@pytest.mark.parametrize(
    ("build", "layers"),
    [*ARCHITECTURES[:3], pytest.param(*ARCHITECTURES[3], marks=pytest.mark.slow)],  # 35 s
)
def test_benchmark_architectures(monkeypatch, build, layers):
    model = tv.calibrated(build(16), size=48).double()
    options = {"rule": "guided", "collisions": "overwrite"}
    assert_equal_paths(monkeypatch, model, _x((1, 3, 48, 48)), layers[-1], dn.TopMaps(3), **options)


@pytest.mark.slow
@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize(("build", "layers"), ARCHITECTURES)
def test_benchmark_architectures_every_rule(monkeypatch, build, layers, options):
    model = tv.calibrated(build(4), size=96).double()
    x = _x((2, 3, 96, 96))
    for layer in layers:
        assert_equal_paths(monkeypatch, model, x, layer, dn.TopMaps(6), **options)


# -- where the general path takes over --------------------------------------------------------


class _Doubler(torch.autograd.Function):
    """An op torch functions do not see from outside (a custom autograd Function)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):  # type: ignore[no-untyped-def]
        return x * 2

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[no-untyped-def]
        pass

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        return grad * 2


class Mixed(nn.Module):
    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.head = nn.Conv2d(6, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv(x))
        if self.mode == "interpolate":  # no windowed rule, on the layer's path
            y = F.interpolate(y, scale_factor=2.0)
        elif self.mode == "side":  # no windowed rule, off the layer's path
            _ = (y * y).mean()
        elif self.mode == "custom":  # invisible op: its output looks derived but unrecorded
            y = y + _Doubler.apply(y)
        elif self.mode == "stale":  # a view whose base changes in place afterwards
            view = y.view(y.shape)
            y.mul_(1.0)
            y = view
        return self.head(y)


@pytest.mark.parametrize(
    ("mode", "windowed"),
    [("interpolate", False), ("side", True), ("custom", False), ("stale", False), ("plain", True)],
)
def test_which_path_and_one_forward(monkeypatch, mode, windowed):
    model = _seeded(Mixed(mode))
    calls = []
    handle = model.register_forward_pre_hook(lambda module, inputs: calls.append(1))
    x = _x((2, 3, 12, 12))
    # a custom autograd Function is refused under the rectifying rules (its backward is its
    # own gradient): the gradient rule runs it
    rule = "gradient" if mode == "custom" else None
    with dn.Deconvnet(model, rule) as net:
        net.project(x, "head", dn.TopMaps(3))
        assert len(calls) == 2  # once per model, layer and input shape: is "head" reused?
        calls.clear()
        seen = _graphs(monkeypatch)
        fast = net.project(x, "head", dn.TopMaps(3))
        monkeypatch.undo()
        assert (seen[-1] is not None) == windowed
        assert len(calls) == 1  # the planner costs no extra forward, whichever path runs
        _graphs(monkeypatch, general=True)
        general = net.project(x, "head", dn.TopMaps(3))
    handle.remove()
    assert float((fast.images - general.images).abs().max()) <= TOL * float(
        general.images.abs().max()
    )


@pytest.mark.parametrize(
    "norm", [nn.BatchNorm2d(8, affine=False), nn.BatchNorm2d(8, track_running_stats=False)]
)
def test_batchnorm_variants(monkeypatch, norm):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), norm, nn.ReLU(), nn.Conv2d(8, 4, 3)).double().eval()
    x = _x((2, 3, 12, 12))
    # batch statistics are refused under activations="strict"; "relu-like" freezes them
    activations = "relu-like" if norm.running_var is None else None
    with dn.Deconvnet(model, activations=activations) as net:
        seen = _graphs(monkeypatch)
        fast = net.project(x, "3", dn.TopMaps(2))
        monkeypatch.undo()
        assert (seen[-1] is not None) == (norm.running_var is not None)  # batch statistics
        _graphs(monkeypatch, general=True)
        general = net.project(x, "3", dn.TopMaps(2))
    assert float((fast.images - general.images).abs().max()) <= TOL * float(
        general.images.abs().max()
    )


def test_joint_selections_do_not_record(monkeypatch):
    model = _nets.resnet_like().double()
    with dn.Deconvnet(model) as net:
        seen = _graphs(monkeypatch)
        net.project(_x((2, 3, 16, 16)), "4", dn.WholeMap(1))
    assert seen == []


@pytest.mark.parametrize(
    ("channels", "outputs", "kernel", "stride", "dilation", "size"),
    [
        (5, 3, 7, 2, 1, 40),  # back to the image, 7x7/2: one convolution of the phases
        (6, 3, 11, 4, 1, 9),  # CaffeNet's 11x11/4: phases, the filter padded to 12x12
        (5, 3, 3, 1, 1, 40),  # VGG's first layer, a large map: one product per seed
        (5, 3, 3, 1, 2, 9),  # few outputs, dilated, a small map: one product for all
        (5, 4, 3, 2, 2, 9),  # strided and dilated: the product
        (6, 16, 5, 4, 1, 12),  # as many outputs as the few-channel formulations take
        (8, 17, 3, 2, 1, 12),  # one more: the library's transposed convolution
        (12, 7, 1, 2, 1, 40),  # a strided 1x1 shortcut, large map
        (12, 7, 1, 1, 1, 6),  # a 1x1 convolution, small map
    ],
)
def test_each_transposed_conv_formulation_equals_the_library(
    channels, outputs, kernel, stride, dilation, size
):
    """Whichever formulation the shape picks, the result is ``F.conv_transpose2d``'s."""
    generator = torch.Generator().manual_seed(kernel * 31 + stride)
    data = torch.randn(3, channels, size, size + 1, generator=generator, dtype=torch.float64)
    weight = torch.randn(channels, outputs, kernel, kernel, generator=generator).double()
    expected = F.conv_transpose2d(data, weight, None, stride, 0, 0, 1, dilation)
    found = convolution.transposed_conv(data, weight, (stride, stride), 1, (dilation, dilation))
    assert found.shape == expected.shape
    assert float((found - expected).abs().max()) <= TOL * float(expected.abs().max())


@pytest.mark.parametrize("stride", [1, 2])
def test_a_reduced_1x1_transposed_conv_is_the_library_s_product_placed_at_the_stride(stride):
    """In bfloat16 a 1×1 filter with many outputs takes the library's unstrided kernel
    and places it: the float32 transposed convolution of the same rounded inputs, to
    bfloat16's rounding of the output."""
    generator = torch.Generator().manual_seed(stride)
    data = torch.randn(4, 40, 7, 6, generator=generator).bfloat16()
    weight = torch.randn(40, 24, 1, 1, generator=generator).bfloat16()
    expected = F.conv_transpose2d(data.float(), weight.float(), None, stride)
    found = convolution.transposed_conv(data, weight, (stride, stride))
    assert found.dtype == torch.bfloat16 and found.shape == expected.shape
    assert float((found.float() - expected).abs().max()) <= 2**-7 * float(expected.abs().max())
    if stride == 2:
        assert bool((found[:, :, 1::2] == 0).all()) and bool((found[:, :, :, 1::2] == 0).all())


@pytest.mark.parametrize(
    "pool",
    [
        lambda x: F.max_pool2d(x, 3, 2, 1),
        lambda x: F.max_pool2d(x, 3, 2, 0, 1, True, True)[0],
        lambda x: F.max_pool2d(x, kernel_size=2, return_indices=True)[0],
        lambda x: torch.max_pool2d(x, [3, 3], [], [1, 1], [1, 1], True),
        lambda x: F.max_pool2d_with_indices(x, 2, dilation=2)[0],
        lambda x: nn.MaxPool2d(3, 2, ceil_mode=True)(x),
    ],
)
def test_every_max_pool_spelling_pools_once(monkeypatch, pool):
    """The recording keeps the forward's own argmax indices: the map is pooled once, and
    the windowed projection still equals the general path."""

    class Pooled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 6, 3)
            self.head = nn.Conv2d(6, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(pool(F.relu(self.stem(x))))

    model = _seeded(Pooled())
    x = _x((2, 3, 21, 21))
    with dn.Deconvnet(model) as net:
        net.project(x, "head", dn.TopMaps(3))  # the first call also counts call sites
        with _CountPools() as pools:
            net.project(x, "head", dn.TopMaps(3))
    assert pools.calls == 1
    assert_equal_paths(monkeypatch, model, x, "head", collisions="overwrite")


@pytest.mark.parametrize("options", [{}, {"collisions": "overwrite"}, {"rule": "guided"}])
@pytest.mark.parametrize(("size", "ceil_mode"), [(12, False), (12, True), (13, True)])
def test_unpooling_the_whole_map(monkeypatch, options, size, ceil_mode):
    """Where a unit's window covers the pool's whole output (the last stages' units at the
    first pool), unpooling runs as autograd's max-pool backward on the whole map: equal to
    the general path, seeds of several images, ceil mode or not, summed or overwritten."""
    calls = []
    whole_map = windowed_pooling.MaxPoolNode._whole_map

    def spy(self, data, step):
        calls.append(tuple(data.shape))
        return whole_map(self, data, step)

    monkeypatch.setattr(windowed_pooling.MaxPoolNode, "_whole_map", spy)

    class Pooled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 6, 3, padding=1)
            self.pool = nn.MaxPool2d(3, 2, padding=1, ceil_mode=ceil_mode)
            pooled = int(self.pool(torch.zeros(1, 1, size, size)).shape[-1])
            # a filter larger than the pooled map: every unit's window is cut to all of it
            self.head = nn.Conv2d(6, 4, pooled + 1, padding=(pooled + 1) // 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.relu(self.head(self.pool(F.relu(self.stem(x)))))

    model = _seeded(Pooled())
    x = _x((3, 3, size, size))
    assert_equal_paths(monkeypatch, model, x, "head", dn.TopMaps(4), **options)
    monkeypatch.setattr(windowed_pooling.MaxPoolNode, "_whole_map", spy)
    with dn.Deconvnet(model, **options) as net:
        net.project(x, "head", dn.TopMaps(4))
    assert calls, "the whole map was not unpooled at once"


class _CountPools(TorchDispatchMode):
    """Count the max-pooling kernels run, whatever the spelling above them."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (
            torch.ops.aten.max_pool2d.default,
            torch.ops.aten.max_pool2d_with_indices.default,
        ):
            self.calls += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    ("outer", "inner", "shifts"),
    [
        ((9, 9), (5, 5), [(2, 2), (2, 2)]),  # inside, the same place for both seeds
        ((9, 9), (5, 5), [(2, 2), (1, 3)]),  # inside, different places
        ((9, 9), (5, 5), [(6, 2), (6, 2)]),  # sticking out below
        ((4, 9), (6, 3), [(-1, 2), (-1, 2)]),  # taller than the other, narrower
    ],
)
def test_summed_windows_equal_summed_maps(outer, inner, shifts):
    """Two signals at one tensor, summed on windows, equal their sum on the whole map."""
    generator = torch.Generator().manual_seed(len(shifts) + outer[0])
    tops = torch.tensor([5, 7])
    lefts = torch.tensor([4, 6])
    first = window.Window(
        torch.randn(2, 3, *outer, generator=generator, dtype=torch.float64), tops, lefts
    )
    second = window.Window(
        torch.randn(2, 3, *inner, generator=generator, dtype=torch.float64),
        tops + torch.tensor([s[0] for s in shifts]),
        lefts + torch.tensor([s[1] for s in shifts]),
    )
    whole = (30, 30)
    expected = window.paste(first, whole) + window.paste(second, whole)
    for pair in ((first, second), (second, first)):
        before = pair[0].data.clone()
        found = window.paste(window.sum_windows(*pair), whole)
        assert torch.equal(found, expected)
        assert torch.equal(pair[0].data, before)  # a shared signal is not changed in place


def test_seeds_are_split_into_calls_whose_tensors_stay_reused_blocks(monkeypatch):
    """A call's tensors grow with its seeds; past glibc's reuse limit the engine splits
    the seeds into several calls, with the same projections."""
    model = _nets.vgg_like().double().eval()
    x = _x((2, 3, 32, 32))
    sizes: list[int] = []
    original = windowed.reverse_windows

    def spy(graph, image_index, *args, **kwargs):
        sizes.append(len(image_index))
        return original(graph, image_index, *args, **kwargs)

    monkeypatch.setattr(windowed, "reverse_windows", spy)
    with dn.Deconvnet(model) as net:
        whole = net.project(x, "9", dn.TopMaps(4))
        assert sizes == [8]
        # the largest tensor per seed: the second 8→8 convolution's per-tap products on
        # the 12×12 window a unit of layer 9 reaches at its output
        per_seed = 8 * 3 * 3 * 12 * 12
        monkeypatch.setattr(windowed, "RECYCLED_BYTES", 3 * per_seed * x.element_size())
        sizes.clear()
        split = net.project(x, "9", dn.TopMaps(4))
    assert sizes == [3, 3, 2]
    assert torch.equal(split.channels, whole.channels)
    scale = float(whole.images.abs().max())
    assert float((split.images - whole.images).abs().max()) <= TOL * scale


@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("options", [{}, {"rule": "guided"}, {"rule": "gradient"}])
def test_preactivation_batchnorm_folded_only_when_every_scale_is_positive(
    monkeypatch, options, sign
):
    """BN → ReLU → conv (DenseNet): a positive scale goes into the convolution's filters;
    one negative channel keeps the BatchNorm as its own step, since ``relu(s·z)`` is then
    not ``s·relu(z)``. Both equal the general path."""

    class PreActivation(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 6, 3)
            self.bn = nn.BatchNorm2d(6)
            self.head = nn.Conv2d(6, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(F.relu(self.bn(F.max_pool2d(self.stem(x), 2))))

    model = _seeded(PreActivation())
    with torch.no_grad():
        model.bn.weight[2] *= sign
    seen = _graphs(monkeypatch)
    with dn.Deconvnet(model, **options) as net:
        net.project(_x((2, 3, 20, 20)), "head", dn.TopMaps(2))
    monkeypatch.undo()
    kinds = [node.kind for node in seen[-1].nodes]
    assert ("scale" in kinds) == (sign < 0)
    assert_equal_paths(monkeypatch, model, _x((2, 3, 20, 20)), "head", **options)
