"""Caffe files that parse but hold parameters no net can run with (issue 11, point 7).

Each is refused when the net is built, with a CaffeFormatError naming the layer and the
field, before anything is allocated; before, they escaped as ValueError, TypeError or
OverflowError, or loaded and then failed in forward or allocated 120 GB.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deconvnet.caffe import build, load
from deconvnet.errors import CaffeFormatError
from deconvnet.faces.cli import main
from tests.caffe.conftest import NetWriter

NET = """name: "ranges"
input: "data"
input_shape {{ dim: 1 dim: 3 dim: {h} dim: {w} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param {{ num_output: {out} kernel_size: {k} stride: {s} pad: {pad} group: {g} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1"
  relu_param {{ negative_slope: {slope} }} }}
layer {{ name: "drop" type: "Dropout" bottom: "conv1" top: "conv1"
  dropout_param {{ dropout_ratio: {ratio} }} }}
layer {{ name: "norm1" type: "LRN" bottom: "conv1" top: "norm1"
  lrn_param {{ local_size: {size} alpha: {alpha} beta: {beta} }} }}
layer {{ name: "pool1" type: "Pooling" bottom: "norm1" top: "pool1"
  pooling_param {{ kernel_size: {pk} stride: {ps} }} }}
layer {{ name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc"
  inner_product_param {{ num_output: {fc} }} }}
"""
GOOD = {
    "h": 32,
    "w": 32,
    "out": 4,
    "k": 3,
    "s": 1,
    "pad": 0,
    "g": 1,
    "slope": 0,
    "ratio": 0.5,
    "size": 5,
    "alpha": 1,
    "beta": 0.75,
    "pk": 2,
    "ps": 2,
    "fc": 10,
}
U32 = 2**32 - 1

CASES = [
    ({"ratio": 1.5}, "'drop' (Dropout): dropout_ratio must be in [0, 1), got 1.5"),
    ({"ratio": 1}, "'drop' (Dropout): dropout_ratio must be in [0, 1)"),
    ({"ratio": -0.25}, "'drop' (Dropout): dropout_ratio must be in [0, 1), got -0.25"),
    ({"ratio": "nan"}, "'drop' (Dropout): dropout_ratio must be in [0, 1), got nan"),
    ({"pad": U32}, "'conv1' (Convolution): pad (4294967295, 4294967295) is over 4096"),
    ({"k": 100000}, "'conv1' (Convolution): kernel (100000, 100000) is over 4096"),
    ({"s": U32}, "'conv1' (Convolution): stride (4294967295, 4294967295) is over 4096"),
    ({"out": 2**31}, "'conv1' (Convolution): num_output 2147483648 is over 1048576"),
    ({"g": U32}, "'conv1' (Convolution): group 4294967295 is over 1048576"),
    ({"slope": "inf"}, "'relu1' (ReLU): negative_slope must be a finite number"),
    ({"size": U32}, "'norm1' (LRN): local_size 4294967295 is over 4096"),
    ({"alpha": "nan"}, "'norm1' (LRN): alpha must be a finite number"),
    ({"beta": "-inf"}, "'norm1' (LRN): beta must be a finite number"),
    ({"pk": U32}, "'pool1' (Pooling): kernel (4294967295, 4294967295) is over 4096"),
    ({"fc": U32}, "'fc' (InnerProduct): num_output 4294967295 is over 1048576"),
    ({"out": 4096, "fc": 100000}, "'fc' (InnerProduct): blob 0 of shape (100000, 921600)"),
    ({"out": 2**20, "h": 64, "w": 64}, "'conv1' (Convolution): top 'conv1' of shape (1, 1048576,"),
    ({"h": 100000, "w": 100000}, "input 'data': input 100000x100000 is over the 16777216-pixel"),
    ({"h": 2**62}, "input 'data': input 4611686018427387904x32 is over the"),
    ({"h": 2**40, "w": 1}, "input 'data': input 1099511627776x1 is over the"),
]


@pytest.mark.parametrize(("change", "message"), CASES, ids=lambda v: str(v)[:40])
def test_out_of_range_fields_name_layer_and_field(
    write_net: NetWriter, change: dict[str, object], message: str
) -> None:
    prototxt, _ = write_net(NET.format(**{**GOOD, **change}))
    with pytest.raises(CaffeFormatError) as caught:
        load(prototxt)
    assert message in str(caught.value)


def test_the_good_net_loads_and_runs(write_net: NetWriter) -> None:
    prototxt, _ = write_net(NET.format(**GOOD))
    net, _ = load(prototxt)
    assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_limits_allow_the_largest_published_settings(write_net: NetWriter) -> None:
    """The bounds are inclusive: a net at them still builds (on the meta device)."""
    at_limit = {**GOOD, "h": 4096, "w": 4096, "k": 11, "s": 4, "pad": 100, "ratio": 0.999}
    prototxt, _ = write_net(NET.format(**at_limit))
    load(prototxt)
    assert build.MAX_INPUT_PIXELS == 4096 * 4096


def test_an_input_layer_is_held_to_the_budget(write_net: NetWriter) -> None:
    prototxt, _ = write_net(
        'layer { name: "in" type: "Input" top: "data" '
        "input_param { shape { dim: 1 dim: 3 dim: 100000 dim: 100000 } } }"
    )
    with pytest.raises(CaffeFormatError, match="Input layer 'in' top 'data': input 100000x"):
        load(prototxt)


def test_the_cli_gives_one_line(write_net: NetWriter, capsys: pytest.CaptureFixture[str]) -> None:
    prototxt, _ = write_net(NET.format(**{**GOOD, "h": 100000, "w": 100000}))
    assert main(["layers", "--caffe", str(prototxt)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("deconvnet: error: input 'data'") and len(err.splitlines()) == 1


def test_non_finite_caffemodel_values_are_refused(write_net: NetWriter) -> None:
    weight = np.ones((2, 3, 3, 3), np.float32)
    weight[1, 2, 0, 0] = np.nan
    weight[0, 0, 1, 1] = np.inf
    prototxt, caffemodel = write_net(
        'input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
        'layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" '
        "convolution_param { num_output: 2 kernel_size: 3 } }",
        {"conv1": [weight, np.zeros(2, np.float32)]},
    )
    with pytest.raises(CaffeFormatError, match=r"'conv1' \(Convolution\) blob 0: 2 of its 54"):
        load(prototxt, caffemodel)
