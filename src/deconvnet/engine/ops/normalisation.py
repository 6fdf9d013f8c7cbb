"""BatchNorm in eval mode, local response normalisation, dropout.

Eval-mode BatchNorm is a fixed per-channel affine map: its reverse scales the signal by
``γ/σ`` (and folds into a neighbouring convolution's filters where it can). The paper does
not say what the deconvnet does at an LRN layer: the policy's LRN mode decides (skip it,
its exact gradient, or re-apply it to the signal as the old Caffe demo did). Eval-mode
dropout is the identity.
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
from deconvnet.engine.ops.arguments import spatial
from deconvnet.engine.rules import PassThrough, Reapply, ReversePolicy, apply_rule
from deconvnet.engine.window import Window, crop

BN_ARGS = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
BN_EPS = 1e-5
LRN_ARGS = ("input", "size", "alpha", "beta", "k")
LOW_PRECISION = (torch.float16, torch.bfloat16)


class BatchNorm(op.Op[dict[str, Any]]):
    """``F.batch_norm`` in eval mode: a per-channel scale ``γ/σ`` on the way down."""

    functions = frozenset({F.batch_norm})

    def parse(self, raw: op.TorchCall) -> dict[str, Any]:
        return raw.bind(BN_ARGS)

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


FAMILIES: tuple[op.Op[Any], ...] = (BatchNorm(), LocalResponseNorm(), Dropout())
