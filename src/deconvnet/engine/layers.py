"""Naming a layer: a dotted ``named_modules()`` name, an alias from the model's card, the
module itself, or a name with a call index (``layer1.0.relu#2``) for a module the forward
pass calls more than once."""

from __future__ import annotations

from torch import nn

from deconvnet.engine import guard
from deconvnet.errors import LayerNotFoundError
from deconvnet.models.card import card_of
from deconvnet.models.naming import layer_names, unknown_name


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """``(name, module)`` for a dotted name, an alias or a module of ``model``.

    Aliases come from the model's card (:func:`~deconvnet.models.card.card_of`: the zoo's
    ``conv5``, Caffe's blob names, a model's own ``layer_aliases``) and win over a module of
    the same name: in a Caffe net ``conv3`` is the blob Caffe holds after its in-place ReLU.

    Raises
    ------
    LayerNotFoundError
        Unknown name or a module that is not part of ``model``; suggests close names
        (:func:`~deconvnet.models.naming.unknown_name`), never the whole list.
    """
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return name, module
        raise LayerNotFoundError(
            f"the given {type(layer).__name__} module is not part of the model "
            f"({len(layer_names(model))} layer names)"
        )
    if not isinstance(layer, str):
        raise TypeError(
            f"layer must be a dotted module name or a module, got {type(layer).__name__}"
        )
    if guard.CALL_INDEX_SEPARATOR in layer:
        raise LayerNotFoundError(
            f"layer {layer!r}: a call index ('#2') selects one call of a module that the "
            "forward pass calls several times; only Deconvnet.project and layer_output take it"
        )
    target = card_of(model).aliases.get(layer, layer)
    try:
        module = model.get_submodule(target) if target else None
    except AttributeError:
        module = None
    if module is None or module is model:
        raise LayerNotFoundError(unknown_name(layer, layer_names(model)))
    return target, module


def resolve_call(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module, int | None]:
    """:func:`resolve_layer` plus an optional call index: ``"layer1.0.relu#2"`` is the
    second call of a module that the forward pass calls more than once."""
    if isinstance(layer, str):
        base, call = guard.split_call(layer)
        name, module = resolve_layer(model, base)
        return name, module, call
    name, module = resolve_layer(model, layer)
    return name, module, None
