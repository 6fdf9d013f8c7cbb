"""Named groups of torch functions and module classes, so rule tables read like tables.

Functional forms matter: a rule attached to ``nn.ReLU`` alone misses ``F.relu``,
``torch.relu`` and ``x.relu_()`` (Captum's known trap), so rectifiers are caught at the
function level, where every form passes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deconvnet.caffe.layers import WithinChannelLRN

TorchFunction = Callable[..., Any]
_ATEN = torch.ops.aten
"""ATen ops appear directly in the graphs of ``torch.export`` archives (``.pt2``)."""

RELU: frozenset[TorchFunction] = frozenset(
    {
        F.relu,
        torch.relu,
        torch.relu_,
        torch.Tensor.relu,
        torch.Tensor.relu_,
        _ATEN.relu.default,
        _ATEN.relu_.default,
    }
)
RELU_INPLACE: frozenset[TorchFunction] = frozenset(
    {torch.relu_, torch.Tensor.relu_, _ATEN.relu_.default}
)
LEAKY_RELU: frozenset[TorchFunction] = frozenset({F.leaky_relu, _ATEN.leaky_relu.default})
PRELU: frozenset[TorchFunction] = frozenset({F.prelu, torch.prelu, _ATEN.prelu.default})
HARDTANH: frozenset[TorchFunction] = frozenset({F.hardtanh, F.relu6, _ATEN.hardtanh.default})
THRESHOLD: frozenset[TorchFunction] = frozenset({F.threshold, torch.threshold})

SMOOTH_ACTIVATIONS: frozenset[TorchFunction] = frozenset(
    {
        F.elu,
        F.selu,
        F.celu,
        F.gelu,
        F.silu,
        F.mish,
        F.softplus,
        F.hardswish,
        F.hardsigmoid,
        F.logsigmoid,
        F.softsign,
        F.tanhshrink,
        F.glu,
        F.softmax,
        F.log_softmax,
        torch.softmax,
        torch.log_softmax,
        torch.Tensor.softmax,
        torch.Tensor.log_softmax,
        torch.sigmoid,
        torch.Tensor.sigmoid,
        F.sigmoid,
        torch.tanh,
        torch.Tensor.tanh,
        F.tanh,
        _ATEN.sigmoid.default,
        _ATEN.tanh.default,
        _ATEN.gelu.default,
        _ATEN.silu.default,
        _ATEN.elu.default,
        _ATEN.softplus.default,
        _ATEN.hardswish.default,
        _ATEN.hardsigmoid.default,
        _ATEN.mish.default,
    }
)
"""Activations without a deconvnet or guided rule: an error under those rules."""

LOCAL_RESPONSE_NORM: frozenset[TorchFunction] = frozenset({F.local_response_norm})

MAX_POOL: dict[TorchFunction, TorchFunction] = {
    F.max_pool1d: F.max_pool1d_with_indices,
    F.max_pool2d: F.max_pool2d_with_indices,
    F.max_pool3d: F.max_pool3d_with_indices,
    F.max_pool1d_with_indices: F.max_pool1d_with_indices,
    F.max_pool2d_with_indices: F.max_pool2d_with_indices,
    F.max_pool3d_with_indices: F.max_pool3d_with_indices,
    torch.max_pool1d: F.max_pool1d_with_indices,
    torch.max_pool2d: F.max_pool2d_with_indices,
    _ATEN.max_pool2d.default: F.max_pool2d_with_indices,
    torch.max_pool3d: F.max_pool3d_with_indices,
    F.adaptive_max_pool1d: F.adaptive_max_pool1d_with_indices,
    F.adaptive_max_pool2d: F.adaptive_max_pool2d_with_indices,
    F.adaptive_max_pool3d: F.adaptive_max_pool3d_with_indices,
    F.adaptive_max_pool1d_with_indices: F.adaptive_max_pool1d_with_indices,
    F.adaptive_max_pool2d_with_indices: F.adaptive_max_pool2d_with_indices,
    F.adaptive_max_pool3d_with_indices: F.adaptive_max_pool3d_with_indices,
}
"""Every max-pool entry point a TorchFunctionMode sees, mapped to the variant with indices."""

MAX_POOL_ALWAYS_INDICES: frozenset[TorchFunction] = frozenset(
    {
        F.max_pool1d_with_indices,
        F.max_pool2d_with_indices,
        F.max_pool3d_with_indices,
        F.adaptive_max_pool1d_with_indices,
        F.adaptive_max_pool2d_with_indices,
        F.adaptive_max_pool3d_with_indices,
    }
)

LRN_MODULES: tuple[type[nn.Module], ...] = (nn.CrossMapLRN2d, WithinChannelLRN)
"""Normalisation modules handled as a whole (they do not call ``F.local_response_norm``):
torch's cross-map LRN and the Caffe importer's within-channel LRN."""
