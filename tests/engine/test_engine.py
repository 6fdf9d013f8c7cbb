"""Engine against independent oracles: the paper written out literally, Captum, loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deconvnet as dn
from tests import _nets

REL_TOL = 1e-5
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def literal_reverse(
    model: nn.Sequential,
    x: torch.Tensor,
    upto: int,
    seed_of,
    rule: str = "zeiler",
    lrn: str = "skip",
) -> torch.Tensor:
    """Zeiler & Fergus §2.1 written out for a Sequential model, one image, one seed.

    Forward: record each layer's input and the max-pool switches
    (``max_pool2d(return_indices=True)``). Reverse: unpool by scatter-add through the
    switches, rectify the signal, filter with ``conv_transpose2d`` of the same weights and
    groups (no bias), fc layers by ``W^T``; LRN skipped (or re-applied).
    """
    records = []
    h = x
    for module in model[: upto + 1]:
        if isinstance(module, nn.MaxPool2d):
            out, idx = F.max_pool2d(
                h,
                module.kernel_size,
                module.stride,
                module.padding,
                module.dilation,
                ceil_mode=module.ceil_mode,
                return_indices=True,
            )
            records.append((module, h, idx))
            h = out
        else:
            records.append((module, h, None))
            h = F.relu(h) if isinstance(module, nn.ReLU) else module(h)
    signal = seed_of(h)
    for module, inp, idx in reversed(records):
        if isinstance(module, nn.Conv2d):
            plain = [
                (signal.shape[2 + d] - 1) * module.stride[d]
                - 2 * module.padding[d]
                + module.dilation[d] * (module.kernel_size[d] - 1)
                + 1
                for d in range(2)
            ]
            extra = tuple(inp.shape[2 + d] - plain[d] for d in range(2))
            signal = F.conv_transpose2d(
                signal,
                module.weight,
                None,
                module.stride,
                module.padding,
                extra,
                module.groups,
                module.dilation,
            )
        elif isinstance(module, nn.ReLU):
            if rule == "zeiler":
                signal = F.relu(signal)
            elif rule == "guided":
                signal = F.relu(signal) * (inp > 0)
            else:
                signal = signal * (inp > 0)
        elif isinstance(module, nn.MaxPool2d):
            n, c = inp.shape[:2]
            flat = torch.zeros(n, c, inp.shape[2] * inp.shape[3], dtype=signal.dtype)
            flat.scatter_add_(2, idx.flatten(2), signal.flatten(2))
            signal = flat.view(inp.shape)
        elif isinstance(module, nn.LocalResponseNorm):
            if lrn == "reapply":
                signal = module(signal)
        elif isinstance(module, nn.Linear):
            signal = signal @ module.weight
        elif isinstance(module, nn.Flatten):
            signal = signal.reshape(inp.shape)
        else:
            raise AssertionError(f"literal reference has no rule for {module}")
    return signal


def one_hot_seed(channel: int, position: tuple[int, ...]):
    def seed(h: torch.Tensor) -> torch.Tensor:
        s = torch.zeros_like(h)
        s[(0, channel, *position)] = h[(0, channel, *position)]
        return s

    return seed


@pytest.fixture(scope="module")
def caffenet64():
    return _nets.caffenet(width=4).double()


@pytest.fixture(scope="module")
def image227():
    return torch.randn(
        1, 3, 227, 227, generator=torch.Generator().manual_seed(7), dtype=torch.float64
    )


@pytest.mark.parametrize("upto", [4, 13, 14])  # conv2 (pre-ReLU), conv5 ReLU, pool5
def test_mapmax_and_topmaps_equal_literal_caffenet(caffenet64, image227, upto):
    with dn.Deconvnet(caffenet64) as net:
        res = net.project(image227, layer=str(upto), select=dn.TopMaps(4))
    assert res.images.shape == (1, 4, 3, 227, 227)
    y = caffenet64[: upto + 1](image227)
    for k in range(4):
        channel = int(res.channels[0, k])
        position = tuple(int(p) for p in res.positions[0, k])
        assert float(y[(0, channel, *position)]) == pytest.approx(float(res.values[0, k]))
        assert float(y[0, channel].max()) == float(res.values[0, k])
        expected = literal_reverse(caffenet64, image227, upto, one_hot_seed(channel, position))
        assert expected.abs().max() > 0
        assert rel_error(res.images[0, k], expected[0]) <= REL_TOL
    maxima = y[0].flatten(1).max(1).values
    assert torch.equal(res.channels[0], maxima.argsort(descending=True, stable=True)[:4])
    with dn.Deconvnet(caffenet64) as net:
        single = net.project(image227, layer=str(upto), select=dn.MapMax(int(res.channels[0, 1])))
    assert rel_error(single.images[0, 0], res.images[0, 1]) <= REL_TOL


def test_neuron_and_wholemap_equal_literal_zfnet():
    model = _nets.zfnet(width=4).double()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with dn.Deconvnet(model) as net:
        neuron = net.project(x, layer="13", select=dn.Neuron(5, 6, 7))
        whole = net.project(x, layer="13", select=dn.WholeMap(5))
    assert model[:14](x).shape[2:] == (13, 13)
    expected = literal_reverse(model, x, 13, one_hot_seed(5, (6, 7)))
    assert rel_error(neuron.images[0, 0], expected[0]) <= REL_TOL

    def whole_seed(h):
        s = torch.zeros_like(h)
        s[0, 5] = h[0, 5]
        return s

    expected_whole = literal_reverse(model, x, 13, whole_seed)
    assert whole.positions is None and int(whole.channels[0, 0]) == 5
    assert rel_error(whole.images[0, 0], expected_whole[0]) <= REL_TOL


@pytest.mark.parametrize("rule", ["guided", "gradient"])
def test_other_rules_equal_literal(caffenet64, image227, rule):
    # The literal oracle skips LRN; rule gradient's own default (LRN gradient) is tested
    # against torch.autograd.grad in test_guard.py.
    with dn.Deconvnet(caffenet64, rule=rule, lrn="skip") as net:
        res = net.project(image227, layer="11", select=dn.MapMax(3))
    position = tuple(int(p) for p in res.positions[0, 0])
    expected = literal_reverse(caffenet64, image227, 11, one_hot_seed(3, position), rule=rule)
    assert rel_error(res.images[0, 0], expected[0]) <= REL_TOL


def test_lrn_reapply_equals_literal(caffenet64, image227):
    x = image227 * 255  # Caffe's pixel scale, where LRN is far from the identity
    with dn.Deconvnet(caffenet64, lrn="reapply") as net:
        res = net.project(x, layer="9", select=dn.MapMax(0))
    position = tuple(int(p) for p in res.positions[0, 0])
    expected = literal_reverse(caffenet64, x, 9, one_hot_seed(0, position), lrn="reapply")
    skipped = literal_reverse(caffenet64, x, 9, one_hot_seed(0, position))
    assert rel_error(res.images[0, 0], expected[0]) <= REL_TOL
    assert rel_error(expected[0], skipped[0]) > 1e-4  # the option changes the result


def test_gradient_rule_with_lrn_gradient_is_autograd(caffenet64, image227):
    with dn.Deconvnet(caffenet64, rule="gradient", lrn="gradient") as net:
        res = net.project(image227, layer="12", select=dn.Neuron(2, 4, 4))
    x = image227.clone().requires_grad_(True)
    caffenet64[:13](x)[0, 2, 4, 4].backward()
    value = float(caffenet64[:13](image227)[0, 2, 4, 4])
    assert rel_error(res.images[0, 0], x.grad[0] * value) <= REL_TOL


def test_fc_layer_units_equal_literal():
    model = _nets.caffenet(width=8, fc=True).double()
    x = torch.randn(2, 3, 227, 227, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    with dn.Deconvnet(model) as net:
        res = net.project(x, layer="17", select=dn.TopUnits(3))
        unit = net.project(x, layer="18", select=dn.Unit(4))
    assert res.positions is not None and res.positions.shape == (2, 3, 0)
    for b in range(2):
        for k in range(3):
            i = int(res.channels[b, k])

            def seed(h, i=i):
                s = torch.zeros_like(h)
                s[0, i] = h[0, i]
                return s

            expected = literal_reverse(model, x[b : b + 1], 17, seed)
            assert rel_error(res.images[b, k], expected[0]) <= REL_TOL
    assert unit.images.shape == (2, 1, 3, 227, 227)


def test_batch_equals_loop_and_each_image_picks_its_own_argmax():
    model = _nets.caffenet(width=8)
    x = torch.randn(3, 3, 227, 227, generator=torch.Generator().manual_seed(11))
    with dn.Deconvnet(model, batch_size=4) as net:
        batch = net.project(x, layer="13", select=dn.TopMaps(5))
        singles = [net.project(x[i : i + 1], layer="13", select=dn.TopMaps(5)) for i in range(3)]
    assert not torch.equal(batch.channels[0], batch.channels[1])  # images differ
    for i, single in enumerate(singles):
        assert torch.equal(batch.channels[i], single.channels[0])
        assert torch.equal(batch.positions[i], single.positions[0])
        assert rel_error(batch.images[i], single.images[0]) <= 1e-5


def test_k_batched_equals_k_single_runs():
    model = _nets.caffenet(width=8)
    x = torch.randn(1, 3, 227, 227, generator=torch.Generator().manual_seed(12))
    with dn.Deconvnet(model) as net:
        top = net.project(x, layer="10", select=dn.TopMaps(6))
        for k in range(6):
            one = net.project(x, layer="10", select=dn.MapMax(int(top.channels[0, k])))
            assert rel_error(top.images[0, k], one.images[0, 0]) <= 1e-5


def test_threshold_and_mask_are_joint():
    model = _nets.caffenet(width=8).double()
    x = torch.randn(1, 3, 227, 227, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = model[:15](x)
    threshold = float(y.flatten().kthvalue(y.numel() - 20).values)
    with dn.Deconvnet(model) as net:
        res = net.project(x, layer="14", select=dn.Threshold(threshold))
        masked = net.project(x, layer="14", select=dn.Mask(y >= threshold))
    expected = literal_reverse(model, x, 14, lambda h: torch.where(h >= threshold, h, 0))
    assert res.images.shape[1] == 1 and res.positions is None
    assert rel_error(res.images[0, 0], expected[0]) <= REL_TOL
    assert torch.equal(res.images, masked.images)
    assert float(res.values[0, 0]) == float(y.max())


def overwrite_unpool_numpy(signal: np.ndarray, indices: np.ndarray, in_shape) -> np.ndarray:
    """The old Caffe InvPooling: zero, then write pooled positions in raster order."""
    out = np.zeros(in_shape, dtype=signal.dtype)
    n, c, h, w = signal.shape
    for b in range(n):
        for ch in range(c):
            plane = out[b, ch].reshape(-1)
            for i in range(h):
                for j in range(w):
                    plane[indices[b, ch, i, j]] = signal[b, ch, i, j]
    return out


def test_overwrite_collisions_equal_numpy_loop():
    pool = nn.MaxPool2d(3, 2, ceil_mode=True)
    model = nn.Sequential(pool)
    x = torch.randn(1, 2, 13, 13, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out, idx = F.max_pool2d(x, 3, 2, ceil_mode=True, return_indices=True)
    mask = torch.zeros_like(out, dtype=torch.bool)
    mask[0, 1] = True
    with dn.Deconvnet(model, collisions="overwrite") as net:
        res = net.project(x, layer="0", select=dn.Mask(mask))
    with dn.Deconvnet(model, collisions="sum") as net:
        summed = net.project(x, layer="0", select=dn.Mask(mask))
    seed = torch.where(mask, out, 0).numpy()
    expected = overwrite_unpool_numpy(seed, idx.numpy(), x.shape)
    np.testing.assert_allclose(res.images[0, 0].numpy(), expected[0], rtol=0, atol=0)
    assert not torch.allclose(res.images, summed.images)  # 3×3/2 windows do collide here


def test_overwrite_in_a_full_model_equals_literal_variant(caffenet64, image227):
    """Overwrite at every pool of CaffeNet, checked against the numpy unpool in the chain."""
    with dn.Deconvnet(caffenet64, collisions="overwrite") as net:
        res = net.project(image227, layer="14", select=dn.MapMax(1))
    position = tuple(int(p) for p in res.positions[0, 0])
    with torch.no_grad():
        records, h = [], image227
        for module in caffenet64:
            if isinstance(module, nn.MaxPool2d):
                out, idx = F.max_pool2d(h, 3, 2, ceil_mode=True, return_indices=True)
                records.append((module, h, idx))
                h = out
            else:
                records.append((module, h, None))
                h = F.relu(h) if isinstance(module, nn.ReLU) else module(h)
        signal = one_hot_seed(1, position)(h)
        for module, inp, idx in reversed(records):
            if isinstance(module, nn.MaxPool2d):
                signal = torch.from_numpy(
                    overwrite_unpool_numpy(signal.numpy(), idx.numpy(), inp.shape)
                )
            else:
                signal = literal_reverse(nn.Sequential(module), inp, 0, lambda _h, s=signal: s)
    assert rel_error(res.images[0, 0], signal[0]) <= REL_TOL
