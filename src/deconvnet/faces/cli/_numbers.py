"""Numbers on the command line: ASCII only, and each option within a range it can run with.

Python's ``int()`` and ``float()`` accept more than a user means: ``3_0`` is 30, ``١٢``
(Arabic-Indic digits) is 12, `` 7 `` is 7. Options here take plain ASCII digits, and every
numeric option names its range, so ``--batch-size 0`` or ``--k 99999999999999999999`` is a
usage error (exit 2) at the argparse boundary instead of a traceback deep inside a run.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from typing import TypeVar

Number = TypeVar("Number", int, float)

_WHOLE = re.compile(r"[0-9]+")
_REAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
MAX_DIGITS = 30
"""Longer digit strings are refused before conversion (no bound here is near 10**30)."""

MAX_BATCH = 4096
"""Images or reverse passes run at once; more would not fit any one accelerator."""
MAX_K = 1000
"""Images kept per feature map by ``topk`` (the paper shows 9)."""
MAX_SEED = 2**63 - 1
"""The largest seed both NumPy and ``torch.manual_seed`` take."""
MAX_WORKERS = 256
MAX_CHECKPOINT_EVERY = 10**6
MIN_TILE, MAX_TILE = 16, 1024
"""``topk`` tile side in pixels: readable, and a sheet of K tiles still fits in memory."""
MAX_SIDE = 4096
"""Input or occluder side in pixels (``layers --size``, ``occlude --size/--stride``)."""
MAX_SELECTION_NUMBER = 2**31 - 1
"""Channels, positions and counts in ``--select``: far above any layer's size."""


def whole_number(text: str) -> int:
    """``text`` as a non-negative integer written in ASCII digits; ``ValueError`` otherwise."""
    if len(text) > MAX_DIGITS or not _WHOLE.fullmatch(text):
        raise ValueError(f"not a whole number in ASCII digits: {text!r}")
    return int(text)


def real_number(text: str) -> float:
    """``text`` as a finite ASCII decimal (``1.5``, ``-2e3``); ``ValueError`` otherwise."""
    if len(text) > MAX_DIGITS or not _REAL.fullmatch(text):
        raise ValueError(f"not a decimal number in ASCII: {text!r}")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text!r}")
    return value


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type=``: a whole number from ``low`` to ``high``, else a usage error."""
    return _ranged(
        whole_number, low, high, f"a whole number from {low} to {high} (ASCII digits)", "int"
    )


def real_in(low: float, high: float) -> Callable[[str], float]:
    """An argparse ``type=``: an ASCII decimal from ``low`` to ``high``, else a usage error."""
    return _ranged(
        real_number, low, high, f"a decimal number from {low:g} to {high:g} (ASCII)", "real"
    )


def _ranged(
    convert: Callable[[str], Number], low: Number, high: Number, wanted: str, kind: str
) -> Callable[[str], Number]:
    def parse(text: str) -> Number:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
        return value

    parse.__name__ = f"{kind}_{low:g}_{high:g}"  # argparse names the type in its errors
    return parse
