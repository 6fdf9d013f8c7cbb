"""Normalisations: BatchNorm, local response normalisation, dropout, and the normalisations
with per-sample statistics (LayerNorm, GroupNorm, InstanceNorm, RMSNorm).

Eval-mode BatchNorm is a fixed per-channel affine map: its reverse scales the signal by
``γ/σ`` (and folds into a neighbouring convolution's filters where it can). The paper does
not say what the deconvnet does at an LRN layer: the policy's LRN mode decides (skip it,
its exact gradient, or re-apply it to the signal as the old Caffe demo did). Eval-mode
dropout is the identity.

A normalisation whose statistics come from the sample itself (LayerNorm, timm's
LayerNorm2d, GroupNorm, InstanceNorm, RMSNorm, BatchNorm given no running statistics) is
not a fixed map: its gradient mixes the sample's units through μ and σ. Under
``activations="relu-like"`` the rectifying rules freeze the statistics: the layer is the
per-sample affine map ``x ↦ (x − μ)/σ·γ + β`` with μ and σ constants, so the signal is
scaled by ``γ/σ``, as at an eval-mode BatchNorm. Under ``"strict"`` they are refused; the
gradient rule takes autograd's exact gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deconvnet.caffe.layers import WithinChannelLRN
from deconvnet.engine.ops import op
from deconvnet.engine.ops.arguments import aten, spatial, spellings
from deconvnet.engine.ops.refusal import refuse, without_input
from deconvnet.engine.rules import Frozen, PassThrough, Reapply, ReversePolicy, apply_rule
from deconvnet.engine.window import Window, crop

BN_ARGS = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
BN_EPS = 1e-5
LRN_ARGS = ("input", "size", "alpha", "beta", "k")
LOW_PRECISION = (torch.float16, torch.bfloat16)


class BatchNorm(op.Op[dict[str, Any]]):
    """``F.batch_norm`` in eval mode: a per-channel scale ``γ/σ`` on the way down. Given no
    running statistics (or ``training=True``) it normalises by the batch's own: a
    normalisation with per-sample statistics (frozen under ``activations="relu-like"``)."""

    functions = frozenset({F.batch_norm})

    def parse(self, raw: op.TorchCall) -> dict[str, Any]:
        return raw.bind(BN_ARGS)

    def rewires(self, policy: ReversePolicy, switches: bool) -> bool:
        return not policy.reverse_rule.is_gradient

    def rewire(self, call: dict[str, Any], raw: op.TorchCall, mode: op.Rewiring) -> Any:
        x = call.get("input")
        if not isinstance(x, Tensor) or not (
            call.get("training", False) or call.get("running_var") is None
        ):
            return raw.run()
        dims = tuple(d for d in range(x.dim()) if d != 1)
        weight = call.get("weight")

        def scale_of(tensor: Tensor) -> Tensor:
            return _rstd(tensor, dims, call.get("eps", BN_EPS)) * _per_channel(weight, tensor)

        return frozen_statistics(raw, mode, scale_of)

    def node(self, call: dict[str, Any], recording: op.Recording, before: Any) -> op.Node:
        source = recording.source(call.get("input"))
        if not spatial(call.get("input")):
            raise op.Opaque
        running_var, weight = call.get("running_var"), call.get("weight")
        recording.constant(call.get("running_mean"), running_var, weight, call.get("bias"))
        if call.get("training", False) or running_var is None:
            raise op.Opaque  # batch statistics mix the batch and the window
        scale = 1 / torch.sqrt(running_var.detach() + call.get("eps", BN_EPS))
        if weight is not None:
            scale = scale * weight.detach()
        return ScaleNode((source,), scale=scale.view(1, -1, 1, 1))


@dataclass(eq=False)
class ScaleNode(op.Node):
    """A per-channel scale (eval-mode BatchNorm)."""

    kind: ClassVar[str] = "scale"

    scale: Tensor

    def reverse(self, signal: Window, step: op.ReverseStep) -> Window:
        return signal.with_data(signal.data * self.scale.to(signal.data.dtype))


# -- local response normalisation --------------------------------------------------------------


@dataclass(frozen=True)
class LrnCall:
    """``F.local_response_norm``'s arguments, with its defaults."""

    input: Any
    size: int
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 1.0


class LocalResponseNorm(op.Op[LrnCall]):
    """``F.local_response_norm``, and LRN modules handled as a whole (they do not call it):
    torch's cross-map LRN and the Caffe importer's within-channel LRN."""

    functions = frozenset({F.local_response_norm})
    modules = (nn.CrossMapLRN2d, WithinChannelLRN)

    def parse(self, raw: op.TorchCall) -> LrnCall:
        bound = raw.bind(LRN_ARGS)
        given = {key: bound[key] for key in ("alpha", "beta", "k") if key in bound}
        return LrnCall(bound.get("input"), int(bound["size"]), **given)

    def rewires(self, policy: ReversePolicy, switches: bool) -> bool:
        return True  # low precision on CPU is computed in float32 whatever the mode

    def rewire(self, call: LrnCall, raw: op.TorchCall, mode: op.Rewiring) -> Any:
        func = partial(_upcast, raw.func) if _needs_upcast(call.input) else raw.func
        if mode.policy.lrn_mode.exact:
            return func(*raw.args, **raw.kwargs)
        rest, options = raw.args[1:], raw.kwargs

        def forward(tensor: Tensor) -> Tensor:
            return func(tensor, *rest, **options)

        return apply_rule(call.input, _lrn_rule(mode.policy, forward))

    def module_hook(self, mode: op.Rewiring) -> Callable[[nn.Module, Any, Any], Any] | None:
        if mode.policy.lrn_mode.exact:
            return None

        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
            return apply_rule(inputs[0], _lrn_rule(mode.policy, module.forward))

        return hook

    def before(self, call: LrnCall, policy: ReversePolicy) -> Tensor | None:
        x = call.input
        if not (policy.lrn_mode.exact and isinstance(x, Tensor)):
            return None
        return lrn_terms(x.detach(), call.size, call.alpha, call.beta, call.k)

    def node(self, call: LrnCall, recording: op.Recording, before: Any) -> op.Node:
        source = recording.source(call.input)
        if not spatial(call.input):
            raise op.Opaque
        return LrnNode((source,), call=call, terms=before)


def _lrn_rule(policy: ReversePolicy, forward: Callable[[Tensor], Tensor]) -> Any:
    return Reapply(forward) if policy.lrn_mode.reapplies else PassThrough(forward)


@dataclass(eq=False)
class LrnNode(op.Node):
    """LRN runs across channels only, so each LRN mode is exact on a window."""

    kind: ClassVar[str] = "lrn"

    call: LrnCall
    terms: Tensor | None

    def reverse(self, signal: Window, step: op.ReverseStep) -> Window:
        data, call = signal.data, self.call
        if step.policy.lrn_mode.reapplies:
            lrn = partial(_upcast, F.local_response_norm) if _needs_upcast(data) else None
            data = (lrn or F.local_response_norm)(data, call.size, call.alpha, call.beta, call.k)
        elif step.policy.lrn_mode.exact and self.terms is not None:
            terms = crop(self.terms, step.index, signal.tops, signal.lefts, signal.size)
            data = self._gradient(data, terms.to(data.dtype))
        return signal.with_data(data)

    def _gradient(self, signal: Tensor, terms: Tensor) -> Tensor:
        """The LRN's vector-Jacobian product on windows, from :func:`lrn_terms`.

        ``g_j = signal_j·s_j^-β − (2αβ/n)·x_j·Σ_c signal_c·x_c·s_c^-β-1`` over the channels
        ``c`` whose window holds ``j`` (the transposed window: ``n-1-n//2`` before, ``n//2``
        after).
        """
        size, channels = self.call.size, signal.shape[1]
        inverse, scaled, x = (terms[:, i * channels : (i + 1) * channels] for i in range(3))
        product = F.pad(signal * scaled, (0, 0, 0, 0, (size - 1) // 2, size // 2))
        spread = product[:, :channels].clone()
        for i in range(1, size):
            spread += product[:, i : i + channels]
        factor = float(2 * self.call.alpha * self.call.beta / size)
        gradient: Tensor = signal * inverse - factor * x * spread
        return gradient


def lrn_terms(x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
    """``[s^-β, x·s^-β-1, x]`` stacked on channels, with ``s = k + α·mean(x²)`` over each
    channel window exactly as ``F.local_response_norm`` pads it: the parts of the LRN
    gradient that do not depend on the signal, computed once on the full map (in float32
    for float16/bfloat16 on CPU, which has no such 3-D average pooling kernel)."""
    work = x.float() if _needs_upcast(x) else x
    squares = F.pad((work * work).unsqueeze(1), (0, 0, 0, 0, size // 2, (size - 1) // 2))
    mean = F.avg_pool3d(squares, (size, 1, 1), stride=1).squeeze(1)
    base = mean * alpha + k
    terms = torch.cat([base.pow(-beta), work * base.pow(-beta - 1), work], dim=1)
    return terms.to(x.dtype)


def _needs_upcast(x: Any) -> bool:
    """CPU has no float16/bfloat16 kernel for the 3-D average pooling inside
    ``F.local_response_norm``."""
    return isinstance(x, Tensor) and x.dtype in LOW_PRECISION and x.device.type == "cpu"


def _upcast(func: Any, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    """``func`` computed in float32 and rounded back to ``x``'s dtype (differentiable)."""
    result: Tensor = func(x.float(), *args, **kwargs)
    return result.to(x.dtype)


# -- dropout ----------------------------------------------------------------------------------


class Dropout(op.Op[tuple[Any, bool]]):
    """``F.dropout``/``F.dropout2d`` in eval mode: the identity."""

    functions = frozenset({F.dropout, F.dropout2d})

    def parse(self, raw: op.TorchCall) -> tuple[Any, bool]:
        return raw.input, bool(raw.argument(2, "training", True))

    def node(self, call: tuple[Any, bool], recording: op.Recording, before: Any) -> op.Node:
        source = recording.source(call[0])
        if call[1]:
            raise op.Opaque
        return op.IdentityNode((source,))


# -- normalisations with per-sample statistics ------------------------------------------------

NORM_ANALOGUE = "frozen statistics (the signal scaled by γ/σ)"
Scale = Callable[[Tensor], Tensor]


def frozen_statistics(raw: op.TorchCall, mode: op.Rewiring, scale_of: Scale) -> Any:
    """``raw`` with its statistics frozen on the way down (refused under ``strict``)."""
    if not mode.policy.analogues:
        return refuse(raw, mode, analogue=NORM_ANALOGUE)

    func, rest = raw.func, without_input(raw)

    def forward(tensor: Tensor) -> Tensor:
        args, kwargs = rest(tensor)
        result: Tensor = func(*args, **kwargs)
        return result

    return apply_rule(raw.input, Frozen(forward, scale_of))


def _rstd(x: Tensor, dims: tuple[int, ...], eps: float) -> Tensor:
    """``1/σ`` over ``dims`` (kept), as the normalisation computes it."""
    return torch.rsqrt(torch.var(x, dim=dims, correction=0, keepdim=True) + eps)


def _per_channel(weight: Tensor | None, x: Tensor) -> Tensor | float:
    """A (C,) affine weight shaped to broadcast over ``x`` (N, C, ...); 1 without one."""
    if weight is None:
        return 1.0
    return weight.reshape(1, -1, *([1] * (x.dim() - 2)))


class _PerSample(op.Op[Any]):
    """A normalisation with per-sample statistics; :meth:`scale_of` is its ``γ/σ`` for an
    input (None when the call uses fixed statistics: InstanceNorm with running ones)."""

    arguments: ClassVar[tuple[str, ...]] = ()

    def parse(self, raw: op.TorchCall) -> dict[str, Any]:
        return raw.bind(self.arguments)

    def scale_of(self, call: dict[str, Any]) -> Scale | None:
        raise NotImplementedError

    def rewires(self, policy: ReversePolicy, switches: bool) -> bool:
        return not policy.reverse_rule.is_gradient

    def rewire(self, call: dict[str, Any], raw: op.TorchCall, mode: op.Rewiring) -> Any:
        scale_of = self.scale_of(call)
        if scale_of is None or not isinstance(raw.input, Tensor):
            return raw.run()
        return frozen_statistics(raw, mode, scale_of)

    def before(self, call: dict[str, Any], policy: ReversePolicy) -> Tensor | None:
        scale_of = self.scale_of(call)
        x = call.get("input")
        if scale_of is None or not isinstance(x, Tensor):
            return None
        if not policy.analogues:
            raise op.Opaque  # refused, or its exact gradient (not a scale)
        return scale_of(x.detach())

    def node(self, call: dict[str, Any], recording: op.Recording, before: Any) -> op.Node:
        x = call.get("input")
        source = recording.source(x)
        if before is None or not isinstance(x, Tensor) or not spatial(x):  # fixed statistics
            raise op.Opaque
        return op.factor_node(source, before, tuple(x.shape))


def _trailing(shape: Any, x: Tensor) -> tuple[int, ...]:
    count = 1 if isinstance(shape, int) else len(shape)
    return tuple(range(x.dim() - count, x.dim()))


class LayerNorm(_PerSample):
    """``F.layer_norm`` (``nn.LayerNorm``; timm's LayerNorm2d on channels-last maps)."""

    functions = spellings("layer_norm") | aten("layer_norm")
    arguments = ("input", "normalized_shape", "weight", "bias", "eps")

    def scale_of(self, call: dict[str, Any]) -> Scale | None:
        shape, weight, eps = call["normalized_shape"], call.get("weight"), call.get("eps", 1e-5)

        def scale(x: Tensor) -> Tensor:
            rstd = _rstd(x, _trailing(shape, x), eps)
            return rstd if weight is None else rstd * weight

        return scale


class RMSNorm(_PerSample):
    """``F.rms_norm`` (``nn.RMSNorm``, timm's RmsNorm): σ is the root mean square."""

    functions = spellings("rms_norm") | aten("rms_norm")
    arguments = ("input", "normalized_shape", "weight", "eps")

    def scale_of(self, call: dict[str, Any]) -> Scale | None:
        shape, weight, eps = call["normalized_shape"], call.get("weight"), call.get("eps")

        def scale(x: Tensor) -> Tensor:
            floor = torch.finfo(x.dtype).eps if eps is None else eps
            rstd = torch.rsqrt(x.pow(2).mean(dim=_trailing(shape, x), keepdim=True) + floor)
            return rstd if weight is None else rstd * weight

        return scale


class GroupNorm(_PerSample):
    """``F.group_norm`` (``nn.GroupNorm``): statistics per sample and group of channels."""

    functions = spellings("group_norm") | aten("group_norm")
    arguments = ("input", "num_groups", "weight", "bias", "eps")

    def scale_of(self, call: dict[str, Any]) -> Scale | None:
        groups, weight, eps = int(call["num_groups"]), call.get("weight"), call.get("eps", 1e-5)

        def scale(x: Tensor) -> Tensor:
            batch, channels = x.shape[:2]
            rstd = _rstd(x.reshape(batch, groups, -1), (2,), eps)
            rstd = rstd.repeat_interleave(channels // groups, dim=1)
            return rstd.reshape(batch, channels, *([1] * (x.dim() - 2))) * _per_channel(weight, x)

        return scale


class InstanceNorm(_PerSample):
    """``F.instance_norm`` (``nn.InstanceNorm2d``): statistics per sample and channel (with
    ``use_input_stats=False``, running statistics: a fixed map, nothing to freeze)."""

    functions = spellings("instance_norm") | aten("instance_norm")
    arguments = (
        "input", "running_mean", "running_var", "weight", "bias", "use_input_stats",
        "momentum", "eps",
    )  # fmt: skip

    def scale_of(self, call: dict[str, Any]) -> Scale | None:
        if not call.get("use_input_stats", True):
            return None
        weight, eps = call.get("weight"), call.get("eps", 1e-5)

        def scale(x: Tensor) -> Tensor:
            return _rstd(x, tuple(range(2, x.dim())), eps) * _per_channel(weight, x)

        return scale


FAMILIES: tuple[op.Op[Any], ...] = (
    BatchNorm(),
    LocalResponseNorm(),
    Dropout(),
    LayerNorm(),
    RMSNorm(),
    GroupNorm(),
    InstanceNorm(),
)
