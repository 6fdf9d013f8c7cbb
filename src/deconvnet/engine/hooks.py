"""Hook bookkeeping: every registration goes into one list that removes them all.

Entry points register inside ``with HandleList() as handles:`` so hooks never outlive a
call, whether it succeeds or raises. Hooks live on the model's modules, where every thread
running that model would see them; so entry points also hold :func:`model_lock` while their
hooks are in place. The lock covers every module, parameter and buffer of the model, so a
model and one of its parts (``model`` and ``model.features`` in two threads) exclude each
other too.
"""

from __future__ import annotations

import functools
import threading
import time
import weakref
from collections.abc import Callable
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from torch import nn

from deconvnet.errors import InputError

P = ParamSpec("P")
R = TypeVar("R")
ModuleT = TypeVar("ModuleT", bound=nn.Module)

_LOCKS: weakref.WeakKeyDictionary[nn.Module, ModelLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()
_HELD = threading.Condition()
_OWNERS: dict[int, tuple[int, int, object]] = {}
"""id of a held module, parameter or buffer -> (owning thread, times it holds it, the object:
kept alive while held, so its id cannot be reused by a new object meanwhile)."""


class ModelLock:
    """A reentrant lock over the set of a model's modules, parameters and buffers.

    Acquiring takes every member at once or none (so two threads never each hold half of
    what the other needs), and waits while another thread holds any of them: calls on one
    model, or on two models that share a part, run one at a time; models with nothing in
    common run in parallel. The same thread may take it again, or take a part's lock inside.
    """

    def __init__(self, model: nn.Module) -> None:
        self._model = weakref.ref(model)
        self._taken = threading.local()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take every member of the model; ``False`` if that did not happen in time."""
        model = self._model()
        if model is None:
            raise InputError("the model of this lock no longer exists")
        members = _members(model)
        me = threading.get_ident()
        deadline = None if timeout < 0 else time.monotonic() + timeout
        with _HELD:
            while any(_OWNERS.get(key, (me,))[0] != me for key in members):
                remaining = None if deadline is None else deadline - time.monotonic()
                if not blocking or (remaining is not None and remaining <= 0):
                    return False
                _HELD.wait(remaining)
            for key, member in members.items():
                count = _OWNERS[key][1] if key in _OWNERS else 0
                _OWNERS[key] = (me, count + 1, member)
        self._stack().append(frozenset(members))
        return True

    def release(self) -> None:
        """Give back what the matching :meth:`acquire` of this thread took."""
        members = self._stack().pop()
        with _HELD:
            for key in members:
                owner, count, member = _OWNERS[key]
                if count == 1:
                    del _OWNERS[key]
                else:
                    _OWNERS[key] = (owner, count - 1, member)
            _HELD.notify_all()

    def _stack(self) -> list[frozenset[int]]:
        if not hasattr(self._taken, "stack"):
            self._taken.stack = []
        stack: list[frozenset[int]] = self._taken.stack
        return stack

    def __enter__(self) -> ModelLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _members(model: nn.Module) -> dict[int, object]:
    """Every module, parameter and buffer of ``model``, by identity."""
    found: dict[int, object] = {id(module): module for module in model.modules()}
    found.update((id(tensor), tensor) for tensor in model.parameters())
    found.update((id(tensor), tensor) for tensor in model.buffers())
    return found


def model_lock(model: nn.Module) -> ModelLock:
    """The lock of ``model``: held by every engine call that runs it with hooks attached.

    Threads sharing one model, or models sharing a part, therefore run their calls one at
    a time (each gets exactly its single-thread result); models with nothing in common run
    in parallel. Reentrant, so an entry point may call another. Kept beside the model, never
    on it (the model is not modified); it goes away with the model.
    """
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = ModelLock(model)
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
