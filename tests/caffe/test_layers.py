"""Each Caffe layer type against a literal float64 numpy transcription of Caffe's source.

Tolerance: 1e-5 relative to the blob's max |value| (float32 vs float64 arithmetic).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deconvnet.caffe import load
from deconvnet.caffe.layers import InnerProduct, WithinChannelLRN

RTOL_MAX = 1e-5


def _close(actual: torch.Tensor, expected: np.ndarray) -> None:
    actual_np = actual.detach().double().numpy()
    assert actual_np.shape == expected.shape
    scale = max(np.abs(expected).max(), 1e-12)
    assert np.abs(actual_np - expected).max() <= RTOL_MAX * scale


def _input(shape: tuple[int, ...], dims: str | None = None) -> str:
    dims = dims or " ".join(f"dim: {d}" for d in shape)
    return (
        f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}\n'
    )


def caffe_pool(x: np.ndarray, k: int, s: int, p: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """pooling_layer.cpp, Forward_cpu, transcribed: values and (for MAX) the argmax mask."""
    n, c, h, w = x.shape
    out = []
    for size in (h, w):
        o = int(np.ceil((size + 2 * p - k) / s)) + 1
        if p and (o - 1) * s >= size + p:
            o -= 1
        out.append(o)
    top = np.zeros((n, c, *out))
    mask = np.full((n, c, *out), -1.0)
    for ph in range(out[0]):
        for pw in range(out[1]):
            hs, ws = ph * s - p, pw * s - p
            he, we = min(hs + k, h + p), min(ws + k, w + p)
            pool_size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            window = x[:, :, hs:he, ws:we]
            if method == "AVE":
                top[:, :, ph, pw] = window.sum(axis=(2, 3)) / pool_size
                continue
            flat = window.reshape(n, c, -1)
            first = flat.argmax(axis=2)  # numpy argmax: first maximum, like Caffe's strict '>'
            top[:, :, ph, pw] = flat.max(axis=2)
            mask[:, :, ph, pw] = (hs + first // (we - ws)) * w + ws + first % (we - ws)
    return top, mask


@pytest.mark.parametrize(
    ("size", "k", "s", "p", "method"),
    [
        (13, 3, 2, 0, "MAX"),
        (54, 3, 2, 0, "MAX"),
        (10, 3, 2, 1, "MAX"),
        (8, 2, 3, 1, "MAX"),
        (15, 3, 2, 0, "AVE"),
        (10, 3, 2, 1, "AVE"),
        (8, 2, 3, 1, "AVE"),
        (7, 5, 2, 2, "AVE"),
    ],
)
def test_pooling_matches_caffe_rounding_divisor_and_mask(write_net, size, k, s, p, method) -> None:
    tops = 'top: "pool" top: "mask"' if method == "MAX" else 'top: "pool"'
    text = _input((2, 3, size, size)) + (
        f'layer {{ name: "pool" type: "Pooling" bottom: "data" {tops} '
        f"pooling_param {{ pool: {method} kernel_size: {k} stride: {s} pad: {p} }} }}"
    )
    net, _ = load(write_net(text)[0])
    x = np.random.default_rng(0).standard_normal((2, 3, size, size)).round(1)  # ties happen
    blobs = net.forward_blobs(torch.from_numpy(x).float())
    expected, mask = caffe_pool(x.astype(np.float32).astype(np.float64), k, s, p, method)
    _close(blobs["pool"], expected)
    if method == "MAX":
        np.testing.assert_array_equal(blobs["pool:mask"].numpy(), mask)


def test_global_pooling(write_net) -> None:
    text = _input((1, 4, 5, 6)) + (
        'layer { name: "g" type: "Pooling" bottom: "data" top: "g" '
        "pooling_param { pool: AVE global_pooling: true } }"
    )
    net, _ = load(write_net(text)[0])
    x = torch.randn(1, 4, 5, 6)
    _close(net(x), x.double().mean(dim=(2, 3), keepdim=True).numpy())


def caffe_lrn_across(x: np.ndarray, n: int, alpha: float, beta: float, k: float) -> np.ndarray:
    pre = (n - 1) // 2
    padded = np.pad(x**2, ((0, 0), (pre, n - 1 - pre), (0, 0), (0, 0)))
    window = sum(padded[:, j : j + x.shape[1]] for j in range(n))
    return x * (k + alpha / n * window) ** -beta


def caffe_lrn_within(x: np.ndarray, n: int, alpha: float, beta: float) -> np.ndarray:
    pad = (n - 1) // 2
    padded = np.pad(x**2, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    h, w = x.shape[2:]
    window = sum(padded[:, :, i : i + h, j : j + w] for i in range(n) for j in range(n))
    return x * (1 + alpha / n**2 * window) ** -beta


@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
def test_lrn(write_net, region) -> None:
    n, alpha, beta, k = (
        (5, 1e-2, 0.75, 2.0) if region == "ACROSS_CHANNELS" else (3, 5e-2, 0.75, 1.0)
    )
    text = _input((2, 7, 6, 5)) + (
        f'layer {{ name: "norm" type: "LRN" bottom: "data" top: "norm" lrn_param {{ '
        f"local_size: {n} alpha: {alpha} beta: {beta} k: {k} norm_region: {region} }} }}"
    )
    net, _ = load(write_net(text)[0])
    x = np.random.default_rng(1).standard_normal((2, 7, 6, 5)) * 10
    out = net(torch.from_numpy(x).float())
    alpha32 = float(np.float32(alpha))
    expected = (
        caffe_lrn_across(x, n, alpha32, beta, k)
        if region == "ACROSS_CHANNELS"
        else caffe_lrn_within(x, n, alpha32, beta)
    )
    _close(out, expected)
    module = net.get_submodule("norm")
    want = nn.LocalResponseNorm if region == "ACROSS_CHANNELS" else WithinChannelLRN
    assert isinstance(module, want)


def test_even_lrn_size_is_rejected(write_net) -> None:
    from deconvnet.errors import CaffeFormatError

    text = (
        _input((1, 4, 3, 3))
        + 'layer { name: "n" type: "LRN" bottom: "data" top: "n" lrn_param { local_size: 4 } }'
    )
    with pytest.raises(CaffeFormatError, match="odd"):
        load(write_net(text)[0])


def test_convolution_group_dilation_pad_hw_and_inner_product_axis(write_net) -> None:
    rng = np.random.default_rng(2)
    w1 = rng.standard_normal((6, 2, 3, 2)).astype(np.float32)
    w2 = rng.standard_normal((5, 6 * 4 * 2)).astype(np.float32)
    b2 = rng.standard_normal(5).astype(np.float32)
    text = _input((2, 4, 9, 8)) + (
        'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param {'
        " num_output: 6 group: 2 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 pad_h: 1 pad_w: 0"
        " dilation: 2 bias_term: false } }\n"
        'layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip" '
        "inner_product_param { num_output: 5 } }"
    )
    prototxt, model = write_net(text, {"conv": [w1], "ip": [w2, b2]})
    net, _ = load(prototxt, model)
    x = rng.standard_normal((2, 4, 9, 8))
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
    conv = np.zeros((2, 6, (11 - 5) // 2 + 1, (8 - 3) // 3 + 1))  # dilated extents 5 and 3
    for o in range(6):
        g = o // 3
        for y in range(conv.shape[2]):
            for xx in range(conv.shape[3]):
                patch = xp[:, 2 * g : 2 * g + 2, 2 * y : 2 * y + 5 : 2, 3 * xx : 3 * xx + 3 : 2]
                conv[:, o, y, xx] = (patch * w1[o]).sum(axis=(1, 2, 3))
    blobs = net.forward_blobs(torch.from_numpy(x).float())
    _close(blobs["conv"], conv)
    _close(blobs["ip"], conv.reshape(2, -1) @ w2.T + b2)
    assert isinstance(net.get_submodule("ip"), InnerProduct)
    assert isinstance(net.get_submodule("ip"), nn.Linear)


def test_deconvolution_matches_scatter_definition(write_net) -> None:
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)  # (C_in, O, kh, kw) in Caffe
    text = _input((1, 4, 5, 5)) + (
        'layer { name: "de" type: "Deconvolution" bottom: "data" top: "de" convolution_param {'
        " num_output: 3 kernel_size: 3 stride: 2 pad: 1 bias_term: false } }"
    )
    prototxt, model = write_net(text, {"de": [w]})
    net, _ = load(prototxt, model)
    x = rng.standard_normal((1, 4, 5, 5))
    full = np.zeros((1, 3, 2 * 4 + 3, 2 * 4 + 3))
    for c in range(4):
        for y in range(5):
            for xx in range(5):
                full[0, :, 2 * y : 2 * y + 3, 2 * xx : 2 * xx + 3] += x[0, c, y, xx] * w[c]
    _close(net(torch.from_numpy(x).float()), full[:, :, 1:-1, 1:-1])  # Caffe crops pad


def test_eltwise_concat_split_scale_batchnorm_prelu_flatten_reshape(write_net) -> None:
    rng = np.random.default_rng(4)
    mean, var = rng.standard_normal(3), rng.random(3) + 0.5
    factor = np.array([4.0])
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    slopes = rng.random(3)
    text = (
        _input((2, 3, 4, 4))
        + """
layer { name: "split" type: "Split" bottom: "data" top: "a" top: "b" }
layer { name: "bn" type: "BatchNorm" bottom: "a" top: "bn" batch_norm_param { eps: 0.001 } }
layer { name: "sc" type: "Scale" bottom: "bn" top: "bn" scale_param { bias_term: true } }
layer { name: "pr" type: "PReLU" bottom: "bn" top: "pr" }
layer { name: "sum" type: "Eltwise" bottom: "pr" bottom: "b" top: "sum"
        eltwise_param { operation: SUM coeff: 2 coeff: -0.5 } }
layer { name: "prod" type: "Eltwise" bottom: "sum" bottom: "b" top: "prod"
        eltwise_param { operation: PROD } }
layer { name: "max" type: "Eltwise" bottom: "prod" bottom: "b" top: "max"
        eltwise_param { operation: MAX } }
layer { name: "cat" type: "Concat" bottom: "max" bottom: "b" top: "cat" concat_param { axis: 1 } }
layer { name: "flat" type: "Flatten" bottom: "cat" top: "flat" flatten_param { axis: 2 } }
layer { name: "rs" type: "Reshape" bottom: "flat" top: "rs"
        reshape_param { shape { dim: 0 dim: -1 dim: 8 } } }
layer { name: "sig" type: "Sigmoid" bottom: "rs" top: "sig" }
layer { name: "tanh" type: "TanH" bottom: "rs" top: "tanh" }
layer { name: "soft" type: "Softmax" bottom: "tanh" top: "soft" softmax_param { axis: -1 } }
"""
    )
    blobs = {"bn": [mean * 4, var * 4, factor], "sc": [gamma, beta], "pr": [slopes]}
    prototxt, model = write_net(text, blobs)
    net, _ = load(prototxt, model)
    x = rng.standard_normal((2, 3, 4, 4))
    got = net.forward_blobs(torch.from_numpy(x).float())
    c = (slice(None), None, None)
    bn = (x - mean[c]) / np.sqrt(var[c] + 0.001)
    sc = bn * gamma[c] + beta[c]
    pr = np.where(sc > 0, sc, sc * slopes[c])
    total = 2 * pr - 0.5 * x
    prod = total * x
    biggest = np.maximum(prod, x)
    cat = np.concatenate([biggest, x], axis=1)
    rs = cat.reshape(2, 6, 16).reshape(2, -1, 8)
    tanh = np.tanh(rs)
    soft = np.exp(tanh) / np.exp(tanh).sum(axis=-1, keepdims=True)
    for key, want in [
        ("bn", bn),
        ("sc", sc),
        ("pr", pr),
        ("sum", total),
        ("prod", prod),
        ("max", biggest),
        ("cat", cat),
        ("rs", rs),
        ("sig", 1 / (1 + np.exp(-rs))),
        ("tanh", tanh),
        ("soft", soft),
    ]:
        _close(got[key], want)
    assert set(net.outputs) == {"sig", "soft"}
    assert isinstance(net.get_submodule("pr"), nn.PReLU)


def test_leaky_relu_and_dropout_are_torch_modules(write_net) -> None:
    text = _input((1, 2, 3, 3)) + (
        'layer { name: "r" type: "ReLU" bottom: "data" top: "data"'
        " relu_param { negative_slope: 0.1 } }\n"
        'layer { name: "d" type: "Dropout" bottom: "data" top: "data" }'
    )
    net, _ = load(write_net(text)[0])
    assert isinstance(net.get_submodule("r"), nn.LeakyReLU)
    assert isinstance(net.get_submodule("d"), nn.Dropout)
    x = torch.randn(1, 2, 3, 3)
    torch.testing.assert_close(net(x), torch.where(x > 0, x, 0.1 * x))  # eval: dropout is identity


def test_within_channel_lrn_follows_the_engines_lrn_option() -> None:
    """``lrn="skip"`` passes the signal through Caffe's within-channel LRN unchanged;
    ``"reapply"`` applies the LRN to it; ``"gradient"`` is autograd's."""
    import deconvnet as dn
    from deconvnet.caffe.layers import WithinChannelLRN

    torch.manual_seed(0)
    model = (
        torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 3),
            torch.nn.ReLU(),
            WithinChannelLRN(3, 5e-2, 0.75),
            torch.nn.Conv2d(4, 2, 3),
        )
        .double()
        .eval()
    )
    x = torch.randn(1, 3, 10, 10, dtype=torch.float64) * 10
    with torch.no_grad():
        before_lrn = model[1](model[0](x))
        value = model(x)[0, 1, 3, 3]
    seed = torch.zeros(1, 2, 6, 6, dtype=torch.float64)
    seed[0, 1, 3, 3] = value
    signal = torch.nn.grad.conv2d_input(before_lrn.shape, model[3].weight, seed)
    for lrn, through in (
        ("skip", signal),
        ("reapply", model[2](signal)),
    ):
        expected = torch.nn.grad.conv2d_input(x.shape, model[0].weight, torch.relu(through))
        got = dn.Deconvnet(model, lrn=lrn).project(x, "3", dn.Neuron(1, 3, 3)).images[0, 0]
        assert torch.allclose(got, expected[0], rtol=1e-10, atol=1e-12), lrn
    skipped = dn.Deconvnet(model, lrn="skip").project(x, "3", dn.Neuron(1, 3, 3)).images
    exact = dn.Deconvnet(model, lrn="gradient").project(x, "3", dn.Neuron(1, 3, 3)).images
    assert not torch.allclose(skipped, exact)
