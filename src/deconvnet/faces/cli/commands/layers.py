"""``deconvnet layers``: every projectable layer with its output shape and receptive field.

For a Caffe net the names in parentheses are Caffe's blob names: a blob that an in-place
layer overwrites (``conv3`` under ``relu3``) is listed beside the layer that wrote it last,
which is what Caffe holds under that name after the forward pass; the value before it is
``conv3_preact``.
"""

from __future__ import annotations

import argparse

from deconvnet.engine.receptive import layer_table
from deconvnet.faces.cli._help import command_parser
from deconvnet.faces.cli._model import add_model_arguments, load_model

NAME_WIDTH = 28
SUMMARY = "list layers, output shapes and receptive fields"
DESCRIPTION = """List every layer with its output shape for the model's input size and
its receptive field (size, stride, offset in input pixels). Aliases in
parentheses are accepted wherever a layer is named; for Caffe nets they are
Caffe's blob names (conv3 = the blob after its in-place ReLU, as Caffe holds
it; conv3_preact = before the ReLU)."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = command_parser(sub, "layers", SUMMARY, DESCRIPTION, run)
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    loaded = load_model(args)
    height, width = loaded.preprocessing.input_size
    channels = loaded.preprocessing.channels
    device = loaded.device
    rows = layer_table(loaded.model, (1, channels, height, width), device=device)
    aliases: dict[str, list[str]] = {}
    for alias, target in loaded.layer_aliases.items():
        aliases.setdefault(target, []).append(alias)
    print(f"{loaded.name}: input {channels}x{height}x{width}")
    header = f"{'layer':<{NAME_WIDTH}} {'type':<18} {'output':<18} {'rf size':>9} {'stride':>7}"
    print(f"{header} {'offset':>12}")
    for row in rows:
        name = row.name + (f" ({', '.join(aliases[row.name])})" if row.name in aliases else "")
        shape = "x".join(map(str, row.output_shape[1:])) if row.output_shape else "-"
        if row.rf is None:
            rf = f"{'-':>9} {'-':>7} {'-':>12}"
        elif row.rf.is_global:
            rf = f"{'global':>9} {'-':>7} {'-':>12}"
        else:
            rf = (
                f"{row.rf.size[0]:>4}x{row.rf.size[1]:<4} {row.rf.stride[0]:>7} "
                f"{f'{row.rf.offset[0]:g},{row.rf.offset[1]:g}':>12}"
            )
        print(f"{name:<{NAME_WIDTH}} {row.type:<18} {shape:<18} {rf}")
    if args.caffe and loaded.layer_aliases:
        print(
            "(names in parentheses are Caffe's blobs, as Caffe holds them after the forward "
            "pass: an in-place layer's top is listed at that layer; NAME_preact is the value "
            "before it)"
        )
    return 0
