"""Parsing, format handling and errors: one clean CaffeFormatError per bad input."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from deconvnet.caffe import default_preprocessing, load, read_caffemodel, read_prototxt
from deconvnet.caffe.parse import net_definition
from deconvnet.errors import CaffeFormatError
from deconvnet.inputs.preprocessing import Preprocessing
from tests._fuzz import deadline

CONV_NET = """
name: "tiny"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 2 dim: 5 dim: 5 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        param { lr_mult: 1 } convolution_param { num_output: 3 kernel_size: 3
        weight_filler { type: "xavier" } engine: CAFFE } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
"""
WEIGHTS = [np.ones((3, 2, 3, 3), np.float32), np.arange(3, dtype=np.float32)]


def test_missing_files_raise_file_not_found_with_path(tmp_path: Path, write_net) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.prototxt"):
        load(tmp_path / "nope.prototxt")
    prototxt, _ = write_net(CONV_NET)
    with pytest.raises(FileNotFoundError, match=r"nope\.caffemodel"):
        load(prototxt, tmp_path / "nope.caffemodel")


def test_unknown_training_fields_are_tolerated_and_in_place_relu_runs(write_net) -> None:
    prototxt, model = write_net(CONV_NET, {"conv": WEIGHTS})
    net, _ = load(prototxt, model)
    x = torch.randn(1, 2, 5, 5)
    blobs = net.forward_blobs(x)
    expected = x.sum(dim=1, keepdim=True).unfold(2, 3, 1).unfold(3, 3, 1).sum((-1, -2))
    expected = expected + torch.arange(3.0)[None, :, None, None]
    torch.testing.assert_close(blobs["conv"], expected)
    torch.testing.assert_close(net(x), expected.clamp(min=0))
    assert net.outputs == ("conv",)


def test_v1_legacy_blob_dims_match_like_caffe(write_net) -> None:
    ip = """
input: "data" input_dim: 2 input_dim: 3 input_dim: 2 input_dim: 2
layers { name: "ip" type: INNER_PRODUCT bottom: "data" top: "ip" blobs_lr: 1
         inner_product_param { num_output: 4 } }
layers { name: "prob" type: SOFTMAX bottom: "ip" top: "prob" }
"""
    weight, bias = (
        np.random.default_rng(0).standard_normal((2, 4, 12)).astype(np.float32)[:, :, :12][0],
        np.ones(4, np.float32),
    )
    prototxt, model = write_net(ip, {"ip": [weight, bias]}, legacy=True)  # 1x1x4x12, 1x1x1x4
    net, _ = load(prototxt, model)
    x = torch.randn(2, 3, 2, 2)
    torch.testing.assert_close(
        net(x), torch.softmax(x.flatten(1) @ torch.from_numpy(weight).T + 1, 1)
    )


def test_shape_mismatch_names_both_shapes(write_net) -> None:
    prototxt, model = write_net(CONV_NET, {"conv": [np.ones((3, 2, 5, 5), np.float32), WEIGHTS[1]]})
    with pytest.raises(CaffeFormatError, match=r"\(3, 2, 5, 5\).*\(3, 2, 3, 3\)"):
        load(prototxt, model)


def test_forged_blob_size_is_rejected_before_allocation(
    tmp_path: Path, write_net, caffemodel_writer
) -> None:
    prototxt, _ = write_net(CONV_NET)
    model = caffemodel_writer(tmp_path / "forged.caffemodel", {"conv": WEIGHTS})
    net = read_caffemodel(model)
    net.layer[0].blobs[0].shape.dim[:] = [3, 2, 3, 3]
    del net.layer[0].blobs[0].data[5:]
    model.write_bytes(net.SerializeToString())
    with pytest.raises(CaffeFormatError, match="holds 5"):
        load(prototxt, model)


def test_missing_weights_strict_and_lenient(tmp_path: Path, write_net, caffemodel_writer) -> None:
    prototxt, _ = write_net(CONV_NET)
    empty = caffemodel_writer(tmp_path / "empty.caffemodel", {"other": [np.ones(1, np.float32)]})
    with pytest.raises(CaffeFormatError, match="no weights"):
        load(prototxt, empty)
    net, _ = load(prototxt, empty, strict=False)
    assert net.get_submodule("conv").weight.shape == (3, 2, 3, 3)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("layer { name: 'x' type: 'Convolution' ", "not a valid Caffe prototxt"),
        ("layer { name: 'x' type: 'Python' bottom: 'data' top: 'y' }", "'Python'|Python"),
        ("layer { name: 'c' type: 'ReLU' bottom: 'nothere' top: 'y' }", "nothere"),
        ("layer { name: 'd' type: 'Data' top: 'data' }", "Data"),
    ],
)
def test_bad_prototxts(write_net, text: str, message: str) -> None:
    head = 'input: "data" input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4\n'
    prototxt, _ = write_net(head + text)
    with pytest.raises(CaffeFormatError, match=message):
        load(prototxt)


def test_unsupported_type_names_layer_and_type(write_net) -> None:
    text = (
        'input: "data" input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4\n'
        'layer { name: "py" type: "Python" bottom: "data" top: "y" }'
    )
    with pytest.raises(CaffeFormatError, match=r"'py' \(Python\)"):
        load(write_net(text)[0])


def test_garbage_caffemodel(tmp_path: Path, write_net) -> None:
    prototxt, _ = write_net(CONV_NET)
    junk = tmp_path / "junk.caffemodel"
    junk.write_bytes(b"\xff" * 64)
    with pytest.raises(CaffeFormatError, match="caffemodel"):
        load(prototxt, junk)
    binary = tmp_path / "binary.prototxt"
    binary.write_bytes(b"\x80\x81 not text")
    with pytest.raises(CaffeFormatError, match="UTF-8"):
        read_prototxt(binary)


def test_train_only_layers_are_filtered_as_in_test_phase(write_net) -> None:
    text = (
        CONV_NET
        + """
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "conv" bottom: "label" top: "loss"
        include { phase: TRAIN } }
layer { name: "acc" type: "Accuracy" bottom: "conv" bottom: "label" top: "acc"
        exclude { phase: TEST } }
layer { name: "tdata" type: "Data" top: "data" include { phase: TRAIN }
        transform_param { scale: 0.1 } }
"""
    )
    definition = net_definition(read_prototxt(write_net(text)[0]))
    assert [layer.name for layer in definition.layers] == ["data", "conv", "relu"]
    with_test_loss = text.replace("include { phase: TRAIN } }", "include { phase: TEST } }", 1)
    with pytest.raises(CaffeFormatError, match="SoftmaxWithLoss"):
        load(write_net(with_test_loss)[0])


def test_dotted_names_become_underscores_and_slashes_stay(write_net) -> None:
    text = CONV_NET.replace('name: "relu"', 'name: "fire2/relu.a"')
    net, _ = load(write_net(text)[0])
    assert isinstance(net.get_submodule("fire2/relu_a"), torch.nn.ReLU)
    assert "fire2/relu.a" in net.forward_blobs(torch.zeros(1, 2, 5, 5))


def test_preprocessing_defaults_and_override(write_net) -> None:
    assert default_preprocessing((1, 3, 227, 227)).channel_order == "BGR"
    assert default_preprocessing((1, 3, 227, 227)).scale == 255.0
    assert default_preprocessing((64, 1, 28, 28)).scale == 255 / 256
    custom = Preprocessing((5, 5), "exact", scale=255.0, mean=(127.5,) * 3, std=(128.0,) * 3)
    _, prep = load(write_net(CONV_NET)[0], preprocessing=custom)
    assert prep is custom


def test_huge_random_init_is_refused(write_net) -> None:
    text = CONV_NET.replace("num_output: 3", "num_output: 2000000000")
    with pytest.raises(CaffeFormatError, match=r"num_output 2000000000 is over|refusing"):
        load(write_net(text)[0])


def test_a_fifo_given_as_a_caffe_file_is_refused_at_once(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "net.prototxt")
    with deadline(5.0):
        for read in (read_prototxt, read_caffemodel):
            with pytest.raises(CaffeFormatError, match="FIFO"):
                read(tmp_path / "net.prototxt")
