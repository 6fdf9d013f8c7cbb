"""The reverse pass in a reduced type: which type runs where, what stays full precision, and
the projections it cannot hold, redone.

Oracles: the same call in full precision (float32), compared value by value (the forward:
seeded units, values, switches) and as 8-bit pictures (:func:`display_match`, the
display-exact check: PSNR ≥ 40 dB, ≥ 99 % of pixels within ±2 levels); and the paper's
reverse pass written out in float32 (``literal_reverse``), drawn by a renderer written here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import deconvnet as dn
from deconvnet.engine import engine, precision, windowed
from deconvnet.engine.graph import Graph
from deconvnet.engine.ops import normalisation
from deconvnet.engine.ops.convolution import ConvNode
from deconvnet.engine.selection import UnitList
from deconvnet.engine.window import paste
from deconvnet.figures.display import display_match, display_matches
from tests import _nets
from tests import _torchvision as tv
from tests.engine.test_engine import literal_reverse, one_hot_seed

CPU = torch.device("cpu")


def _x(shape, seed=0, dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _both(model, x, layer, select, reduced="bfloat16", **options):
    with dn.Deconvnet(model, precision=reduced, **options) as net:
        low = net.project(x, layer, select)
    with dn.Deconvnet(model, **options) as net:
        full = net.project(x, layer, select)
    return low, full


# -- which type runs where ---------------------------------------------------------------------


@pytest.mark.parametrize("forward", [torch.float32, torch.float64, torch.float16])
def test_full_precision_is_the_forward_s_own_type(forward):
    assert precision.reverse_dtype("float32", forward, CPU) == forward
    assert precision.reverse_dtype("bfloat16", forward, CPU) == torch.bfloat16
    assert precision.reverse_dtype("float16", forward, CPU) == torch.float16


@pytest.mark.parametrize("native", [True, False])
def test_auto_follows_the_cpu_s_bfloat16_support(monkeypatch, native):
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda native=native: native, raising=False)
    expected = torch.bfloat16 if native else torch.float32
    assert precision.native_bfloat16(CPU) is native
    assert precision.reverse_dtype("auto", torch.float32, CPU) == expected


@pytest.mark.parametrize(
    ("capability", "expected"), [((8, 0), True), ((9, 0), True), ((7, 5), False)]
)
def test_auto_on_cuda_needs_capability_8(monkeypatch, capability, expected):
    """The CUDA branch, taken on this CPU-only machine with the capability query answered."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    cuda = torch.device("cuda")
    assert precision.native_bfloat16(cuda) is expected
    dtype = precision.reverse_dtype("auto", torch.float32, cuda)
    assert dtype == (torch.bfloat16 if expected else torch.float32)


@pytest.mark.parametrize("native", [True, False])
def test_the_engine_s_auto_runs_what_the_device_answers(monkeypatch, native):
    """End to end on this CPU, with the device's answer given both ways: ``auto`` runs
    bfloat16 where it is native and is exactly the float32 call where it is not."""
    monkeypatch.setattr(precision, "native_bfloat16", lambda device: native)
    model = _nets.caffenet(width=8)
    auto, full = _both(model, _x((1, 3, 131, 131)), "9", dn.TopMaps(3), "auto")
    assert auto.precision == ("bfloat16" if native else "float32")
    assert torch.equal(auto.images, full.images) is not native


def test_lrn_is_upcast_only_where_the_device_lacks_the_kernel():
    """CPU has no bfloat16/float16 3-D average pooling; CUDA has (a meta tensor stands in
    for a device other than the CPU)."""
    for dtype, upcast in ((torch.bfloat16, True), (torch.float16, True), (torch.float32, False)):
        assert normalisation._needs_upcast(torch.zeros(1, dtype=dtype)) is upcast
        assert normalisation._needs_upcast(torch.zeros(1, dtype=dtype, device="meta")) is False


def test_other_devices_are_not_native():
    assert precision.native_bfloat16(torch.device("mps")) is False


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision='int8' is not one of float32, bfloat16"):
        dn.Deconvnet(nn.Conv2d(3, 3, 3), precision="int8")
    with pytest.raises(ValueError, match="precision"):
        precision.reverse_dtype("half", torch.float32, CPU)


def test_the_policy_records_what_was_asked():
    net = dn.Deconvnet(nn.Conv2d(3, 3, 3), "guided", precision="auto")
    assert net.policy.precision == "auto"
    assert dn.Deconvnet(nn.Conv2d(3, 3, 3)).policy.precision == "float32"


# -- what runs reduced, what stays exact -------------------------------------------------------


CASES = [
    ("caffenet", lambda: _nets.caffenet(width=4), (1, 3, 227, 227), "13", {"lrn": "gradient"}),
    ("resnet18", lambda: tv.calibrated(tv.resnet18(width=4), size=64), (1, 3, 64, 64),
     "layer3", {}),
    ("densenet", lambda: tv.calibrated(tv.densenet121(width=8), size=64), (1, 3, 64, 64),
     "features.denseblock3", {"rule": "guided"}),
    ("vgg", lambda: tv.calibrated(tv.vgg16_bn(width=8), size=64), (1, 3, 64, 64), "features.32",
     {"rule": "gradient"}),
]  # fmt: skip


@pytest.mark.parametrize("reduced", ["bfloat16", "float16"])
@pytest.mark.parametrize(("name", "build", "shape", "layer", "options"), CASES)
def test_reduced_projections_are_display_exact(name, build, shape, layer, options, reduced):
    """The forward is the model's own (the same units, values, bit for bit); the reverse ran
    in the reduced type, no projection needed redoing, and every one passes the check."""
    model = tv.no_inplace(build())
    low, full = _both(model, _x(shape), layer, dn.TopMaps(6), reduced, **options)
    assert torch.equal(low.channels, full.channels)
    assert torch.equal(low.positions, full.positions)
    assert torch.equal(low.values, full.values)
    assert (low.precision, full.precision) == (reduced, "float32")
    assert low.images.dtype == torch.float32 and full.full_precision is None
    assert not bool(low.full_precision.any()), name
    matches = display_matches(low.images, full.images)
    assert all(match.passed for match in matches), [m.psnr for m in matches]
    assert 0 < max(match.max_relative_error for match in matches) < 0.05
    assert not torch.equal(low.images, full.images)  # it really ran reduced


def test_the_general_path_stays_full_precision_and_says_so():
    """Joint selections take autograd's pullback, which runs in the forward's type."""
    model = _nets.caffenet(width=8)
    x = _x((1, 3, 227, 227))
    low, full = _both(model, x, "9", dn.WholeMap(3))
    assert low.precision == "float32" and low.full_precision is None
    assert torch.equal(low.images, full.images)


def test_a_float64_model_reverses_in_bfloat16_and_returns_float64():
    model = _nets.caffenet(width=8).double()
    low, full = _both(model, _x((1, 3, 131, 131), dtype=torch.float64), "9", dn.TopMaps(3))
    assert low.images.dtype == torch.float64 and low.precision == "bfloat16"
    assert full.precision == "float64"
    assert all(match.passed for match in display_matches(low.images, full.images))


def test_lrn_reapplied_is_not_scaled_and_still_display_exact():
    """Re-applying LRN is not homogeneous in the seed: those seeds run at their own value."""
    model = _nets.caffenet(width=8)
    low, full = _both(model, _x((1, 3, 227, 227), seed=3) * 60, "9", dn.TopMaps(4), lrn="reapply")
    assert all(match.passed for match in display_matches(low.images, full.images))


def test_float16_holds_tiny_activations():
    """Activations near 1e-9 are below float16's smallest number: the seeds run at magnitude
    1 and the projections are scaled back in full precision."""
    model = _nets.caffenet(width=8)
    for module in model:
        if isinstance(module, nn.Conv2d):
            nn.init.zeros_(module.bias)  # activations scale with the input
    x = _x((1, 3, 227, 227)) * 1e-9
    low, full = _both(model, x, "13", dn.TopMaps(4), "float16")
    assert float(full.values.abs().max()) < 1e-6
    assert not bool(low.full_precision.any())
    assert all(match.passed for match in display_matches(low.images, full.images))


def _overflowing() -> nn.Sequential:
    """Filters that grow the signal 10⁴-fold per layer."""
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3)
    ).eval()
    with torch.no_grad():
        for conv in model[::2]:
            conv.weight.copy_(conv.weight.abs() * 1e4)
    return model


def test_float16_overflow_is_redone_in_full_precision():
    """Filters that grow the signal 10⁴-fold per layer leave float16's range (65504) on the
    way down: those projections come back from float32, and say so."""
    model = _overflowing()
    low, full = _both(model, _x((1, 3, 12, 12)).abs(), "4", dn.TopMaps(2), "float16")
    assert bool(low.full_precision.all())
    assert [low.precision_at(0, k) for k in range(2)] == ["float32", "float32"]
    torch.testing.assert_close(low.images, full.images, rtol=1e-6, atol=0)


# -- the display check predicted, and the fallback ---------------------------------------------


def _raw(monkeypatch) -> list[torch.Tensor]:
    """The reduced pass's own projections (at the seeds' magnitude 1, as float32), taken
    before the engine redoes any."""
    seen: list[torch.Tensor] = []
    original = windowed.reverse_windows

    def spy(graph, *args, **kwargs):
        window = original(graph, *args, **kwargs)
        if window.data.dtype in (torch.bfloat16, torch.float16):
            seen.append(paste(window, graph.shapes[0][-2:]).float())
        return window

    monkeypatch.setattr(windowed, "reverse_windows", spy)
    return seen


def test_a_cancelling_unit_fails_the_check_and_falls_back(monkeypatch):
    """The bfloat16 projection of a unit whose projection is a near-cancellation fails the
    display check; the engine's estimate sees it coming and redoes it in float32."""
    model = _nets.cancelling()
    x = _x((1, 3, 16, 16))
    raw = _raw(monkeypatch)
    low, full = _both(model, x, "3", dn.TopMaps(1))
    (match,) = display_matches(raw[0].view_as(full.images), full.images)
    assert not match.passed and match.psnr < 35, match
    assert bool(torch.isfinite(raw[0]).all()) and float(raw[0].abs().max()) > 0  # in range
    assert bool(low.full_precision.all()) and low.precision_at(0, 0) == "float32"
    torch.testing.assert_close(low.images, full.images, rtol=1e-6, atol=0)


def test_without_the_cancellation_nothing_falls_back():
    model = _nets.cancelling(delta=1.0)  # w and -2w: no cancellation
    low, full = _both(model, _x((1, 3, 16, 16)), "3", dn.TopMaps(1))
    assert not bool(low.full_precision.any())
    assert all(match.passed for match in display_matches(low.images, full.images))


@pytest.mark.parametrize(("name", "build", "shape", "layer", "options"), CASES[:3])
def test_the_rounding_estimate_is_conservative(monkeypatch, name, build, shape, layer, options):
    """Per projection, the estimated relative RMS error is at least the measured one and
    within 8× of it (measured on the benchmark's rows: 1.3–2.5×)."""
    variances: list[torch.Tensor] = []
    original = engine._unheld

    def spy(images, values, variance):
        variances.append(variance)
        return original(images, values, variance)

    monkeypatch.setattr(engine, "_unheld", spy)
    model = tv.no_inplace(build())
    low, full = _both(model, _x(shape), layer, dn.TopMaps(6), **options)
    estimate = torch.cat(variances).sqrt()
    reference = full.images[0].flatten(1)
    measured = (low.images[0].flatten(1) - reference).norm(dim=1) / reference.norm(dim=1)
    assert bool((estimate >= measured).all()), (estimate, measured)
    assert bool((estimate <= 8 * measured).all()), (estimate, measured)


def test_an_all_zero_projection_is_exact():
    images = torch.zeros(2, 3, 4, 4)
    assert bool(precision.expected_display_exact(images, torch.tensor([0.5, 0.0])).all())


# -- the graph in a reduced type ----------------------------------------------------------------


def test_casting_a_graph_leaves_full_precision_intact():
    weight = torch.randn(4, 3, 3, 3)
    node = ConvNode((0,), window=None, weight=weight, groups=1)  # type: ignore[arg-type]
    graph = Graph([node], [(1, 3, 8, 8), (1, 4, 6, 6)], 1)
    low = graph.cast(torch.bfloat16)
    assert low.nodes[0].weight.dtype == torch.bfloat16
    assert node.weight is weight and weight.dtype == torch.float32
    assert graph.cast(torch.float32).nodes[0] is node  # nothing to convert: the same node


def test_seeds_per_call_grow_as_the_type_shrinks():
    graph = Graph([], [(1, 3, 512, 512)], 0)
    assert windowed.seeds_per_call(graph, 2) >= 2 * windowed.seeds_per_call(graph, 4) > 0


# -- the display check against an independent float32 rendering -------------------------------


def _rendered(values: torch.Tensor) -> np.ndarray:
    """The ``rgb`` view written out here: zero at grey 128, the largest |value| 127 levels
    away, rounded and clipped to 8 bits; (H, W, 3) integers."""
    array = values.double().numpy()
    peak = np.abs(array).max()
    levels = np.floor(128 + array / peak * 127 + 0.5) if peak > 0 else np.full_like(array, 128)
    return np.clip(levels, 0, 255).astype(int).transpose(1, 2, 0)


def test_bfloat16_is_display_exact_against_the_literal_float32_deconvnet():
    """The oracle is the paper's reverse pass written out in float32 (``literal_reverse``)
    and drawn by the renderer above; the bfloat16 projections are drawn the same way and
    compared on the box of their non-zero values: PSNR ≥ 40 dB, ≥ 99 % of pixels within ±2
    levels — and :func:`display_match` gives the same numbers."""
    model = _nets.caffenet(width=4)
    x = _x((1, 3, 227, 227), seed=7)
    with dn.Deconvnet(model, precision="bfloat16") as net:
        low = net.project(x, "13", dn.TopMaps(4))
    assert not bool(low.full_precision.any())
    differs = 0
    for k in range(4):
        position = tuple(int(p) for p in low.positions[0, k])
        seed = one_hot_seed(int(low.channels[0, k]), position)
        with torch.no_grad():
            full = literal_reverse(model, x, 13, seed)[0]
        reached = (low.images[0, k].abs() + full.abs()).sum(0) > 0
        rows, cols = torch.nonzero(reached.any(1))[:, 0], torch.nonzero(reached.any(0))[:, 0]
        box = (slice(None), slice(int(rows[0]), int(rows[-1]) + 1))
        box += (slice(int(cols[0]), int(cols[-1]) + 1),)
        a, b = _rendered(low.images[0, k][box]), _rendered(full[box])
        psnr = 10 * math.log10(255**2 / max(float(np.mean((a - b) ** 2.0)), 1e-12))
        within = float(np.mean(np.abs(a - b).max(axis=2) <= 2))
        relative = float((low.images[0, k] - full).abs().max() / full.abs().max())
        assert psnr >= 40 and within >= 0.99, (k, psnr, within)
        assert 0 < relative < 0.05
        match = display_match(low.images[0, k], full)
        assert match.psnr == pytest.approx(psnr, abs=0.05) and match.passed
        assert match.within == pytest.approx(within, abs=1e-3)
        assert match.max_relative_error == pytest.approx(relative, rel=1e-3)
        differs += int((a != b).any())
    assert differs > 0  # the pictures are not bit-identical: the check had work to do


# -- the top-k stage's one pass per unit (project_units) in a reduced type -------------------


def _strongest_units(net: dn.Deconvnet, x: torch.Tensor, layer: str, per_image: int) -> UnitList:
    """Per image, the strongest unit of each of its ``per_image`` strongest maps."""
    y = net.layer_output(x, layer)
    images, channels, positions = [], [], []
    for image in range(y.shape[0]):
        peaks = y[image].flatten(1).max(dim=1)
        for channel in peaks.values.argsort(descending=True)[:per_image].tolist():
            flat = int(peaks.indices[channel])
            images.append(image)
            channels.append(channel)
            positions.append([flat // y.shape[3], flat % y.shape[3]])
    return UnitList(torch.tensor(images), torch.tensor(channels), torch.tensor(positions))


def _units_both(model, x, layer, per_image, reduced):
    with dn.Deconvnet(model) as net:
        units = _strongest_units(net, x, layer, per_image)
        full = net.project_units(x, {layer: units})[layer]
    with dn.Deconvnet(model, precision=reduced) as net:
        low = net.project_units(x, {layer: units})[layer]
    box = (0, 0, *x.shape[-2:])
    crops = [
        torch.stack([found.crop(n, box) for n in range(len(units))]) for found in (low, full)
    ]
    return low, full, crops[0], crops[1]


@pytest.mark.parametrize("reduced", ["bfloat16", "float16"])
def test_project_units_in_a_reduced_type_are_display_exact_and_say_so(reduced):
    """Each unit's one reverse pass runs in the reduced type; the forward (the values) is
    float32's bit for bit; every picture is display-exact; the type is recorded per unit."""
    model = tv.no_inplace(tv.calibrated(tv.resnet18(width=4), size=64))
    x = _x((2, 3, 64, 64))
    low, full, low_crops, full_crops = _units_both(model, x, "layer3", 4, reduced)
    assert full.precision == "float32" and full.full_precision is None
    assert low.precision == reduced and low.full_precision is not None
    assert low.full_precision.shape == (8,)
    assert torch.equal(low.values, full.values)
    assert all(match.passed for match in display_matches(low_crops, full_crops))
    assert [low.precision_at(n) for n in range(8)] == [
        "float32" if bool(low.full_precision[n]) else reduced for n in range(8)
    ]
    assert not torch.equal(low_crops, full_crops)  # it did run in the reduced type


def test_project_units_redo_overflows_in_full_precision():
    """float16 overflow (as in ``test_float16_overflow_is_redone_in_full_precision``): each
    unit's window is written back from float32, equal to the full-precision pass."""
    model = _overflowing()
    x = _x((2, 3, 12, 12)).abs()
    low, _, low_crops, full_crops = _units_both(model, x, "4", 2, "float16")
    assert low.full_precision is not None and bool(low.full_precision.all())
    assert {low.precision_at(n) for n in range(4)} == {"float32"}
    torch.testing.assert_close(low_crops, full_crops, rtol=1e-6, atol=0)


def _half_cancelling() -> nn.Sequential:
    """Map 0 of the last layer is :func:`_nets.cancelling`'s unit (``w`` and ``−(1+δ)·w``
    added); map 1 passes an independent filter on alone."""
    generator = torch.Generator().manual_seed(5)
    first = nn.Conv2d(3, 3, 5, bias=False)
    second = nn.Conv2d(3, 2, 1, bias=False)
    weight = torch.randn((3, 5, 5), generator=generator)
    with torch.no_grad():
        first.weight[0] = weight
        first.weight[1] = -(1 + 2**-6) * weight
        first.weight[2] = torch.randn((3, 5, 5), generator=generator)
        second.weight.zero_()
        second.weight[0, :2] = 1.0
        second.weight[1, 2] = 1.0
    return nn.Sequential(first, nn.ReLU(), second, nn.ReLU()).eval()


def test_project_units_redo_the_cancelling_unit_of_a_run_and_keep_the_other():
    """One run of two units: the cancelling one fails the predicted check and is written
    back from float32 (equal to the full pass); the other keeps its bfloat16 picture."""
    x = _x((1, 3, 16, 16))
    low, _, low_crops, full_crops = _units_both(_half_cancelling(), x, "3", 2, "bfloat16")
    with dn.Deconvnet(_half_cancelling()) as net:
        channels = _strongest_units(net, x, "3", 2).channels.tolist()
    assert sorted(channels) == [0, 1]
    assert low.full_precision is not None
    assert low.full_precision.tolist() == [channel == 0 for channel in channels]
    redone, kept = channels.index(0), channels.index(1)
    torch.testing.assert_close(low_crops[redone], full_crops[redone], rtol=1e-6, atol=0)
    assert display_match(low_crops[kept], full_crops[kept]).passed
    assert not torch.equal(low_crops[kept], full_crops[kept])
    assert [low.precision_at(n) for n in (redone, kept)] == ["float32", "bfloat16"]
