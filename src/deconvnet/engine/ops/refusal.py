"""Refusing an op under a rule that has no definition for it, when the signal reaches it.

An op with no rule under the policy (a sigmoid on the main path, a GELU under
``activations="strict"``, ``torch.erf``) keeps its forward value; the reverse pass raises
:class:`~deconvnet.errors.UnsupportedLayerError` when, and only when, the signal passes
through it — naming the op, the module it runs in and what would define it. An op the
projection never passes through (a gate's branch, weight standardisation) is no error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from deconvnet.engine.ops import op
from deconvnet.engine.ops.arguments import in_place
from deconvnet.engine.rules import ANALOGUES, GRADIENT_RULE, Refused, apply_rule


def op_name(func: op.TorchFunction) -> str:
    """``silu`` for ``F.silu``, ``torch._C._nn.silu_`` or ``aten.silu.default``."""
    return str(getattr(func, "__name__", repr(func))).split(".")[0].lstrip("_")


def refusal(name: str, mode: op.Rewiring, analogue: str = "", reason: str = "") -> str:
    """The message: the rule, the op and its module, and the way out (the activation
    policy that defines it, if one does, and the gradient rule)."""
    policy = mode.policy
    text = f"rule {policy.rule!r} has no definition for {name}{mode.where()}"
    if reason:
        text += f" {reason}"
    if analogue and not policy.activation_mode.analogues:
        return (
            f"{text} under activations={policy.activations!r}; activations={ANALOGUES!r} "
            f"(--activations {ANALOGUES}) gives it {analogue}, or use rule={GRADIENT_RULE!r}"
        )
    return f"{text}; use rule={GRADIENT_RULE!r} (its exact gradient)"


def refuse(
    raw: op.TorchCall,
    mode: op.Rewiring,
    inplace: bool = False,
    *,
    analogue: str = "",
    reason: str = "",
) -> Any:
    """Run ``raw`` as written, refused on the way down with :func:`refusal`'s message."""
    x = raw.input
    if not isinstance(x, Tensor):
        return raw.run()
    message = refusal(op_name(raw.func), mode, analogue, reason)
    func, rest = raw.func, without_input(raw)

    def forward(tensor: Tensor) -> Tensor:
        args, kwargs = rest(tensor.clone() if inplace else tensor)
        result: Tensor = func(*args, **kwargs)
        return result

    return in_place(x, apply_rule(x, Refused(forward, message)), inplace)


def without_input(raw: op.TorchCall) -> Callable[[Tensor], tuple[tuple[Any, ...], dict[str, Any]]]:
    """The call's arguments with its input (first argument, or ``input=``/``self=``)
    replaced by a given tensor. Holding no reference to the input matters: a rule keeps
    its forward for the reverse pass, and after an in-place op the input's own history
    holds that rule — a cycle through autograd's graph that Python's collector cannot see,
    which kept every saved tensor of the forward pass alive."""
    if raw.args:
        rest, kwargs = raw.args[1:], raw.kwargs  # not ``raw``: it holds the input
        return lambda tensor: ((tensor, *rest), kwargs)
    key = "input" if "input" in raw.kwargs else "self"
    others = {name: value for name, value in raw.kwargs.items() if name != key}
    return lambda tensor: ((), {**others, key: tensor})
