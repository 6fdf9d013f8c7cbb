"""What to project: ``--layer`` and ``--select`` (text to a Selection: ``top:9``,
``map:12``, ``neuron:12,3,4`` …), and the model, layer, selection and image of the commands
that work on one image."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import NamedTuple

from deconvnet.engine import selection as sel
from deconvnet.errors import SelectionError
from deconvnet.faces.cli._inputs import add_image_argument, image_path
from deconvnet.faces.cli._model import LoadedModel, add_model_arguments, load_model
from deconvnet.faces.cli._numbers import MAX_SELECTION_NUMBER, real_number, whole_number
from deconvnet.inputs.prepared import PreparedImage, prepare

SELECT_SYNTAX = "top:K | map:C | neuron:C,Y,X | whole:C | threshold:T | unit:I | topunits:K"
DEFAULT_SELECT = "top:9"


def parse_select(text: str) -> sel.Selection:
    """Parse one selection; :class:`SelectionError` with the accepted syntax otherwise.

    Numbers are ASCII digits (``top:3_0`` and ``top:١٢`` are refused), each at most
    :data:`~deconvnet.faces.cli._numbers.MAX_SELECTION_NUMBER`."""
    kind, _, value = text.strip().partition(":")
    kind = kind.lower()
    try:
        if kind == "threshold":
            return sel.Threshold(real_number(value))
        numbers = [whole_number(part) for part in value.split(",")] if value else []
        if any(n > MAX_SELECTION_NUMBER for n in numbers):
            raise ValueError
        if kind == "neuron" and len(numbers) >= 2:
            return sel.Neuron(numbers[0], *numbers[1:])
        single: dict[str, Callable[[int], sel.Selection]] = {
            "top": sel.TopMaps,
            "map": sel.MapMax,
            "whole": sel.WholeMap,
            "unit": sel.Unit,
            "topunits": sel.TopUnits,
        }
        if kind in single and len(numbers) == 1:
            return single[kind](numbers[0])
    except ValueError:
        pass
    raise SelectionError(f"cannot read --select {text!r}; use {SELECT_SYNTAX}")


def select_argument(text: str) -> sel.Selection:
    """argparse ``type=``: a malformed selection is a usage error (exit 2)."""
    try:
        return parse_select(text)
    except SelectionError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


class Target(NamedTuple):
    """The model, layer, selection and prepared image of a one-image command."""

    loaded: LoadedModel
    layer: str
    selection: sel.Selection
    image: PreparedImage


def add_image_target_arguments(parser: argparse.ArgumentParser, default_select: str) -> None:
    """``IMAGE``, the model options, ``--layer`` and ``--select`` (compare, sanity)."""
    add_image_argument(parser)
    add_model_arguments(parser)
    add_target_arguments(parser, default_select)


def image_target(args: argparse.Namespace, default_select: str) -> Target:
    """The model the options name, its layer and selection, and the image made ready."""
    loaded = load_model(args)
    layer = loaded.layer(args.layer)
    selection = args.select or parse_select(default_select)
    image = prepare(image_path(args.image), loaded.preprocessing, loaded.device)
    return Target(loaded, layer, selection, image)


def add_target_arguments(parser: argparse.ArgumentParser, default_select: str) -> None:
    """``--layer`` and ``--select``: what to project (shared by project/compare/sanity)."""
    parser.add_argument(
        "--layer",
        default=None,
        help="layer name or alias (default: the model's last conv, after its ReLU)",
    )
    parser.add_argument(
        "--select",
        type=select_argument,
        default=None,
        help=f"{SELECT_SYNTAX} (default: {default_select})",
    )
