"""The model card: what a model says about itself, typed and attached once where it is loaded.

As timm gives every model one ``pretrained_cfg``, every model a loader of this package
returns (the zoo's :func:`~deconvnet.models.load`, :func:`deconvnet.caffe.load`, your own
model through :func:`~deconvnet.models.own.load_own`) carries one :class:`ModelCard`: how to
preprocess its input, its class names, readable layer names, where its weights came from
and the layer to show by default. The library reads it in one place, :func:`card_of`; a
model handed to the API without one gets a card derived from it (its own
``preprocessing``, ``categories`` and ``layer_aliases`` attributes when it sets them).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from torch import nn

from deconvnet.errors import InputError
from deconvnet.inputs.preprocessing import Preprocessing
from deconvnet.models._download import sha256_of

RECTIFIERS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU)
"""Modules whose output the default layer prefers to the convolution before them."""
CARD_ATTRIBUTE = "deconvnet_card"
"""The one attribute a loaded model carries (the model's parameters are not touched)."""
ModelT = TypeVar("ModelT", bound=nn.Module)


@dataclass(frozen=True)
class Provenance:
    """Which network made a picture: the model as named when loading it, its weights (a
    set's name, a file, ``"random"``, ``"own"``…) and their SHA-256 when known."""

    model: str
    weights: str
    weights_sha256: str | None = None

    @classmethod
    def of_file(cls, model: str, weights: str | os.PathLike[str]) -> Provenance:
        """Weights read from the file ``weights``: its path as given and its digest."""
        return cls(model, os.fspath(weights), sha256_of(Path(weights)))


@dataclass(frozen=True)
class ModelCard:
    """What a model says about itself.

    Attributes
    ----------
    preprocessing : the input convention of its weights; None when not known (a model of
        your own that does not say; the command line then assumes torchvision's ImageNet
        convention).
    categories : class names in output order, or None.
    aliases : readable layer names mapped to ``named_modules()`` names (``conv5`` ->
        ``features.12``; Caffe's blob names).
    provenance : where it and its weights come from; None for a model handed to the API.
    default_layer : the layer shown when none is named; None: the last convolution.
    """

    preprocessing: Preprocessing | None = None
    categories: tuple[str, ...] | None = None
    aliases: Mapping[str, str] = field(default_factory=dict)
    provenance: Provenance | None = None
    default_layer: str | None = None

    def alias_of(self, layer: str) -> str | None:
        """The readable name (``conv5``) of the module ``layer``, if it has one."""
        return next((alias for alias, target in self.aliases.items() if target == layer), None)

    def display_name(self, layer: str) -> str:
        """The alias of ``layer`` if it has one, else the dotted name."""
        return self.alias_of(layer) or layer


def attach(model: ModelT, card: ModelCard) -> ModelT:
    """Give ``model`` its card (replacing any it had); returns the model."""
    setattr(model, CARD_ATTRIBUTE, card)
    return model


def card_of(model: nn.Module, what: str = "the model") -> ModelCard:
    """The card ``model`` was loaded with, or one derived from it: its own
    ``preprocessing``, ``categories`` and ``layer_aliases`` attributes where it sets them,
    nothing else. An attribute of the wrong kind is refused (:class:`InputError` naming
    ``what``), never silently ignored."""
    card = getattr(model, CARD_ATTRIBUTE, None)
    if isinstance(card, ModelCard):
        return card
    for attribute, fits, kind in _CARD_ATTRIBUTES:
        value = getattr(model, attribute, None)
        if value is not None and not fits(value):
            raise InputError(
                f"{what}: model.{attribute} is a {type(value).__name__}; it must be {kind} "
                "(or absent)"
            )
    categories = getattr(model, "categories", None)
    return ModelCard(
        preprocessing=getattr(model, "preprocessing", None),
        categories=None if categories is None else tuple(categories),
        aliases=dict(getattr(model, "layer_aliases", None) or {}),
    )


def _is_names(value: object) -> bool:
    return isinstance(value, tuple | list) and all(isinstance(v, str) for v in value)


def _is_aliases(value: object) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


_CARD_ATTRIBUTES: tuple[tuple[str, Callable[[object], bool], str], ...] = (
    ("preprocessing", lambda value: isinstance(value, Preprocessing), "a Preprocessing"),
    ("categories", _is_names, "a tuple or list of class names (str)"),
    ("layer_aliases", _is_aliases, "a mapping of alias (str) to layer name (str)"),
)
"""What a model may set to describe itself (name, check, what it must be when set)."""


def default_layer(model: nn.Module, among: Collection[str] | None = None) -> str | None:
    """The layer to show when none is named: the card's, else the last convolution after
    its rectifier — the deepest layer that still has feature maps, read as activations (a
    Fig. 7 total never adds up negative pre-activation sums; a projection is the same from
    either, since the rectifier passes the seed unchanged). Of ``among`` only, when given;
    None if there is none."""
    chosen = card_of(model).default_layer
    if chosen is not None and (among is None or chosen in among):
        return chosen
    modules = list(model.named_modules())
    convolutions = [i for i, (_, module) in enumerate(modules) if isinstance(module, nn.Conv2d)]
    for index in reversed(convolutions):
        candidates = [modules[index][0]]
        if index + 1 < len(modules) and isinstance(modules[index + 1][1], RECTIFIERS):
            candidates.insert(0, modules[index + 1][0])
        for name in candidates:
            if among is None or name in among:
                return str(name)
    return None
