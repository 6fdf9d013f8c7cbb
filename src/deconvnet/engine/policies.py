"""The rule mode: the policy's rules wired into one forward pass.

During the forward pass a :class:`RuleMode` (a ``TorchFunctionMode``) sees every torch call,
whatever its form — module, functional, method, in-place — and swaps the ones whose op-table
entry (:mod:`deconvnet.engine.ops`) rewires them under the policy for their rewired version.
Everything else (convolution, linear, average pooling, concatenation, addition, BatchNorm
in eval mode, reshapes) keeps autograd's exact transpose: transposed filters with no bias,
summed copies, scaled signals.

The mode keeps its own stack of the modules running now (its hooks on the model push and
pop it), so two threads projecting two models each see only their own: a max-pool finds the
switches given for *its* module, and an error names *its* module. It also keeps what the
entries noted of tensors during the pass (this one is a gate, that one ``1.702·x``), and
carries a gate's note through whatever is computed from the gate alone.

An ``autograd.Function`` is invisible to a ``TorchFunctionMode`` (only the ops inside its
forward are seen, and never rewired where they matter: its own backward replaces theirs).
Under the rectifying rules such a function on the way down would pass its author's
gradient in silence; :func:`refuse_functions` finds them in the recorded autograd graph and
refuses them by name.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn
from torch.autograd.function import BackwardCFunction

from deconvnet.engine.hooks import HandleList
from deconvnet.engine.ops import OPS, module_op
from deconvnet.engine.ops.arguments import tensors
from deconvnet.engine.ops.gates import Gated, keeps_gate
from deconvnet.engine.ops.op import CallMode, Op, TorchCall, TorchFunction
from deconvnet.engine.rules import GRADIENT_RULE, ReversePolicy, is_engine_function
from deconvnet.errors import UnsupportedLayerError


@functools.cache
def _rewired(policy: ReversePolicy, switches: bool) -> dict[TorchFunction, Op[Any]]:
    """The entries the rule mode swaps under ``policy``, by spelling (one table per policy)."""
    return {func: op for func, op in OPS.items() if op.rewires(policy, switches)}


class RuleMode(CallMode):
    """Swap every torch call that has a rule under ``policy`` for its rewired version.

    Entering the mode hooks ``model``'s modules (to know which one runs, and to rewire the
    modules the op table handles as a whole); leaving it removes those hooks, also when the
    forward pass raised.

    ``switches`` maps max-pool module names to argmax indices recorded elsewhere (e.g. Caffe's
    mask blobs): those modules then unpool through the given switches instead of their own,
    which is how another framework's near-tie choices are reproduced exactly.
    """

    def __init__(
        self,
        policy: ReversePolicy,
        model: nn.Module | None = None,
        switches: Mapping[str, Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.policy = policy
        self.model = model
        self.switches = dict(switches or {})
        self._ops = _rewired(policy, bool(self.switches))
        self._running: list[tuple[str, str]] = []  # (name, type) of running modules
        self._handles = HandleList()
        # id -> (tensor, version, fact); the strong reference keeps ids unique
        self._facts: dict[int, tuple[Tensor, int, Any]] = {}

    def __enter__(self) -> RuleMode:
        try:
            if self.model is not None:
                self._watch(self.model)
            super().__enter__()  # type: ignore[no-untyped-call]
        except BaseException:
            self._handles.remove()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            super().__exit__(*exc)  # type: ignore[no-untyped-call]
        finally:
            self._handles.remove()
            self._running.clear()
            self._facts.clear()

    def _watch(self, model: nn.Module) -> None:
        for name, module in model.named_modules():
            self._handles.append(module.register_forward_pre_hook(self._entering(name)))
            self._handles.append(module.register_forward_hook(self._leaving))
            op = module_op(module)
            hook = op.module_hook(self) if op is not None else None
            if hook is not None:
                self._handles.append(module.register_forward_hook(hook))

    def _entering(self, name: str) -> Callable[[nn.Module, Any], None]:
        def hook(module: nn.Module, inputs: Any) -> None:
            self._running.append((name, type(module).__name__))

        return hook

    def _leaving(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if self._running:
            self._running.pop()

    def where(self) -> str:
        """`` in module NAME (TYPE)`` of the innermost running module, for messages."""
        if not self._running:
            return ""
        name, kind = self._running[-1]
        return f" in module {name} ({kind})"

    def switches_here(self) -> Tensor | None:
        """The switches given for the innermost running module, if any."""
        if not (self.switches and self._running):
            return None
        return self.switches.get(self._running[-1][0])

    def remember(self, tensor: Tensor, fact: Any) -> None:
        """Note ``fact`` of ``tensor`` as it is now (a later in-place change forgets it)."""
        self._facts[id(tensor)] = (tensor, tensor._version, fact)

    def recall(self, tensor: Any) -> Any:
        """The fact noted of ``tensor``, if it is still the tensor it was."""
        entry = self._facts.get(id(tensor)) if isinstance(tensor, Tensor) else None
        if entry is None or entry[0] is not tensor or entry[1] != tensor._version:
            return None
        return entry[2]

    def handle(self, call: TorchCall) -> Any:
        op = self._ops.get(call.func)
        if op is not None:
            return op.rewire(op.parse(call), call, self)
        result = call.run()
        if self._facts and keeps_gate(call, self.recall):
            for tensor in tensors(result):
                self.remember(tensor, Gated())
        return result


def refuse_functions(output: Tensor, policy: ReversePolicy) -> None:
    """Refuse, under a rule other than the gradient, any ``autograd.Function`` but the
    engine's own between the input and ``output``: its backward is its author's gradient,
    which the rule cannot see into (timm's memory-efficient activations, for one)."""
    if policy.reverse_rule.is_gradient:
        return
    function = foreign_function(output)
    if function is not None:
        raise UnsupportedLayerError(
            f"rule {policy.rule!r} has no definition for {function.__name__} (a custom "
            f"torch.autograd.Function: its backward is its own gradient); use "
            f"rule={GRADIENT_RULE!r} for this model"
        )


def foreign_function(output: Tensor) -> type | None:
    """The first ``autograd.Function`` but the engine's own in ``output``'s autograd graph,
    if any. On plain autograd the ops inside such a function's forward are seen (and may be
    recorded) while its backward is its author's: the windowed pass must not follow it."""
    seen: set[int] = set()
    waiting: list[Any] = [output.grad_fn]
    while waiting:
        node = waiting.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, BackwardCFunction):
            function = _original(node._forward_cls)  # type: ignore[attr-defined]
            if not is_engine_function(function):
                return function
        waiting.extend(next_node for next_node, _ in node.next_functions)
    return None


def _original(function: type) -> type:
    """The autograd.Function that ``torch.func`` wrapped as ``<Name>Generated``."""
    backward = getattr(function, "backward", None)
    if backward is None:
        return function
    try:
        found = inspect.getclosurevars(backward).nonlocals.get("autograd_function")
    except TypeError:  # not a Python function
        return function
    return found if isinstance(found, type) else function
