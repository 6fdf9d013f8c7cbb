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
from collections.abc import Callable
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from torch import nn

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
