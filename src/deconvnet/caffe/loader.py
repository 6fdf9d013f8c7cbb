"""``load``: a Caffe prototxt (+ caffemodel) as a :class:`CaffeNet` and its preprocessing."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deconvnet.caffe import build
from deconvnet.caffe.network import CaffeNet, Step
from deconvnet.caffe.parse import (
    LayerDef,
    blob_array,
    net_definition,
    read_caffemodel,
    read_prototxt,
    weight_blobs,
)
from deconvnet.errors import CaffeFormatError
from deconvnet.inputs.preprocessing import Preprocessing

IMAGENET_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
"""Mean pixel of Caffe's ``ilsvrc_2012_mean.npy`` (mean over H and W), B, G, R, 0..255."""
LENET_SCALE = 255.0 * 0.00390625
"""LeNet's ``scale: 0.00390625`` on 0..255 pixels, expressed on [0, 1] pixels."""
MAX_PARAMETERS_WITHOUT_WEIGHTS = 2**28
"""Refuse to allocate randomly initialised nets larger than this (1 GiB of float32)."""
INPUT_TYPES = ("Input",)
DATA_TYPES = ("Data", "ImageData", "HDF5Data", "MemoryData", "WindowData", "DummyData")
RGB_CHANNELS, GRAY_CHANNELS, IMAGE_AXES = 3, 1, 4


def default_preprocessing(input_shape: tuple[int, ...]) -> Preprocessing:
    """The preprocessing a deploy prototxt implies, which is little: it records none.

    3-channel nets get the BVLC ImageNet convention (BGR, 0..255, ImageNet mean pixel);
    1-channel nets LeNet's (pixels / 256, one grey channel: convert images to grey first).
    Other nets (CIFAR-10 mean image, MTCNN's (x - 127.5) / 128) need ``preprocessing=``.
    """
    size = (input_shape[-2], input_shape[-1]) if len(input_shape) == IMAGE_AXES else (1, 1)
    channels = input_shape[1] if len(input_shape) == IMAGE_AXES else 0
    if channels == RGB_CHANNELS:
        return Preprocessing(
            size, "exact", channel_order="BGR", scale=255.0, mean=IMAGENET_MEAN_BGR
        )
    if channels == GRAY_CHANNELS:
        return Preprocessing(size, "exact", scale=LENET_SCALE)
    return Preprocessing(size, "none")


def _module_name(layer: str, index: int, taken: set[str], net: nn.Module) -> str:
    name = (layer or f"layer{index}").replace(".", "_")
    if hasattr(net, name) and name not in taken:  # e.g. a layer called "forward"
        name += "_"
    if name in taken:
        raise CaffeFormatError(f"duplicate layer name {layer!r} in the prototxt")
    taken.add(name)
    return name


def _check_arity(layer: LayerDef) -> None:
    low_b, high_b, low_t, high_t = build.ARITY.get(layer.type, build.DEFAULT_ARITY)
    nb, nt = len(layer.bottoms), len(layer.tops)
    if nb < low_b or (high_b is not None and nb > high_b):
        raise CaffeFormatError(f"layer {layer.name!r} ({layer.type}) cannot take {nb} bottom(s)")
    if nt < low_t or (high_t is not None and nt > high_t):
        raise CaffeFormatError(f"layer {layer.name!r} ({layer.type}) cannot have {nt} top(s)")


def _input_layer(layer: LayerDef, shapes: dict[str, tuple[int, ...]]) -> None:
    declared = list(layer.params.input_param.shape)
    if len(declared) not in (1, len(layer.tops)) or not layer.tops:
        raise CaffeFormatError(f"Input layer {layer.name!r} needs one shape or one per top")
    for index, top in enumerate(layer.tops):
        dims = tuple(int(d) for d in declared[index if len(declared) > 1 else 0].dim)
        if not dims or min(dims) < 1:
            raise CaffeFormatError(f"Input layer {layer.name!r}: shape {dims} needs dims >= 1")
        build.check_input(f"Input layer {layer.name!r} top {top!r}", dims)
        shapes[top] = dims


def _fill(module: nn.Module, built: build.Built, arrays: list[np.ndarray]) -> None:
    """Copy a layer's Caffe blobs into its (already allocated) module."""
    with torch.no_grad():
        values = dict(zip(built.targets, arrays, strict=True))
        if "scale_factor" in values:  # Caffe BatchNorm stores sums and their weight
            factor = float(values.pop("scale_factor").reshape(-1)[0])
            factor = 0.0 if factor == 0 else 1.0 / factor
            values = {k: v * factor for k, v in values.items()}
        for target, array in values.items():
            tensor = torch.from_numpy(
                array.T.copy() if target == "weight" and built.transposed_weight else array
            )
            getattr(module, target).copy_(tensor.reshape(getattr(module, target).shape))


def _materialize(module: nn.Module, device: torch.device | str) -> nn.Module:
    """Give a module built on the meta device real, uninitialised storage.

    Equivalent to ``module.to_empty(device=...)``, which is avoided because its first call
    imports sympy (about a second).
    """
    for sub in module.modules():
        for name, param in sub._parameters.items():
            if param is not None:
                empty = torch.empty(param.shape, dtype=param.dtype, device=device)
                sub._parameters[name] = nn.Parameter(empty, requires_grad=param.requires_grad)
        for name, buffer in sub._buffers.items():
            if buffer is not None:
                sub._buffers[name] = torch.zeros(buffer.shape, dtype=buffer.dtype, device=device)
    return module


def _reset(module: nn.Module) -> None:
    for sub in module.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()


def load(
    prototxt: str | Path,
    caffemodel: str | Path | None = None,
    *,
    preprocessing: Preprocessing | None = None,
    strict: bool = True,
    device: torch.device | str | None = None,
) -> tuple[CaffeNet, Preprocessing]:
    """Load a Caffe deploy net (V1 or V2 text and binary formats) without Caffe.

    Parameters
    ----------
    prototxt
        The deploy ``.prototxt``. Layers are kept as Caffe's test phase keeps them
        (``include``/``exclude`` rules); Data, loss and other unsupported layers that
        remain raise :class:`CaffeFormatError` naming the layer and its type.
    caffemodel
        Trained weights, matched to layers by name. Without it parameters are randomly
        initialised (torch defaults).
    preprocessing
        Overrides :func:`default_preprocessing` (a prototxt does not record it).
    strict
        With a caffemodel, a layer that needs weights but has none is an error; with
        ``strict=False`` it keeps torch's initialisation (Caffe would use its fillers).
    device
        Where the parameters live (default CPU).

    Returns
    -------
    (CaffeNet, Preprocessing)
        The net in eval mode (Dropout is the identity, as in Caffe's test phase).
    """
    definition = net_definition(read_prototxt(prototxt))
    model_blobs = weight_blobs(read_caffemodel(caffemodel)) if caffemodel is not None else {}
    for blob, shape in definition.inputs.items():
        build.check_input(f"input {blob!r}", shape)
    shapes: dict[str, tuple[int, ...]] = dict(definition.inputs)
    inputs = dict(definition.inputs)
    steps: list[Step] = []
    pending: list[tuple[str, nn.Module, build.Built, list[np.ndarray] | None]] = []
    taken: set[str] = set()
    net = CaffeNet([], {}, [], definition.name)
    total_parameters = 0
    with torch.device("meta"):
        for index, layer in enumerate(definition.layers):
            if layer.type in INPUT_TYPES:
                _input_layer(layer, shapes)
                inputs.update({top: shapes[top] for top in layer.tops})
                continue
            where = f"layer {layer.name!r} ({layer.type})"
            if layer.type in DATA_TYPES:
                raise CaffeFormatError(
                    f"{where} reads training data; use a deploy prototxt with an Input layer"
                )
            builder = build.BUILDERS.get(layer.type)
            if builder is None:
                raise CaffeFormatError(
                    f"{where}: unsupported layer type; supported: {sorted(build.BUILDERS)}"
                )
            _check_arity(layer)
            missing = [b for b in layer.bottoms if b not in shapes]
            if missing:
                raise CaffeFormatError(
                    f"{where}: bottom blob {missing[0]!r} is not produced by any earlier layer"
                )
            built = builder(layer, [shapes[b] for b in layer.bottoms])
            for top, top_shape in zip(layer.tops, built.tops, strict=True):
                build.check_blob(where, f"top {top!r}", top_shape)
            for i, blob_shape in enumerate(built.blob_shapes):
                build.check_blob(where, f"blob {i}", blob_shape)
            arrays: list[np.ndarray] | None = None
            blobs = model_blobs.get(layer.name)
            if built.blob_shapes and blobs is not None:
                if len(blobs) != len(built.blob_shapes):
                    raise CaffeFormatError(
                        f"{where}: caffemodel has {len(blobs)} blobs, "
                        f"the prototxt needs {len(built.blob_shapes)}"
                    )
                arrays = [
                    blob_array(b, s, f"{where} blob {i}")
                    for i, (b, s) in enumerate(zip(blobs, built.blob_shapes, strict=True))
                ]
            elif built.blob_shapes and caffemodel is not None and strict:
                raise CaffeFormatError(f"{where}: no weights for this layer in {caffemodel}")
            else:
                total_parameters += sum(math.prod(s) for s in built.blob_shapes)
            if total_parameters > MAX_PARAMETERS_WITHOUT_WEIGHTS:
                raise CaffeFormatError(
                    f"{where}: over {MAX_PARAMETERS_WITHOUT_WEIGHTS} parameters without "
                    "weights; refusing to allocate"
                )
            name = _module_name(layer.name, index, taken, net)
            for top, top_shape in zip(layer.tops, built.tops, strict=True):
                shapes[top] = top_shape
            steps.append(
                Step(layer.name, name, tuple(layer.bottoms), tuple(layer.tops), built.kind)
            )
            pending.append((name, built.module, built, arrays))
    if not inputs:
        raise CaffeFormatError(
            f"{prototxt}: the net declares no input (Input layer or input: header)"
        )
    net = CaffeNet(steps, inputs, _outputs(inputs, steps), definition.name)
    for name, module, built, arrays in pending:
        module = _materialize(module, device or "cpu")
        if arrays is not None:
            _fill(module, built, arrays)
        else:
            _reset(module)
        net.add_module(name, module)
    net.eval()
    first_input = next(iter(inputs.values()))
    return net, preprocessing or default_preprocessing(first_input)


def _outputs(inputs: dict[str, Any], steps: list[Step]) -> list[str]:
    """Caffe's net outputs: blobs still available after every layer took its bottoms."""
    available = set(inputs)
    for step in steps:
        available.difference_update(step.bottoms)
        available.update(step.tops)
    return sorted(available)  # Caffe keeps them in a std::set
