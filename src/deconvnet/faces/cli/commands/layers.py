"""``deconvnet layers``: every projectable layer with its output shape and receptive field."""

from __future__ import annotations

import argparse

from deconvnet.engine.receptive import layer_table
from deconvnet.faces.cli._help import HelpFormatter
from deconvnet.faces.cli._model import add_model_arguments, load_model
from deconvnet.faces.cli._numbers import MAX_SIDE, int_in

NAME_WIDTH = 28


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "layers",
        help="list layers, output shapes and receptive fields",
        description="List every layer with its output shape for the model's input size and\n"
        "its receptive field (size, stride, offset in input pixels).",
        formatter_class=HelpFormatter,
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--size",
        type=int_in(1, MAX_SIDE),
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="input size (default: the model's own)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    loaded = load_model(args)
    height, width = args.size or loaded.preprocessing.input_size
    device = loaded.device
    rows = layer_table(loaded.model, (1, 3, height, width), device=device)
    aliases = {target: alias for alias, target in loaded.layer_aliases.items()}
    print(f"{loaded.name}: input 3x{height}x{width}")
    header = f"{'layer':<{NAME_WIDTH}} {'type':<18} {'output':<18} {'rf size':>9} {'stride':>7}"
    print(f"{header} {'offset':>12}")
    for row in rows:
        name = row.name + (f" ({aliases[row.name]})" if row.name in aliases else "")
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
    return 0
