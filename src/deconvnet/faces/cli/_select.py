"""``--select`` text to a Selection: ``top:9``, ``map:12``, ``neuron:12,3,4`` …"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from deconvnet.engine import selection as sel
from deconvnet.errors import SelectionError

SELECT_SYNTAX = "top:K | map:C | neuron:C,Y,X | whole:C | threshold:T | unit:I | topunits:K"
DEFAULT_SELECT = "top:9"


def parse_select(text: str) -> sel.Selection:
    """Parse one selection; :class:`SelectionError` with the accepted syntax otherwise."""
    kind, _, value = text.strip().partition(":")
    kind = kind.lower()
    try:
        if kind == "threshold":
            threshold = float(value)
            if not math.isfinite(threshold):
                raise ValueError
            return sel.Threshold(threshold)
        numbers = [int(part) for part in value.split(",")] if value else []
        if any(n < 0 for n in numbers):
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


def add_target_arguments(parser: argparse.ArgumentParser, default_select: str) -> None:
    """``--layer`` and ``--select``: what to project (shared by project/compare/sanity)."""
    parser.add_argument(
        "--layer", default=None, help="layer name or alias (default: the model's last conv)"
    )
    parser.add_argument(
        "--select",
        type=select_argument,
        default=None,
        help=f"{SELECT_SYNTAX} (default: {default_select})",
    )
