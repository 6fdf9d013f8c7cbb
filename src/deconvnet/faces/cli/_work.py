"""``--max-work``: the ceiling on a command's counted work (:mod:`deconvnet.instruments.work`)."""

from __future__ import annotations

import argparse

from deconvnet.faces.cli._numbers import int_in
from deconvnet.instruments.work import DEFAULT_MAX_WORK

MAX_MAX_WORK = 10**12
"""The largest ceiling one may ask for."""


def add_max_work_argument(parser: argparse.ArgumentParser, unit: str) -> None:
    """``--max-work N``: refuse before starting when the command would run more than N
    ``unit`` (each about one forward pass of one image)."""
    parser.add_argument(
        "--max-work",
        type=int_in(1, MAX_MAX_WORK),
        default=DEFAULT_MAX_WORK,
        help=f"refuse, before starting, a run of more than this many {unit}",
    )
