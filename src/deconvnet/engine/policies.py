"""The rule mode: the policy's rules wired into one forward pass.

During the forward pass a :class:`RuleMode` (a ``TorchFunctionMode``) sees every torch call,
whatever its form — module, functional, method, in-place — and swaps the ones whose op-table
entry (:mod:`deconvnet.engine.ops`) rewires them under the policy for their rewired version.
Everything else (convolution, linear, average pooling, concatenation, addition, BatchNorm
in eval mode, reshapes) keeps autograd's exact transpose: transposed filters with no bias,
summed copies, scaled signals.

The mode keeps its own stack of the modules running now (its hooks on the model push and
pop it), so two threads projecting two models each see only their own: a max-pool finds the
switches given for *its* module, and an error names *its* module.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn

from deconvnet.engine.hooks import HandleList
from deconvnet.engine.ops import OPS, module_op
from deconvnet.engine.ops.op import CallMode, Op, TorchCall, TorchFunction
from deconvnet.engine.rules import ReversePolicy


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

    def handle(self, call: TorchCall) -> Any:
        op = self._ops.get(call.func)
        return call.run() if op is None else op.rewire(op.parse(call), call, self)
