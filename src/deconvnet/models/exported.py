"""A ``torch.export`` archive (``.pt2``) as a module tree, with what its program says.

``torch.export.unflatten`` gives back the module hierarchy the model was exported from, so
layers keep their dotted names and hooks fire on them; but every module is an
``InterpreterModule`` that runs ATen ops. The program itself still says the rest, and it
goes on the model card:

- the input's shape: each dimension the export was not told is dynamic is fixed (a batch
  of 1, 48×64 pixels), read from the input placeholder's example value;
- the class each layer was (``Conv2d``), from the ops' ``nn_module_stack``;
- the default layer, the module that ran the program's last convolution.

No code from the archive runs. torch's own deprecation notices while reading it are not
the user's business and are silenced (nothing else is).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deconvnet.errors import ModelNotFoundError, WeightsError, one_line
from deconvnet.models.card import RECTIFIERS, ModelCard, attach

ERROR_CHARS = 300
CONVOLUTIONS = frozenset(
    {
        torch.ops.aten.conv2d.default,
        torch.ops.aten.conv2d.padding,
        torch.ops.aten.convolution.default,
        torch.ops.aten._convolution.default,
    }
)
"""The ATen spellings of a 2-D convolution in an exported program (training IR and core)."""
TRANSPOSED_ARGUMENT = 6
"""``aten.convolution``'s ``transposed`` flag (a transposed convolution is no default)."""


def load_exported(path: Path) -> nn.Module:
    """The archive's program unflattened into modules, with its card (input shape, layer
    classes, default layer).

    Raises
    ------
    ModelNotFoundError
        There is no such file.
    WeightsError
        The file is not a ``torch.export`` archive this torch can read.
    """
    if not path.is_file():
        raise ModelNotFoundError(f"exported model {path} does not exist")
    try:
        with warnings.catch_warnings():  # torch's own deprecation notices, not the user's
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.export.load(path)
            module = torch.export.unflatten(program)
    except Exception as exc:  # zip, version and schema errors have no common base
        raise WeightsError(
            f"cannot read {path} as a torch.export archive: {one_line(exc, ERROR_CHARS)}"
        ) from exc
    nodes = list(program.graph.nodes)
    card = ModelCard(
        input_shape=_input_shape(program, nodes),
        layer_types=_layer_types(nodes),
        default_layer=_last_convolution(nodes),
    )
    return attach(module, card)


def _input_shape(program: Any, nodes: list[Any]) -> tuple[int | None, ...] | None:
    """The one image input's shape, None for each dynamic dimension; None when the program
    takes other inputs than one tensor."""
    inputs = list(program.graph_signature.user_inputs)
    if len(inputs) != 1:
        return None
    value = next((n.meta.get("val") for n in nodes if n.name == inputs[0]), None)
    if not isinstance(value, torch.Tensor):
        return None
    return tuple(size if isinstance(size, int) else None for size in value.shape)


def _layer_types(nodes: Iterable[Any]) -> dict[str, str]:
    """Each module path in the program's ``nn_module_stack`` and its class name."""
    types: dict[str, str] = {}
    for node in nodes:
        for path, kind in _stack(node):
            if path:
                types.setdefault(path, str(kind).rpartition(".")[2])
    return types


def _last_convolution(nodes: list[Any]) -> str | None:
    """The module that ran the program's last (not transposed) convolution, or the
    rectifier module its output alone feeds (as :func:`~deconvnet.models.card.default_layer`
    chooses for an eager model); None if no convolution ran in a named module."""
    rectifiers = {kind.__name__ for kind in RECTIFIERS}
    for node in reversed(nodes):
        if node.op != "call_function" or node.target not in CONVOLUTIONS:
            continue
        if len(node.args) > TRANSPOSED_ARGUMENT and node.args[TRANSPOSED_ARGUMENT] is True:
            continue
        stack = _stack(node)
        if not stack or not stack[-1][0]:
            continue
        users = list(node.users)
        after = _stack(users[0]) if len(users) == 1 else []
        if after and after[-1][0] and str(after[-1][1]).rpartition(".")[2] in rectifiers:
            return str(after[-1][0])
        return str(stack[-1][0])
    return None


def _stack(node: Any) -> list[tuple[str, Any]]:
    """The modules a node ran in, outermost first, as ``(path, class)``."""
    stack: Mapping[str, Any] | None = node.meta.get("nn_module_stack")
    if not stack:
        return []
    return [(str(entry[0]), entry[1]) for entry in stack.values()]
