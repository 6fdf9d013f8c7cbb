"""``deconvnet models``: the zoo at a glance, so a user can pick a model and weights offline.

One row per weight set (a model without any gets one row saying so): name, input size,
licence, and whether the weights ship inside the package or are downloaded on first use.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from deconvnet import models
from deconvnet.faces.cli._help import command_parser
from deconvnet.models import ModelSpec, Weights

EMBEDDED = "embedded"
DOWNLOADED = "download"
NO_WEIGHTS = "none (random init)"
DEFAULT_MARK = " (default)"
HEADER = ("model", "weights", "input", "licence", "source", "description")
EXAMPLES = """examples:
  deconvnet models
  deconvnet models --json
  deconvnet project --model squeezenet1_0 --weights deep-compression --out out/
"""
SUMMARY = "list the zoo's models and weight sets, their licences and whether they are offline"
DESCRIPTION = """List every model of the zoo with its input size and each named weight \
set: its licence, and whether it is embedded in the package (works offline) or \
downloaded into torch's hub cache on first use."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = command_parser(sub, "models", SUMMARY, DESCRIPTION, run, EXAMPLES)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    specs = [models.info(name) for name in models.names()]
    if args.json:
        print(json.dumps({"models": [_model_record(spec) for spec in specs]}, indent=2))
        return 0
    rows = [HEADER, *(row for spec in specs for row in _rows(spec))]
    widths = [max(len(row[column]) for row in rows) for column in range(len(HEADER) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip())
    return 0


def _rows(spec: ModelSpec) -> list[tuple[str, ...]]:
    """Table rows of one model; its name and description only on the first."""
    description = _description(spec)
    if not spec.weights:
        size = _size_text(spec.preprocessing.input_size)
        return [(spec.name, NO_WEIGHTS, size, "-", "-", description)]
    rows: list[tuple[str, ...]] = []
    for position, weights in enumerate(spec.weights):
        name = weights.name + (DEFAULT_MARK if weights.name == spec.default_weights else "")
        rows.append(
            (
                spec.name if position == 0 else "",
                name,
                _size_text(weights.preprocessing.input_size),
                weights.licence,
                EMBEDDED if weights.embedded else DOWNLOADED,
                description if position == 0 else "",
            )
        )
    return rows


def _model_record(spec: ModelSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "description": _description(spec),
        "input_size": list(spec.preprocessing.input_size),
        "num_classes": spec.num_classes,
        "default_weights": spec.default_weights,
        "weights": [_weights_record(weights) for weights in spec.weights],
    }


def _weights_record(weights: Weights) -> dict[str, Any]:
    return {
        "name": weights.name,
        "input_size": list(weights.preprocessing.input_size),
        "licence": weights.licence,
        "embedded": weights.embedded,
        "url": weights.url,
        "file_name": weights.file_name,
        "sha256": weights.sha256,
        "num_params": weights.num_params,
        "provenance": weights.provenance,
    }


def _description(spec: ModelSpec) -> str:
    """The builder's one-line summary without reStructuredText literal quotes."""
    return spec.summary.replace("``", "")


def _size_text(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"
