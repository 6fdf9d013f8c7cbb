"""Names as people read them: one name per layer, the default layer, class labels.

A layer is shown and addressed by its alias when the model declares one (``fire5``,
``conv3``, ``pool5``, ``fc7``, a Caffe blob name) and by its dotted module name otherwise
(:func:`display_name`); every face (file names, figure titles, manifests, site URLs, the
explorer's menu) names layers through it, so they agree. An unknown name gets a short
"did you mean" and the count of names instead of the whole list (:func:`unknown_name`).

What the model says about itself comes from its card (:func:`~deconvnet.models.card.card_of`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence

from torch import nn

from deconvnet.errors import InputError
from deconvnet.models._meta import IMAGENET_CATEGORIES, IMAGENET_WNIDS
from deconvnet.models.card import card_of
from deconvnet.models.card import default_layer as card_default_layer

SUGGESTIONS = 3
"""At most this many names in a "did you mean"."""
SIMILARITY = 0.6
"""difflib's ratio a name needs to be suggested (its default cutoff)."""
WNID = re.compile(r"(?<![0-9A-Za-z])n[0-9]{8}(?![0-9])")
"""A WordNet id as ImageNet writes it in file and folder names (``n02123045_1234.JPEG``)."""


def aliases_of(model: nn.Module) -> Mapping[str, str]:
    """The model's readable layer names, ``{alias: dotted module name}`` (may be empty)."""
    return card_of(model).aliases


def categories_of(model: nn.Module) -> tuple[str, ...] | None:
    """The model's class names in output order, or ``None``."""
    return card_of(model).categories


def alias_of(aliases: Mapping[str, str], layer: str) -> str | None:
    """The readable name (``conv5``) that ``aliases`` give the module ``layer``, if any."""
    return next((alias for alias, target in aliases.items() if target == layer), None)


def display_name(aliases: Mapping[str, str], layer: str) -> str:
    """How ``layer`` (a dotted module name, or ``name#2`` for a module's second call) is
    shown and addressed: its alias, else the name itself."""
    base, separator, call = layer.partition("#")
    shown = alias_of(aliases, base) or base
    return f"{shown}{separator}{call}"


def layer_names(model: nn.Module) -> list[str]:
    """Every name a layer of ``model`` answers to: its aliases, then its dotted names."""
    dotted = [name for name, _ in model.named_modules() if name]
    return list(dict.fromkeys([*aliases_of(model), *dotted]))


def unknown_name(name: str, known: Sequence[str], what: str = "layer") -> str:
    """``no layer 'fire55'; did you mean fire5, fire9 or fire8? (83 layer names; …)``: a
    few close names (difflib), never the whole list."""
    listed = "; `deconvnet layers` lists them" if what == "layer" else ""
    return f"no {what} {name!r}{did_you_mean(name, known)} ({len(known)} {what} names{listed})"


def did_you_mean(name: str, known: Sequence[str]) -> str:
    """``"; did you mean fire5 or fire9?"`` with the names of ``known`` closest to ``name``
    (difflib, else those containing it), or ``""`` when none is close."""
    close = difflib.get_close_matches(name, known, n=SUGGESTIONS, cutoff=SIMILARITY)
    if not close:
        lowered = name.lower()
        close = [k for k in known if lowered and lowered in k.lower()][:SUGGESTIONS]
    return f"; did you mean {_either(close)}?" if close else ""


def default_layer(model: nn.Module) -> str:
    """The layer used when none is named (:func:`~deconvnet.models.card.default_layer`: the
    card's, else the last convolution after its rectifier).

    Raises
    ------
    InputError
        The model has no ``Conv2d`` layer.
    """
    found = card_default_layer(model)
    if found is None:
        raise InputError("the model has no Conv2d layer; name a layer with --layer")
    return found


def block_of(model: nn.Module, layer: str) -> str | None:
    """The named block a layer belongs to, for grouping menus: the alias of the nearest
    aliased module that contains it or is it (``features.3.squeeze`` -> ``fire2``), or the
    part before ``/`` of a Caffe name (``fire2/conv1x1_1`` -> ``fire2``); ``None`` for a
    layer of no block."""
    aliases = aliases_of(model)
    parts = layer.split(".")
    for end in range(len(parts), 0, -1):
        alias = alias_of(aliases, ".".join(parts[:end]))
        if alias is not None and (end < len(parts) or _is_container(model, layer)):
            return alias.split("/")[0]
    shown = display_name(aliases, layer)
    return shown.split("/")[0] if "/" in shown else None


def class_layer(
    model: nn.Module, layer: str, channels: int, categories: Sequence[str] | None = None
) -> bool:
    """Whether the ``channels`` of ``layer`` are the classes (``categories``, default the
    model's own): one channel per class, and no convolution or linear layer follows it
    (SqueezeNet's ``conv10``, ``relu10``, ``pool10``; an fc8)."""
    categories = categories if categories is not None else categories_of(model)
    if categories is None or channels != len(categories):
        return False
    names = [name for name, _ in model.named_modules()]
    if layer not in names:
        return False
    later = [module for name, module in model.named_modules()][names.index(layer) + 1 :]
    return not any(isinstance(module, (nn.Conv2d, nn.Linear)) for module in later)


def short_class_name(name: str) -> str:
    """A category's first synonym (``"tabby, tabby cat"`` -> ``"tabby"``)."""
    return name.split(",")[0].strip()


def wnids_for(categories: Sequence[str] | None) -> tuple[str, ...] | None:
    """The WordNet ids of ``categories`` when they are ImageNet's 1,000 classes."""
    if categories is not None and tuple(categories) == IMAGENET_CATEGORIES:
        return IMAGENET_WNIDS
    return None


def wnid_in(text: str) -> str | None:
    """The first WordNet id in ``text`` (a file or folder name), if any."""
    found = WNID.search(text)
    return found.group(0) if found else None


def class_index(
    text: str, categories: Sequence[str] | None, num_outputs: int, *, what: str = "--label"
) -> int:
    """The class ``text`` names: an index, a WordNet id (``n02123159``), a class name or
    any of its synonyms (``"tabby cat"``, case ignored), or the unique start of one.

    Raises
    ------
    InputError
        Out of range, ambiguous (the candidates are listed), or unknown (with the closest
        names).
    """
    wanted = text.strip()
    if wanted.isascii() and wanted.isdigit():
        index = int(wanted)
        if index >= num_outputs:
            raise InputError(f"{what} {index} out of range: the model has {num_outputs} classes")
        return index
    names = list(categories or ())
    wnids = wnids_for(names)
    if wnids is not None and wanted in wnids:
        return wnids.index(wanted)
    if not names:
        raise InputError(
            f"{what} {text!r}: the model has no class names; give a class index "
            f"0..{num_outputs - 1}"
        )
    synonyms = [
        (index, synonym.strip().lower())
        for index, name in enumerate(names)
        for synonym in (name, *name.split(","))
        if synonym.strip()
    ]
    lowered = wanted.lower()
    exact = sorted({index for index, synonym in synonyms if synonym == lowered})
    found = exact or sorted({index for index, synonym in synonyms if synonym.startswith(lowered)})
    if len(found) == 1:
        return found[0]
    if found:
        listed = ", ".join(f"{i} {short_class_name(names[i])}" for i in found[:SUGGESTIONS * 2])
        more = f" and {len(found) - SUGGESTIONS * 2} more" if len(found) > SUGGESTIONS * 2 else ""
        raise InputError(
            f"{what} {text!r} matches {len(found)} classes ({listed}{more}); give more of "
            "the name, its index or its WordNet id"
        )
    known = list(dict.fromkeys(synonym for _, synonym in synonyms if "," not in synonym))
    raise InputError(
        f"{what} {text!r} is not a class index, WordNet id or class name"
        f"{did_you_mean(lowered, known)} ({len(names)} classes)"
    )


def _either(names: Sequence[str]) -> str:
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + f" or {names[-1]}"


def _is_container(model: nn.Module, layer: str) -> bool:
    try:
        return bool(list(model.get_submodule(layer).children()))
    except AttributeError:
        return False
