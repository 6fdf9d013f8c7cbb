"""Read Caffe files into one format-independent description (V1 and V2 alike).

A prototxt is parsed with ``google.protobuf.text_format`` and a caffemodel with the
binary protobuf parser, both into :data:`schema.NetParameter`. Old ``layers {}`` entries
(enum types, legacy 4-D blob dims) are normalised here so the builder sees one format.
Every failure becomes a one-line :class:`CaffeFormatError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from google.protobuf import message, text_format

from deconvnet.caffe import schema
from deconvnet.errors import CaffeFormatError, InputError
from deconvnet.inputs.reading import read_regular_file

MAX_CAFFE_FILE_BYTES = 2**31 - 1
"""Protocol buffers cannot parse a message of 2 GiB or more; nothing larger is read."""

PHASE_TEST = 1
"""``caffe.Phase.TEST``: a deploy net is instantiated in the test phase."""

# V1 enum name -> the V2 type string Caffe's UpgradeV1LayerType gives it.
V1_TO_V2_TYPE: dict[str, str] = {
    "ABSVAL": "AbsVal",
    "ACCURACY": "Accuracy",
    "ARGMAX": "ArgMax",
    "BNLL": "BNLL",
    "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution",
    "DATA": "Data",
    "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise",
    "EXP": "Exp",
    "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss",
    "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN",
    "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN",
    "POOLING": "Pooling",
    "POWER": "Power",
    "RELU": "ReLU",
    "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence",
    "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "SPLIT": "Split",
    "SLICE": "Slice",
    "TANH": "TanH",
    "WINDOW_DATA": "WindowData",
    "THRESHOLD": "Threshold",
    "NONE": "NONE",
}

LEGACY_BLOB_AXES = 4
"""Old blobs carry exactly num, channels, height, width."""


@dataclass
class LayerDef:
    """One layer as the builder needs it, whatever file format it came from."""

    name: str
    type: str
    bottoms: list[str]
    tops: list[str]
    params: Any  # the LayerParameter or V1LayerParameter message (same *_param fields)


@dataclass
class NetDef:
    """A deploy net: its inputs with shapes, then its layers in file order."""

    name: str
    inputs: dict[str, tuple[int, ...]] = field(default_factory=dict)
    layers: list[LayerDef] = field(default_factory=list)


def _read_bytes(path: str | Path) -> bytes:
    """The file's bytes: a regular file only (a FIFO would block), at most
    :data:`MAX_CAFFE_FILE_BYTES`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Caffe file not found: {path}")
    try:
        return read_regular_file(path, MAX_CAFFE_FILE_BYTES, what="Caffe file")
    except InputError as error:
        raise CaffeFormatError(str(error)) from error


def read_prototxt(path: str | Path) -> Any:
    """Parse a text ``.prototxt`` into a ``NetParameter`` message.

    Fields this importer does not model (fillers, ``param { lr_mult }``, data sources) are
    skipped; misspelt or malformed known fields raise :class:`CaffeFormatError`.
    """
    raw = _read_bytes(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CaffeFormatError(f"{path}: prototxt is not UTF-8 text ({exc.reason})") from None
    net = schema.NetParameter()
    try:
        text_format.Parse(text, net, allow_unknown_field=True)
    except (text_format.ParseError, ValueError, RecursionError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CaffeFormatError(f"{path}: not a valid Caffe prototxt: {reason}") from None
    return net


def read_caffemodel(path: str | Path) -> Any:
    """Parse a binary ``.caffemodel`` into a ``NetParameter`` message."""
    raw = _read_bytes(path)
    net = schema.NetParameter()
    try:
        net.ParseFromString(raw)
    except (message.DecodeError, ValueError, RecursionError) as exc:
        raise CaffeFormatError(f"{path}: not a valid binary caffemodel ({exc})") from None
    return net


def _type_of(layer: Any, legacy: bool) -> str:
    if not legacy:
        return cast(str, layer.type)
    enum_name = schema.V1_TYPE_NAMES.get(layer.type, str(layer.type))
    return V1_TO_V2_TYPE.get(enum_name, enum_name)


def _meets_rule(rule: Any) -> bool:
    """Caffe's ``StateMeetsRule`` for the deploy state (phase TEST, level 0, no stages)."""
    if rule.HasField("phase") and rule.phase != PHASE_TEST:
        return False
    if rule.HasField("min_level") and rule.min_level > 0:
        return False
    if rule.HasField("max_level") and rule.max_level < 0:
        return False
    return not rule.stage  # a required stage is never set in a deploy state


def _included(layer: Any) -> bool:
    """Caffe's ``FilterNet``: include rules need one match, exclude rules need none."""
    if layer.include:
        return any(_meets_rule(rule) for rule in layer.include)
    return not any(_meets_rule(rule) for rule in layer.exclude)


def _checked_shape(dims: list[int], where: str) -> tuple[int, ...]:
    if not dims or any(d < 1 for d in dims):
        raise CaffeFormatError(f"{where}: shape {tuple(dims)} needs positive dimensions")
    return tuple(int(d) for d in dims)


def _header_inputs(net: Any) -> dict[str, tuple[int, ...]]:
    """Inputs declared by the old ``input:`` + ``input_dim:``/``input_shape`` header."""
    names = list(net.input)
    if not names:
        if net.input_dim or net.input_shape:
            raise CaffeFormatError("prototxt gives input_dim/input_shape without 'input:'")
        return {}
    shapes: list[tuple[int, ...]]
    if net.input_shape:
        if len(net.input_shape) != len(names):
            raise CaffeFormatError(
                f"prototxt has {len(names)} inputs but {len(net.input_shape)} input_shape"
            )
        shapes = [
            _checked_shape(list(s.dim), f"input {n!r}")
            for n, s in zip(names, net.input_shape, strict=True)
        ]
    else:
        dims = list(net.input_dim)
        if len(dims) != LEGACY_BLOB_AXES * len(names):
            raise CaffeFormatError(
                f"prototxt has {len(names)} inputs, needs {LEGACY_BLOB_AXES * len(names)} "
                f"input_dim, got {len(dims)}"
            )
        shapes = [
            _checked_shape(dims[i * LEGACY_BLOB_AXES : (i + 1) * LEGACY_BLOB_AXES], f"input {n!r}")
            for i, n in enumerate(names)
        ]
    return dict(zip(names, shapes, strict=True))


def net_definition(net: Any) -> NetDef:
    """Normalise a parsed prototxt (V1 or V2) into a :class:`NetDef` for the test phase."""
    if net.layer and net.layers:
        raise CaffeFormatError("prototxt mixes 'layer' (V2) and 'layers' (V1) entries")
    legacy = bool(net.layers)
    definition = NetDef(name=net.name, inputs=_header_inputs(net))
    for raw in net.layers if legacy else net.layer:
        if not _included(raw):
            continue
        definition.layers.append(
            LayerDef(raw.name, _type_of(raw, legacy), list(raw.bottom), list(raw.top), raw)
        )
    return definition


def blob_shape(blob: Any) -> tuple[int, ...]:
    """A blob's shape: ``shape { dim }`` when given, else the legacy 4-D dims."""
    if blob.HasField("shape"):
        return tuple(int(d) for d in blob.shape.dim)
    return (blob.num, blob.channels, blob.height, blob.width)


def blob_array(blob: Any, expected: tuple[int, ...], where: str) -> np.ndarray:
    """The blob's values as a float32 array of the ``expected`` shape.

    The shape check comes first and compares against the number of values actually
    present, so a forged shape can never trigger a large allocation. Legacy 4-D blobs match
    like Caffe's ``Blob::ShapeEquals``: the expected shape left-padded with ones.
    """
    stored = blob_shape(blob)
    if blob.HasField("shape"):
        matches = stored == expected
    else:
        padded = (1,) * (LEGACY_BLOB_AXES - len(expected)) + expected
        matches = len(expected) <= LEGACY_BLOB_AXES and stored == padded
    if not matches:
        raise CaffeFormatError(
            f"{where}: caffemodel blob has shape {stored}, the prototxt needs {expected}"
        )
    count = math.prod(expected)
    values = blob.data if len(blob.data) else blob.double_data
    if len(values) != count:
        raise CaffeFormatError(
            f"{where}: blob of shape {expected} needs {count} values, caffemodel holds "
            f"{len(values)}"
        )
    array = np.asarray(values, dtype=np.float32).reshape(expected)
    if not np.isfinite(array).all():  # NaN weights would only show up as NaN pictures
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise CaffeFormatError(f"{where}: {bad} of its {count} values are NaN or infinite")
    return array


def weight_blobs(model: Any) -> dict[str, list[Any]]:
    """Layer name -> its blobs, from either layer list of a caffemodel (V2 wins)."""
    blobs: dict[str, list[Any]] = {}
    for layer in list(model.layers) + list(model.layer):
        if layer.blobs:
            blobs[layer.name] = list(layer.blobs)
    return blobs


def read_mean_file(path: str | Path) -> np.ndarray:
    """A ``mean.binaryproto`` (Caffe's ``BlobProto``, from ``compute_image_mean``) as a
    float32 ``(C, H, W)`` array in the channel order and 0..255 scale of the training data."""
    blob = schema.BlobProto()
    try:
        blob.ParseFromString(_read_bytes(path))
    except message.DecodeError as exc:
        raise CaffeFormatError(
            f"{path} is not a Caffe BlobProto (mean.binaryproto): {exc}"
        ) from exc
    shape = blob_shape(blob)
    while len(shape) > 3 and shape[0] == 1:  # (1, C, H, W) -> (C, H, W)
        shape = shape[1:]
    if len(shape) != 3 or min(shape) < 1:
        raise CaffeFormatError(f"{path}: a mean image needs shape (C, H, W), got {shape}")
    values = blob.data if len(blob.data) else blob.double_data
    if len(values) != math.prod(shape):
        raise CaffeFormatError(
            f"{path}: mean of shape {shape} needs {math.prod(shape)} values, has {len(values)}"
        )
    return np.asarray(values, dtype=np.float32).reshape(shape)


def mean_file_bytes(mean: np.ndarray) -> bytes:
    """A ``(C, H, W)`` mean image (0..255, the network's channel order) serialised as the
    ``BlobProto`` of a ``mean.binaryproto``, shape ``(1, C, H, W)``, as Caffe writes it."""
    if mean.ndim != 3 or min(mean.shape) < 1 or not np.isfinite(mean).all():
        raise InputError(f"a mean image needs finite (C, H, W) values, got {mean.shape}")
    blob = schema.BlobProto()
    blob.num, blob.channels, blob.height, blob.width = 1, *mean.shape
    blob.data.extend(np.asarray(mean, dtype=np.float32).ravel().tolist())
    return bytes(blob.SerializeToString())


@dataclass(frozen=True)
class Transform:
    """A ``transform_param`` (Caffe's data layer preprocessing), as the prototxt gives it."""

    scale: float = 1.0
    mean_value: tuple[float, ...] = ()
    mean_file: str | None = None
    crop_size: int = 0


def transform_param(net: Any) -> Transform | None:
    """The ``transform_param`` of the test-phase data layer, if the prototxt has one (a
    train_test prototxt does; a deploy prototxt usually not)."""
    for raw in list(net.layers) + list(net.layer):
        if not _included(raw) or not raw.HasField("transform_param"):
            continue
        param = raw.transform_param
        return Transform(
            scale=float(param.scale) if param.HasField("scale") else 1.0,
            mean_value=tuple(float(v) for v in param.mean_value),
            mean_file=param.mean_file or None,
            crop_size=int(param.crop_size),
        )
    return None
