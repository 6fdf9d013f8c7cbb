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
    Transform,
    blob_array,
    net_definition,
    read_caffemodel,
    read_mean_file,
    read_prototxt,
    transform_param,
    weight_blobs,
)
from deconvnet.errors import CaffeFormatError
from deconvnet.inputs.preprocessing import IMAGENET_MEAN_BGR, Preprocessing
from deconvnet.models.card import ModelCard, Provenance, attach
from deconvnet.storage.paths import UnsafePathError, file_inside

LENET_CAFFE_SCALE = 0.00390625
"""LeNet's ``scale: 0.00390625`` (1/256) on 0..255 pixels."""
LENET_SCALE = 255.0 * LENET_CAFFE_SCALE
"""LeNet's scale expressed on [0, 1] pixels."""
PREACT_SUFFIX = "_preact"
"""Alias suffix for a blob's value before the in-place layers that overwrite it."""
MAX_PARAMETERS_WITHOUT_WEIGHTS = 2**28
"""Refuse to allocate randomly initialised nets larger than this (1 GiB of float32)."""
INPUT_TYPES = ("Input",)
CARD_PREFIX = "caffe:"
"""A Caffe net's name in its card's provenance: ``caffe:deploy.prototxt``."""
RANDOM_WEIGHTS = "random"
"""The card's weights for a net read without a caffemodel (torch's initialisation)."""
DATA_TYPES = ("Data", "ImageData", "HDF5Data", "MemoryData", "WindowData", "DummyData")
RGB_CHANNELS, GRAY_CHANNELS, IMAGE_AXES = 3, 1, 4


def default_preprocessing(
    input_shape: tuple[int, ...],
    transform: Transform | None = None,
    mean_image: np.ndarray | None = None,
    mean_source: str | None = None,
) -> Preprocessing:
    """The preprocessing the prototxt implies, with Caffe's ``(pixel - mean) * scale``.

    Size and channel count come from the input shape; ``transform`` (a ``transform_param``,
    see :func:`~deconvnet.caffe.parse.transform_param`) gives scale and mean values;
    ``mean_image`` is a mean file's ``(C, H, W)`` array on 0..255 pixels. Without them,
    3-channel nets get the BVLC ImageNet convention (BGR, 0..255, ImageNet mean pixel) and
    1-channel nets LeNet's (grey pixels / 256). 3-channel nets are fed BGR, Caffe's
    convention for images read with OpenCV; nets trained on RGB data (CIFAR-10's
    ``convert_cifar_data``) need ``channel_order="RGB"`` (the CLI's ``--no-bgr``).
    Other inputs (not 1 or 3 channels) are fed as they are.
    """
    size = (input_shape[-2], input_shape[-1]) if len(input_shape) == IMAGE_AXES else (1, 1)
    channels = input_shape[1] if len(input_shape) == IMAGE_AXES else 0
    if channels not in (RGB_CHANNELS, GRAY_CHANNELS):
        return Preprocessing(size, "none")
    grey = channels == GRAY_CHANNELS
    caffe_scale = transform.scale if transform else (LENET_CAFFE_SCALE if grey else 1.0)
    if transform is not None and transform.mean_value:
        values = transform.mean_value
        mean = values * channels if len(values) == 1 else values
    elif transform is None and mean_image is None and not grey:
        mean = IMAGENET_MEAN_BGR
    else:
        mean = (0.0,) * channels
    if len(mean) != channels:
        raise CaffeFormatError(
            f"transform_param has {len(mean)} mean values for {channels} channels"
        )
    return Preprocessing(
        size,
        "exact",
        channel_order="RGB" if grey else "BGR",
        scale=255.0 * caffe_scale,
        mean=tuple(float(m) * caffe_scale for m in mean),
        channels=channels,
        mean_image=None if mean_image is None else mean_image * np.float32(caffe_scale),
        mean_source=mean_source,
    )


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
    mean_file: str | Path | None = None,
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
        Overrides :func:`default_preprocessing` (read from the prototxt's
        ``transform_param`` and input shape where it has them).
    mean_file
        A ``mean.binaryproto`` to subtract (Caffe's ``mean_file``); default: the one the
        ``transform_param`` names, looked up beside the prototxt.
    strict
        With a caffemodel, a layer that needs weights but has none is an error; with
        ``strict=False`` it keeps torch's initialisation (Caffe would use its fillers).
    device
        Where the parameters live (default CPU).

    Returns
    -------
    (CaffeNet, Preprocessing)
        The net in eval mode (Dropout is the identity, as in Caffe's test phase), with
        ``layer_aliases`` mapping Caffe's blob names to the module whose output Caffe holds
        under that name after the forward pass (see :func:`blob_aliases`), and its
        :class:`~deconvnet.models.card.ModelCard` (that preprocessing, those aliases, the
        files it was read from).
    """
    raw = read_prototxt(prototxt)
    definition = net_definition(raw)
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
    net.layer_aliases = blob_aliases(steps, set(net._modules))
    if preprocessing is None:
        first_input = next(iter(inputs.values()))
        preprocessing = _prototxt_preprocessing(raw, Path(prototxt), first_input, mean_file)
    name = f"{CARD_PREFIX}{Path(prototxt).name}"
    provenance = (
        Provenance.of_file(name, Path(caffemodel))
        if caffemodel is not None
        else Provenance(name, RANDOM_WEIGHTS)
    )
    card = ModelCard(preprocessing=preprocessing, aliases=net.layer_aliases, provenance=provenance)
    return attach(net, card), preprocessing


def _prototxt_preprocessing(
    raw: Any, prototxt: Path, input_shape: tuple[int, ...], mean_file: str | Path | None
) -> Preprocessing:
    transform = transform_param(raw)
    if mean_file is None and transform is not None and transform.mean_file:
        try:  # a name read from a file: only its last part, resolved beside the prototxt
            mean_file = file_inside(prototxt.parent, Path(transform.mean_file).name)
        except UnsafePathError as error:
            raise CaffeFormatError(
                f"the prototxt's transform_param names mean_file {transform.mean_file!a}, "
                f"not a file beside it in {prototxt.parent}; give the file (--mean-file)"
            ) from error
    mean = read_mean_file(mean_file) if mean_file is not None else None
    source = Path(mean_file).name if mean_file is not None else None
    return default_preprocessing(input_shape, transform, mean, source)


def blob_aliases(steps: list[Step], modules: set[str]) -> dict[str, str]:
    """Caffe blob name -> the module whose output Caffe holds under it after the forward.

    A top overwritten in place (``relu3`` on ``conv3``) names the last layer that wrote
    it, as in Caffe; the value before the in-place layers stays reachable as
    ``conv3_preact``. Blobs already named like their module get no alias.
    """
    writers: dict[str, list[str]] = {}
    for step in steps:
        if step.tops:
            writers.setdefault(step.tops[0], []).append(step.module)
    aliases = {blob: mods[-1] for blob, mods in writers.items() if blob != mods[-1]}
    for blob, mods in writers.items():
        preact = blob + PREACT_SUFFIX
        if len(mods) > 1 and preact not in modules and preact not in writers:
            aliases[preact] = mods[0]
    return aliases


def _outputs(inputs: dict[str, Any], steps: list[Step]) -> list[str]:
    """Caffe's net outputs: blobs still available after every layer took its bottoms."""
    available = set(inputs)
    for step in steps:
        available.difference_update(step.bottoms)
        available.update(step.tops)
    return sorted(available)  # Caffe keeps them in a std::set
