"""``deconvnet evolve``: the paper's Fig. 4, features forming over training checkpoints."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from deconvnet.errors import InputError
from deconvnet.faces.cli._bars import ProgressBar
from deconvnet.faces.cli._help import command_parser
from deconvnet.faces.cli._inputs import add_loader_arguments
from deconvnet.faces.cli._model import add_model_arguments, load_model
from deconvnet.faces.cli._numbers import (
    MAX_SEED,
    MAX_TILE,
    MIN_TILE,
    int_in,
)
from deconvnet.faces.cli._output import OutputFolder, add_output_arguments, writes_output
from deconvnet.faces.cli._rules import add_rule_arguments, reverse_policy
from deconvnet.figures.evolution import DEFAULT_TILE, evolution_sheet
from deconvnet.figures.files import save_png, write_json
from deconvnet.inputs import datasets
from deconvnet.instruments.evolution import DEFAULT_MAPS, EvolutionResult, evolve
from deconvnet.instruments.topk.scan import MapChoice

RESULTS = "evolution.json"
EXAMPLES = """examples:
  deconvnet train-default --data ../shared/data/cifar10 --save-epochs 1,2,5,10,15 --out ckpt/
  deconvnet evolve ckpt/default_epoch*.pth --data ../shared/data/cifar10/test \
      --layers conv1,conv4 --out out/

Each CHECKPOINT is a state dict (.pth/.pt, read with weights_only=True, or .safetensors)
of the --model architecture, given in training order: they are the figure's columns.
"""
SUMMARY = "features forming during training, over checkpoints (the paper's Fig. 4)"
DESCRIPTION = """For each checkpoint, project the strongest activation of each chosen map
over a dataset (Zeiler & Fergus 2014, Fig. 4): maps as rows, checkpoints as columns."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = command_parser(sub, "evolve", SUMMARY, DESCRIPTION, run, EXAMPLES)
    parser.add_argument(
        "checkpoints", nargs="+", metavar="CHECKPOINT", help="state dicts, in training order"
    )
    parser.add_argument("--data", required=True, help="a folder of images or an .npz file")
    add_model_arguments(parser)
    parser.add_argument("--layers", required=True, help="comma-separated layers (aliases ok)")
    parser.add_argument("--maps", default=DEFAULT_MAPS, help="all, N, random:N or 3,7,12")
    parser.add_argument("--seed", type=int_in(0, MAX_SEED), default=0, help="seed for random:N")
    parser.add_argument(
        "--labels",
        default=None,
        help="comma-separated column names, one per checkpoint (default: the file names)",
    )
    add_loader_arguments(parser)
    add_rule_arguments(parser)
    parser.add_argument(
        "--tile", type=int_in(MIN_TILE, MAX_TILE), default=DEFAULT_TILE, help="tile size in pixels"
    )
    add_output_arguments(parser)


@writes_output(apart_from=("data", "--data"))
def run(args: argparse.Namespace, folder: OutputFolder) -> int:
    loaded = load_model(args)
    layers = loaded.layer_list(args.layers)
    maps = _maps(args.maps)
    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    if labels is not None and len(labels) != len(args.checkpoints):
        raise InputError(f"--labels names {len(labels)} columns for {len(args.checkpoints)}")
    data = datasets.open_dataset(args.data, loaded.preprocessing)
    policy = reverse_policy(args)
    with ProgressBar("scan", unit="img") as bar:
        result = evolve(
            loaded.model,
            [Path(p) for p in args.checkpoints],
            data,
            layers,
            maps=maps,
            seed=args.seed,
            labels=labels,
            rule=policy.rule,
            lrn=policy.lrn,
            collisions=policy.collisions,
            activations=policy.activations,
            precision=policy.precision,
            batch_size=args.batch_size,
            workers=args.workers,
            progress=bar,
        )
    names = {layer: loaded.display_name(layer) for layer in layers}
    sheets = {}
    for layer in layers:
        sheets[layer] = f"evolution_{names[layer]}.png".replace("/", "_")
        save_png(
            evolution_sheet(result, layer, tile=args.tile, display_names=names),
            args.out / sheets[layer],
        )
        print(f"{names[layer]}: {args.out / sheets[layer]}")
    write_json(_results(result, args.checkpoints, names), args.out / RESULTS)
    folder.write_manifest(
        {
            "command": "evolve",
            **loaded.provenance(),
            "data": str(args.data),
            "checkpoints": [str(p) for p in args.checkpoints],
            "labels": list(result.labels),
            "layers": names,
            "maps": result.maps,
            "seed": args.seed,
            "rule": policy.rule,
            "lrn": policy.lrn,
            "collisions": policy.collisions,
            "activations": policy.activations,
            "precision": policy.precision,
            "sheets": sheets,
            "results": RESULTS,
        }
    )
    return 0


def _maps(text: str) -> MapChoice:
    """``--maps``: all, N, random:N, or a comma-separated list of channels."""
    if "," in text:
        try:
            return MapChoice.parse([int(part) for part in text.split(",") if part.strip()])
        except ValueError:
            raise InputError(f"--maps list must hold channel numbers, got {text!r}") from None
    return MapChoice.parse(text)


def _results(
    result: EvolutionResult, checkpoints: list[str], names: dict[str, str]
) -> dict[str, Any]:
    """Every cell: where the strongest activation was, its value and the boxes shown."""
    cells = []
    for (layer, channel, column), item in sorted(result.cells.items()):
        cells.append(
            {
                "layer": layer,
                "layer_alias": names.get(layer, layer),
                "map": channel,
                "checkpoint": column,
                "label": result.labels[column],
                "value": item.entry.value,
                "image": result.names.get(item.entry.image_id, str(item.entry.image_id)),
                "position": list(item.entry.position),
                "crop_box": list(item.crop_box),
                "field_box": list(item.field_box),
                "precision": item.precision,
            }
        )
    return {
        "format": "deconvnet-evolution/1",
        "checkpoints": checkpoints,
        "labels": list(result.labels),
        "channels": result.channels,
        "images_scanned": result.num_images,
        "cells": cells,
    }
