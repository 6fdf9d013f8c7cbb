"""Run a model until some of its layers have given their outputs: the one capture loop.

Every entry point that needs a layer's output — the engine, the top-k scan, occlusion,
sanity checks, receptive fields, invariance and correspondence — goes through
:func:`forward_until` (the forward pass stops as soon as the layers are reached: nothing
above them runs) or :func:`forward_through` (the whole pass, when the model's own output is
wanted too). Both hook the modules inside one :class:`~deconvnet.engine.hooks.HandleList`,
so no hook outlives the call; read a module's output one way (:func:`output_tensor`); and
turn a failing forward pass into one :class:`ForwardFailed` whose text is the model's error
on one line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from deconvnet.engine.hooks import HandleList
from deconvnet.errors import (
    DeconvnetError,
    InputError,
    LayerNotFoundError,
    LayerNotReachedError,
    one_line,
)
from deconvnet.models.card import RE_EXPORT, card_of

T = TypeVar("T")
Keep = Callable[[str, Any], T]
"""What to keep of a layer's output ``(name, output)``, called inside its forward hook."""
Layers = Mapping[str, nn.Module] | Iterable[tuple[str, nn.Module]]

REASON_CHARS = 300
"""How much of the model's own error a :class:`ForwardFailed` message quotes."""
FAILURES = (RuntimeError, ValueError, IndexError, MemoryError)
"""What a failing forward pass raises (our own errors, raised by hooks, pass through)."""
_MISSING_KERNEL = re.compile(r"\"?([\w.:]+)\"? not implemented for '(Half|BFloat16)'")


class LayerReached(Exception):  # control flow, not an error
    """Raised by a capture hook to stop the forward pass once every wanted output is known.

    Nothing above the layers contributes, so the rest of the forward pass is skipped; this
    also keeps later in-place operations from changing the captured outputs.
    """


class ForwardFailed(InputError):
    """The model's forward pass raised on this input; ``reason`` is its error on one line."""

    def __init__(self, x: Tensor, error: BaseException) -> None:
        self.reason = one_line(error, REASON_CHARS)
        super().__init__(
            f"the model's forward pass failed on input of shape {tuple(x.shape)}: "
            f"{self.reason}{_precision_hint(error, x)}"
        )


def output_tensor(name: str, output: Any) -> Tensor:
    """A module's output as one tensor: itself, or the first of a tuple or list."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, tuple | list) and output and isinstance(output[0], Tensor):
        return output[0]
    raise LayerNotFoundError(f"layer {name!r} does not output a tensor ({type(output).__name__})")


def copied(name: str, output: Any) -> Tensor:
    """A layer's output tensor detached and copied, so a later in-place op cannot change it."""
    return output_tensor(name, output).detach().clone()


def forward_until(
    model: nn.Module,
    x: Tensor,
    layers: Layers,
    *,
    keep: Keep[T] = copied,  # type: ignore[assignment]
    call: int = 1,
    until: str | None = None,
    run: Callable[[Tensor], Any] | None = None,
    shield: bool = False,
) -> dict[str, T]:
    """Run ``model`` on ``x`` until each of ``layers`` (name -> module) has given the output
    of its ``call``-th call; ``keep(name, output)`` of each, in the order they were reached.

    ``until`` names the one layer to stop at: the others are kept if they ran before it and
    are left out otherwise. ``run`` replaces ``model(x)`` (e.g. a ``functional_call``).
    ``shield`` passes a copy of each hooked tensor output on to the rest of the model, so
    a later in-place op (``ReLU(inplace=True)``) edits the copy, never the kept output and
    its place in the autograd graph.

    Raises
    ------
    ForwardFailed
        The model raised (our own errors raised by ``keep`` pass through unchanged).
    LayerNotReachedError
        A required layer did not run.
    """
    captured, _ = _capture(model, x, layers, keep, call, True, until, run, shield)
    return captured


def forward_through(
    model: nn.Module,
    x: Tensor,
    layers: Layers,
    *,
    keep: Keep[T] = copied,  # type: ignore[assignment]
    call: int | None = None,
    reached_only: bool = False,
) -> tuple[dict[str, T], Any]:
    """The whole forward pass: ``keep(name, output)`` of each layer's ``call``-th call (the
    last one by default), and the model's own output. Raises as :func:`forward_until`;
    with ``reached_only`` the layers the pass did not run are left out instead (a survey of
    every module: timm's blocks hold a ``drop_path`` that runs only beside a shortcut)."""
    return _capture(model, x, layers, keep, call, False, None, None, False, reached_only)


def _capture(
    model: nn.Module,
    x: Tensor,
    layers: Layers,
    keep: Keep[T],
    call: int | None,
    stop: bool,
    until: str | None,
    run: Callable[[Tensor], Any] | None,
    shield: bool,
    reached_only: bool = False,
) -> tuple[dict[str, T], Any]:
    named = list(layers.items() if isinstance(layers, Mapping) else layers)
    if reached_only:
        required: set[str] = set()
    else:
        required = {until} if until is not None else {name for name, _ in named}
    captured: dict[str, T] = {}
    calls: dict[str, int] = {}

    def hook_for(name: str) -> Callable[[nn.Module, Any, Any], Any]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
            calls[name] = calls.get(name, 0) + 1
            if call is None or calls[name] == call:
                captured[name] = keep(name, output)
            if stop and required.issubset(captured):
                raise LayerReached
            return output + 0 if shield and isinstance(output, Tensor) else None

        return hook

    check_batch(model, x)
    result = None
    with HandleList() as handles:
        for name, module in named:
            handles.append(module.register_forward_hook(hook_for(name)))
        try:
            result = run(x) if run is not None else model(x)
        except LayerReached:
            pass
        except DeconvnetError:
            raise
        except FAILURES as error:
            raise ForwardFailed(x, error) from error
    missing = sorted(required - set(captured))
    if missing:
        names = f"layer {missing[0]!r} was" if len(missing) == 1 else f"layers {missing} were"
        raise LayerNotReachedError(
            f"{names} not reached in the forward pass (is it used by forward()?)"
        )
    return captured, result


def flat_outputs(
    model: nn.Module, batch: Tensor, named: Iterable[tuple[str, nn.Module]]
) -> tuple[dict[str, Tensor], Any]:
    """Each named layer's first output for ``batch``, detached and flattened (B, D), and
    the model's own output."""

    def flat(name: str, output: Any) -> Tensor:
        return output_tensor(name, output).detach().flatten(1).clone()

    with torch.no_grad():
        return forward_through(model, batch, named, keep=flat, call=1)


def check_batch(model: nn.Module, x: Tensor) -> None:
    """A model that runs only one batch size (its card says so) refused another in one line,
    before it runs."""
    fixed = card_of(model).fixed_batch
    if fixed is not None and x.dim() > 0 and x.shape[0] != fixed:
        raise InputError(
            f"the model runs only batches of {fixed}, got {x.shape[0]} image(s); {RE_EXPORT}"
        )


def _precision_hint(error: BaseException, x: Tensor) -> str:
    """Name the op that has no half-precision kernel on this device, and the way out."""
    found = _MISSING_KERNEL.search(str(error))
    if found is None:
        return ""
    return (
        f" (op {found.group(1)} has no {x.dtype} kernel on {x.device.type}: run the model in "
        "float32 with model.float(), or on a GPU)"
    )
