"""The subset of Caffe's ``caffe.proto`` this importer reads, built at import time.

Field numbers, types and defaults are those of BVLC Caffe's ``src/caffe/proto/caffe.proto``
(only the messages and fields a deploy net needs). Fields not modelled here are skipped by
protobuf when a binary ``.caffemodel`` is parsed, and skipped on request when a
``.prototxt`` is parsed, so training-only settings (fillers, ``lr_mult``, data sources)
never stop a load. The descriptors live in a private pool so they cannot clash with a real
``caffe_pb2`` imported by the same process.
"""

from __future__ import annotations

from typing import cast

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_FDP = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "string": _FDP.TYPE_STRING,
    "float": _FDP.TYPE_FLOAT,
    "double": _FDP.TYPE_DOUBLE,
    "int32": _FDP.TYPE_INT32,
    "int64": _FDP.TYPE_INT64,
    "uint32": _FDP.TYPE_UINT32,
    "uint64": _FDP.TYPE_UINT64,
    "bool": _FDP.TYPE_BOOL,
}
PACKAGE = "caffe"

# (name, number, type, label, default); label: "opt", "rep" or "packed";
# type: a scalar name, "msg:Name" or "enum:Scope.Name".
FieldSpec = tuple[str, int, str, str, str | None]

_FILLER: list[FieldSpec] = [
    ("type", 1, "string", "opt", "constant"),
    ("value", 2, "float", "opt", None),
    ("std", 6, "float", "opt", None),
]
_CONV: list[FieldSpec] = [
    ("num_output", 1, "uint32", "opt", None),
    ("bias_term", 2, "bool", "opt", "true"),
    ("pad", 3, "uint32", "rep", None),
    ("kernel_size", 4, "uint32", "rep", None),
    ("group", 5, "uint32", "opt", "1"),
    ("stride", 6, "uint32", "rep", None),
    ("weight_filler", 7, "msg:FillerParameter", "opt", None),
    ("bias_filler", 8, "msg:FillerParameter", "opt", None),
    ("pad_h", 9, "uint32", "opt", "0"),
    ("pad_w", 10, "uint32", "opt", "0"),
    ("kernel_h", 11, "uint32", "opt", None),
    ("kernel_w", 12, "uint32", "opt", None),
    ("stride_h", 13, "uint32", "opt", None),
    ("stride_w", 14, "uint32", "opt", None),
    ("axis", 16, "int32", "opt", "1"),
    ("dilation", 18, "uint32", "rep", None),
]
_POOL: list[FieldSpec] = [
    ("pool", 1, "enum:PoolingParameter.PoolMethod", "opt", "MAX"),
    ("kernel_size", 2, "uint32", "opt", None),
    ("stride", 3, "uint32", "opt", "1"),
    ("pad", 4, "uint32", "opt", "0"),
    ("kernel_h", 5, "uint32", "opt", None),
    ("kernel_w", 6, "uint32", "opt", None),
    ("stride_h", 7, "uint32", "opt", None),
    ("stride_w", 8, "uint32", "opt", None),
    ("pad_h", 9, "uint32", "opt", "0"),
    ("pad_w", 10, "uint32", "opt", "0"),
    ("global_pooling", 12, "bool", "opt", "false"),
    ("round_mode", 13, "enum:PoolingParameter.RoundMode", "opt", "CEIL"),
]
_LRN: list[FieldSpec] = [
    ("local_size", 1, "uint32", "opt", "5"),
    ("alpha", 2, "float", "opt", "1"),
    ("beta", 3, "float", "opt", "0.75"),
    ("norm_region", 4, "enum:LRNParameter.NormRegion", "opt", "ACROSS_CHANNELS"),
    ("k", 5, "float", "opt", "1"),
]
_NET_STATE_RULE: list[FieldSpec] = [
    ("phase", 1, "enum:Phase", "opt", None),
    ("min_level", 2, "int32", "opt", None),
    ("max_level", 3, "int32", "opt", None),
    ("stage", 4, "string", "rep", None),
    ("not_stage", 5, "string", "rep", None),
]
_TRANSFORM: list[FieldSpec] = [
    ("scale", 1, "float", "opt", "1"),
    ("mirror", 2, "bool", "opt", "false"),
    ("crop_size", 3, "uint32", "opt", "0"),
    ("mean_file", 4, "string", "opt", None),
    ("mean_value", 5, "float", "rep", None),
]

# The layer-specific parameter messages both layer formats share: field name -> message.
_PARAM_MESSAGES: dict[str, list[FieldSpec]] = {
    "FillerParameter": _FILLER,
    "ConvolutionParameter": _CONV,
    "PoolingParameter": _POOL,
    "LRNParameter": _LRN,
    "InnerProductParameter": [
        ("num_output", 1, "uint32", "opt", None),
        ("bias_term", 2, "bool", "opt", "true"),
        ("weight_filler", 3, "msg:FillerParameter", "opt", None),
        ("bias_filler", 4, "msg:FillerParameter", "opt", None),
        ("axis", 5, "int32", "opt", "1"),
        ("transpose", 6, "bool", "opt", "false"),
    ],
    "ReLUParameter": [("negative_slope", 1, "float", "opt", "0")],
    "PReLUParameter": [
        ("filler", 1, "msg:FillerParameter", "opt", None),
        ("channel_shared", 2, "bool", "opt", "false"),
    ],
    "DropoutParameter": [("dropout_ratio", 1, "float", "opt", "0.5")],
    "SoftmaxParameter": [("axis", 2, "int32", "opt", "1")],
    "ConcatParameter": [
        ("concat_dim", 1, "uint32", "opt", "1"),
        ("axis", 2, "int32", "opt", "1"),
    ],
    "EltwiseParameter": [
        ("operation", 1, "enum:EltwiseParameter.EltwiseOp", "opt", "SUM"),
        ("coeff", 2, "float", "rep", None),
        ("stable_prod_grad", 3, "bool", "opt", "true"),
    ],
    "FlattenParameter": [
        ("axis", 1, "int32", "opt", "1"),
        ("end_axis", 2, "int32", "opt", "-1"),
    ],
    "ReshapeParameter": [
        ("shape", 1, "msg:BlobShape", "opt", None),
        ("axis", 2, "int32", "opt", "0"),
        ("num_axes", 3, "int32", "opt", "-1"),
    ],
    "BatchNormParameter": [
        ("use_global_stats", 1, "bool", "opt", None),
        ("moving_average_fraction", 2, "float", "opt", "0.999"),
        ("eps", 3, "float", "opt", "1e-5"),
    ],
    "ScaleParameter": [
        ("axis", 1, "int32", "opt", "1"),
        ("num_axes", 2, "int32", "opt", "1"),
        ("filler", 3, "msg:FillerParameter", "opt", None),
        ("bias_term", 4, "bool", "opt", "false"),
        ("bias_filler", 5, "msg:FillerParameter", "opt", None),
    ],
    "InputParameter": [("shape", 1, "msg:BlobShape", "rep", None)],
    "TransformationParameter": _TRANSFORM,
}

# Field numbers of those messages inside LayerParameter (V2) and V1LayerParameter.
_V2_PARAM_FIELDS: dict[str, tuple[str, int]] = {
    "transform_param": ("TransformationParameter", 100),
    "batch_norm_param": ("BatchNormParameter", 139),
    "concat_param": ("ConcatParameter", 104),
    "convolution_param": ("ConvolutionParameter", 106),
    "dropout_param": ("DropoutParameter", 108),
    "eltwise_param": ("EltwiseParameter", 110),
    "flatten_param": ("FlattenParameter", 135),
    "inner_product_param": ("InnerProductParameter", 117),
    "input_param": ("InputParameter", 143),
    "lrn_param": ("LRNParameter", 118),
    "pooling_param": ("PoolingParameter", 121),
    "prelu_param": ("PReLUParameter", 131),
    "relu_param": ("ReLUParameter", 123),
    "reshape_param": ("ReshapeParameter", 133),
    "scale_param": ("ScaleParameter", 142),
    "softmax_param": ("SoftmaxParameter", 125),
}
_V1_PARAM_FIELDS: dict[str, tuple[str, int]] = {
    "concat_param": ("ConcatParameter", 9),
    "convolution_param": ("ConvolutionParameter", 10),
    "dropout_param": ("DropoutParameter", 12),
    "eltwise_param": ("EltwiseParameter", 24),
    "inner_product_param": ("InnerProductParameter", 17),
    "lrn_param": ("LRNParameter", 18),
    "pooling_param": ("PoolingParameter", 19),
    "relu_param": ("ReLUParameter", 30),
    "softmax_param": ("SoftmaxParameter", 39),
    "transform_param": ("TransformationParameter", 36),
}

V1_LAYER_TYPES: dict[str, int] = {
    "NONE": 0,
    "ACCURACY": 1,
    "BNLL": 2,
    "CONCAT": 3,
    "CONVOLUTION": 4,
    "DATA": 5,
    "DROPOUT": 6,
    "EUCLIDEAN_LOSS": 7,
    "FLATTEN": 8,
    "HDF5_DATA": 9,
    "HDF5_OUTPUT": 10,
    "IM2COL": 11,
    "IMAGE_DATA": 12,
    "INFOGAIN_LOSS": 13,
    "INNER_PRODUCT": 14,
    "LRN": 15,
    "MULTINOMIAL_LOGISTIC_LOSS": 16,
    "POOLING": 17,
    "RELU": 18,
    "SIGMOID": 19,
    "SOFTMAX": 20,
    "SOFTMAX_LOSS": 21,
    "SPLIT": 22,
    "TANH": 23,
    "WINDOW_DATA": 24,
    "ELTWISE": 25,
    "POWER": 26,
    "SIGMOID_CROSS_ENTROPY_LOSS": 27,
    "HINGE_LOSS": 28,
    "MEMORY_DATA": 29,
    "ARGMAX": 30,
    "THRESHOLD": 31,
    "DUMMY_DATA": 32,
    "SLICE": 33,
    "MVN": 34,
    "ABSVAL": 35,
    "SILENCE": 36,
    "CONTRASTIVE_LOSS": 37,
    "EXP": 38,
    "DECONVOLUTION": 39,
}
"""V1LayerParameter.LayerType: enum name -> value (Caffe's numbering)."""

_ENUMS: dict[str, dict[str, int]] = {
    "Phase": {"TRAIN": 0, "TEST": 1},
    "PoolingParameter.PoolMethod": {"MAX": 0, "AVE": 1, "STOCHASTIC": 2},
    "PoolingParameter.RoundMode": {"CEIL": 0, "FLOOR": 1},
    "LRNParameter.NormRegion": {"ACROSS_CHANNELS": 0, "WITHIN_CHANNEL": 1},
    "EltwiseParameter.EltwiseOp": {"PROD": 0, "SUM": 1, "MAX": 2},
    "V1LayerParameter.LayerType": V1_LAYER_TYPES,
}


def _param_specs(fields: dict[str, tuple[str, int]]) -> list[FieldSpec]:
    """One optional message field per ``name: (message, number)`` entry."""
    return [(f, n, "msg:" + m, "opt", None) for f, (m, n) in fields.items()]


_CORE_MESSAGES: dict[str, list[FieldSpec]] = {
    "BlobShape": [("dim", 1, "int64", "packed", None)],
    "BlobProto": [
        ("num", 1, "int32", "opt", "0"),
        ("channels", 2, "int32", "opt", "0"),
        ("height", 3, "int32", "opt", "0"),
        ("width", 4, "int32", "opt", "0"),
        ("data", 5, "float", "packed", None),
        ("diff", 6, "float", "packed", None),
        ("shape", 7, "msg:BlobShape", "opt", None),
        ("double_data", 8, "double", "packed", None),
        ("double_diff", 9, "double", "packed", None),
    ],
    "NetState": [
        ("phase", 1, "enum:Phase", "opt", "TEST"),
        ("level", 2, "int32", "opt", "0"),
        ("stage", 3, "string", "rep", None),
    ],
    "NetStateRule": _NET_STATE_RULE,
    "ParamSpec": [
        ("name", 1, "string", "opt", None),
        ("lr_mult", 3, "float", "opt", "1"),
        ("decay_mult", 4, "float", "opt", "1"),
    ],
    "LayerParameter": [
        ("name", 1, "string", "opt", None),
        ("type", 2, "string", "opt", None),
        ("bottom", 3, "string", "rep", None),
        ("top", 4, "string", "rep", None),
        ("loss_weight", 5, "float", "rep", None),
        ("param", 6, "msg:ParamSpec", "rep", None),
        ("blobs", 7, "msg:BlobProto", "rep", None),
        ("include", 8, "msg:NetStateRule", "rep", None),
        ("exclude", 9, "msg:NetStateRule", "rep", None),
        ("phase", 10, "enum:Phase", "opt", None),
        ("propagate_down", 11, "bool", "rep", None),
        *_param_specs(_V2_PARAM_FIELDS),
    ],
    "V1LayerParameter": [
        ("bottom", 2, "string", "rep", None),
        ("top", 3, "string", "rep", None),
        ("name", 4, "string", "opt", None),
        ("type", 5, "enum:V1LayerParameter.LayerType", "opt", None),
        ("blobs", 6, "msg:BlobProto", "rep", None),
        ("blobs_lr", 7, "float", "rep", None),
        ("weight_decay", 8, "float", "rep", None),
        ("include", 32, "msg:NetStateRule", "rep", None),
        ("exclude", 33, "msg:NetStateRule", "rep", None),
        ("loss_weight", 35, "float", "rep", None),
        ("param", 1001, "string", "rep", None),
        *_param_specs(_V1_PARAM_FIELDS),
    ],
    "NetParameter": [
        ("name", 1, "string", "opt", None),
        ("layers", 2, "msg:V1LayerParameter", "rep", None),
        ("input", 3, "string", "rep", None),
        ("input_dim", 4, "int32", "rep", None),
        ("force_backward", 5, "bool", "opt", "false"),
        ("state", 6, "msg:NetState", "opt", None),
        ("debug_info", 7, "bool", "opt", "false"),
        ("input_shape", 8, "msg:BlobShape", "rep", None),
        ("layer", 100, "msg:LayerParameter", "rep", None),
    ],
}


def _add_field(message: descriptor_pb2.DescriptorProto, spec: FieldSpec) -> None:
    name, number, kind, label, default = spec
    field = message.field.add(name=name, number=number)
    field.label = _FDP.LABEL_OPTIONAL if label == "opt" else _FDP.LABEL_REPEATED
    if label == "packed":
        field.options.packed = True
    if kind.startswith("msg:"):
        field.type = _FDP.TYPE_MESSAGE
        field.type_name = f".{PACKAGE}.{kind[4:]}"
    elif kind.startswith("enum:"):
        field.type = _FDP.TYPE_ENUM
        field.type_name = f".{PACKAGE}.{kind[5:]}"
    else:
        field.type = _SCALARS[kind]
    if default is not None:
        field.default_value = default


def _build_file() -> descriptor_pb2.FileDescriptorProto:
    file_proto = descriptor_pb2.FileDescriptorProto(
        name="deconvnet_caffe_subset.proto", package=PACKAGE, syntax="proto2"
    )
    messages: dict[str, descriptor_pb2.DescriptorProto] = {}
    for name, fields in {**_CORE_MESSAGES, **_PARAM_MESSAGES}.items():
        message = file_proto.message_type.add(name=name)
        for spec in fields:
            _add_field(message, spec)
        messages[name] = message
    for scoped_name, values in _ENUMS.items():
        scope, _, enum_name = scoped_name.rpartition(".")
        owner = messages[scope] if scope else file_proto
        enum = (owner.enum_type if scope else file_proto.enum_type).add(name=enum_name)
        for value_name, number in values.items():
            enum.value.add(name=value_name, number=number)
    return file_proto


_POOL_INSTANCE = descriptor_pool.DescriptorPool()
_POOL_INSTANCE.Add(_build_file())


def _message_class(name: str) -> type:
    descriptor = _POOL_INSTANCE.FindMessageTypeByName(f"caffe.{name}")
    return cast(type, message_factory.GetMessageClass(descriptor))


NetParameter = _message_class("NetParameter")
"""``caffe.NetParameter`` (both the prototxt and the caffemodel are one of these)."""
BlobProto = _message_class("BlobProto")
BlobShape = _message_class("BlobShape")
V1_TYPE_NAMES: dict[int, str] = {number: name for name, number in V1_LAYER_TYPES.items()}
