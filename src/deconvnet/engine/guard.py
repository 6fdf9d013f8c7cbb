"""The promise that no call changes the model, kept at every entry point.

A call may fail anywhere: in the user's ``forward``, in a hook, half-way through a
reverse pass. :func:`preserved` snapshots what a forward pass could touch (buffers, mode
flags, ``requires_grad``, hook tables) and puts it back on the way out, success or not.

Train mode is refused rather than run: BatchNorm in train mode updates its running
statistics in place on every forward pass (and normalises by the batch, not by what it
learned), Dropout draws random masks; a projection would then depend on the batch and
change the model. :func:`require_eval` names the modules and says to call
``model.eval()``.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import torch
from torch import Tensor, nn

from deconvnet.engine.hooks import HandleList
from deconvnet.errors import InputError, TrainingModeError

MODE_SENSITIVE = (nn.modules.batchnorm._NormBase, nn.modules.dropout._DropoutNd)
"""Modules whose forward differs between train and eval mode (BatchNorm, InstanceNorm
with running stats, Dropout)."""
MAX_LISTED = 5
CALL_INDEX_SEPARATOR = "#"
_HOOK_TABLES = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks_always_called",
)


def training_modules(model: nn.Module) -> list[str]:
    """Names of the mode-sensitive modules of ``model`` that are in train mode."""
    return [
        name or type(module).__name__
        for name, module in model.named_modules()
        if module.training and isinstance(module, MODE_SENSITIVE)
    ]


def require_eval(model: nn.Module) -> None:
    """Warn and refuse a model whose BatchNorm/Dropout modules are in train mode.

    Raises
    ------
    TrainingModeError
        Naming the first modules in train mode; the model is not touched.
    """
    names = training_modules(model)
    if not names:
        return
    shown = ", ".join(names[:MAX_LISTED]) + (
        f", … ({len(names) - MAX_LISTED} more)" if len(names) > MAX_LISTED else ""
    )
    message = (
        f"the model has {len(names)} module(s) in train mode ({shown}): BatchNorm would "
        "update its running statistics and Dropout draw random masks; call model.eval() first"
    )
    warnings.warn(message, stacklevel=3)
    raise TrainingModeError(message)


@contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Run the block and leave ``model`` as it was: buffers (values and objects), training
    flags, ``requires_grad`` and hook tables are restored, also when the block raises.

    Parameters are not copied (that would double the memory); a parameter changed in
    place during the block is reported as an error instead.
    """
    modules = list(model.modules())
    flags = [module.training for module in modules]
    buffers = [
        (module, name, buffer, buffer.detach().clone() if buffer is not None else None)
        for module in modules
        for name, buffer in module._buffers.items()
    ]
    params = [
        (
            module,
            name,
            param,
            param.requires_grad if param is not None else False,
            param._version if param is not None else 0,
        )
        for module in modules
        for name, param in module._parameters.items()
    ]
    hooks = [(module, _hook_tables(module)) for module in modules]
    try:
        yield
    finally:
        _restore(modules, flags, buffers, params, hooks)


def _hook_tables(module: nn.Module) -> dict[str, dict[Any, Any]]:
    return {
        table: dict(getattr(module, table))
        for table in _HOOK_TABLES
        if isinstance(getattr(module, table, None), dict)
    }


def _restore(
    modules: list[nn.Module],
    flags: list[bool],
    buffers: list[tuple[nn.Module, str, Tensor | None, Tensor | None]],
    params: list[tuple[nn.Module, str, nn.Parameter | None, bool, int]],
    hooks: list[tuple[nn.Module, dict[str, dict[Any, Any]]]],
) -> None:
    for module, training in zip(modules, flags, strict=True):
        module.training = training
    with torch.no_grad():
        for module, name, buffer, copy in buffers:
            module._buffers[name] = buffer
            if buffer is not None and copy is not None and not torch.equal(buffer, copy):
                buffer.copy_(copy)
    changed = []
    for module, name, param, requires_grad, version in params:
        module._parameters[name] = param
        if param is not None:
            param.requires_grad_(requires_grad)
            if param._version != version:
                changed.append(name)
    for module, tables in hooks:
        for table, entries in tables.items():
            current = getattr(module, table)
            if current != entries:
                current.clear()
                current.update(entries)
    if changed:
        raise InputError(
            f"the model's forward pass changed parameter(s) {changed[:MAX_LISTED]} in place; "
            "deconvnet cannot undo that (it keeps no copy of the parameters)"
        )


def split_call(layer: str) -> tuple[str, int | None]:
    """``"layer1.0.relu#2"`` -> ``("layer1.0.relu", 2)``; no suffix -> ``(layer, None)``."""
    name, separator, index = layer.rpartition(CALL_INDEX_SEPARATOR)
    if not separator:
        return layer, None
    if not index.isdigit() or int(index) < 1:
        raise InputError(f"layer {layer!r}: the call index after '#' must be 1, 2, …")
    return name, int(index)


_CALL_SITES: weakref.WeakKeyDictionary[nn.Module, dict[tuple[Any, ...], list[str]]] = (
    weakref.WeakKeyDictionary()
)
"""Per model, the call sites found for a (module, module tree, input shape): repeated calls
(a scan's projections, an explorer's clicks) then cost no extra forward pass."""


def call_sites(model: nn.Module, x: Tensor, module: nn.Module) -> list[str]:
    """Where one forward pass of ``model`` on ``x`` calls ``module``: for each call, the
    module that ran just before it (``"input"`` for the first). Counting stops where the
    forward pass fails (a model usable only up to some layer).

    The forward pass counted is that of the first image alone, and the answer is
    remembered per model for the same module, the same module tree (a replaced submodule
    counts anew) and the same image shape, dtype and device: callers that batch images
    by what they share (the top-k projection stage: 1 to 8 per call) would otherwise pay
    a whole forward pass for every batch size they meet."""
    key = (
        id(module),
        tuple(id(sub) for sub in model.modules()),
        tuple(x.shape[1:]),
        x.dtype,
        x.device,
    )
    known = _CALL_SITES.setdefault(model, {})
    if key not in known:
        known[key] = _count_call_sites(model, x[:1], module)
    return list(known[key])


def _count_call_sites(model: nn.Module, x: Tensor, module: nn.Module) -> list[str]:
    previous = ["input"]
    sites: list[str] = []
    names = {id(sub): name for name, sub in model.named_modules()}

    def before(sub: nn.Module, inputs: Any) -> None:
        if sub is module:
            sites.append(previous[0])

    def after(sub: nn.Module, inputs: Any, output: Any) -> None:
        if sub is not module and not list(sub.children()):
            previous[0] = names.get(id(sub), type(sub).__name__)

    with HandleList() as handles, torch.no_grad(), preserved(model):
        for sub in model.modules():
            handles.append(sub.register_forward_pre_hook(before))
            handles.append(sub.register_forward_hook(after))
        with suppress(Exception):  # a failure ends the count; the caller reports it
            model(x.clone())
    return sites


def require_single_call(model: nn.Module, x: Tensor, module: nn.Module, name: str) -> None:
    """Refuse a layer that the forward pass calls more than once: its output is ambiguous.

    Raises
    ------
    InputError
        Listing each call by the module that ran before it, and the ``name#k`` choices.
    """
    sites = call_sites(model, x, module)
    if len(sites) > 1:
        listed = "; ".join(f"#{i} after {site}" for i, site in enumerate(sites, 1))
        raise InputError(
            f"layer {name!r} is called {len(sites)} times in one forward pass ({listed}); "
            f"choose one call with {name + CALL_INDEX_SEPARATOR}1 … "
            f"{name + CALL_INDEX_SEPARATOR}{len(sites)}"
        )
