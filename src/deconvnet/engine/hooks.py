"""Hook bookkeeping: every registration goes into one list that removes them all.

Entry points register inside ``with HandleList() as handles:`` so hooks never outlive a
call, whether it succeeds or raises. Hooks live on the model's modules, where every thread
running that model would see them; so entry points also hold :func:`model_lock` while their
hooks are in place.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import torch
from torch import Tensor, nn

from deconvnet.errors import InputError

P = ParamSpec("P")
R = TypeVar("R")
ModuleT = TypeVar("ModuleT", bound=nn.Module)

_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The lock of ``model``: held by every engine call that runs it with hooks attached.

    Threads sharing one model therefore run their calls one at a time (each gets exactly
    its single-thread result); different models run in parallel. Reentrant, so an entry
    point may call another. Kept beside the model, never on it (the model is not modified);
    it goes away with the model.
    """
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


def holding_model_lock(
    function: Callable[Concatenate[ModuleT, P], R],
) -> Callable[Concatenate[ModuleT, P], R]:
    """Decorate an entry point whose first argument is the model: it runs under its lock."""

    @functools.wraps(function)
    def locked(model: ModuleT, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with model_lock(model):
            return function(model, *args, **kwargs)

    return locked


class RemovableHandle(Protocol):
    def remove(self) -> None: ...


class HandleList(list[RemovableHandle]):
    """A list of hook handles, removed together (in reverse order) on ``remove()`` or exit."""

    def remove(self) -> None:  # type: ignore[override]  # list.remove takes a value
        while self:
            self.pop().remove()

    def __enter__(self) -> HandleList:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def flat_outputs(
    model: nn.Module, batch: Tensor, named: Sequence[tuple[str, nn.Module]]
) -> tuple[dict[str, Tensor], Any]:
    """Each named layer's first output for ``batch``, detached and flattened (B, D), and
    the model's own output; :class:`InputError` if the model fails or a layer is not reached."""
    captured: dict[str, Tensor] = {}

    def hook_for(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            out = output[0] if isinstance(output, tuple | list) else output
            captured.setdefault(name, out.detach().flatten(1).clone())

        return hook

    with HandleList() as handles, torch.no_grad():
        for name, module in named:
            handles.append(module.register_forward_hook(hook_for(name)))
        try:
            output = model(batch)
        except RuntimeError as error:
            message = " ".join(str(error).split())[:200]
            raise InputError(
                f"the model failed on input {tuple(batch.shape)}: {message}"
            ) from error
    missing = [name for name, _ in named if name not in captured]
    if missing:
        raise InputError(f"layers {missing} were not reached in the forward pass")
    return captured, output


class LayerReached(Exception):  # control flow, not an error
    """Raised by the layer hook to stop the forward pass once the layer's output is known.

    Nothing above the projected layer contributes to the projection, so the rest of the
    forward pass is skipped; this also keeps later in-place operations from changing the
    recorded output.
    """
