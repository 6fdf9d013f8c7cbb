"""``deconvnet compare``: one selection projected with each reverse rule, one colour scale."""

from __future__ import annotations

import argparse

from deconvnet.engine.rules import RULES
from deconvnet.faces.cli._bars import ProgressBar
from deconvnet.faces.cli._help import command_parser
from deconvnet.faces.cli._inputs import add_full_frame_argument
from deconvnet.faces.cli._output import OutputFolder, add_output_arguments, writes_output
from deconvnet.faces.cli._rules import add_precision_argument, faces_precision
from deconvnet.faces.cli._select import add_image_target_arguments, image_target
from deconvnet.figures import render
from deconvnet.figures.compare import comparison_figure, shown_projections
from deconvnet.figures.files import save_png
from deconvnet.instruments import compare

FIGURE = "compare.png"
DEFAULT_SELECT = "top:1"
EXAMPLES = """examples:
  deconvnet compare --layer conv3 --select map:12 --out out/
  deconvnet compare cat.jpg --caffe deploy.prototxt net.caffemodel --layer conv5 --out out/
"""
SUMMARY = "the same selection under zeiler, guided and gradient, side by side"
DESCRIPTION = """Project one selection with the deconvnet (zeiler), guided backprop and
the plain gradient, on one shared colour scale and a signed view."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = command_parser(sub, "compare", SUMMARY, DESCRIPTION, run, EXAMPLES)
    add_image_target_arguments(parser, DEFAULT_SELECT)
    add_precision_argument(parser)
    add_full_frame_argument(parser)
    add_output_arguments(parser)


@writes_output()
def run(args: argparse.Namespace, folder: OutputFolder) -> int:
    loaded, layer, selection, image = image_target(args, DEFAULT_SELECT)
    with ProgressBar(f"{image.path.name}: rules", unit="rule") as bar:
        result = compare.compare_rules(
            loaded.model,
            image.tensor,
            layer,
            selection,
            precision=faces_precision(args),
            progress=bar,
        )
    sheet = comparison_figure(
        result,
        image.rgb,
        channel_order=loaded.preprocessing.channel_order,
        full_frame=args.full_frame,
    )
    save_png(sheet, args.out / FIGURE)
    shown = shown_projections(result, args.full_frame)
    minmax = render.shared_range(list(shown), "minmax")
    signed = render.shared_range(list(shown), "signed")
    manifest = {
        "command": "compare",
        "image": str(image.path),
        "input_size": list(image.tensor.shape[2:]),
        **loaded.provenance(),
        "layer": layer,
        "layer_alias": loaded.display_name(layer),
        "selection": selection.describe(),
        "zoom_box": None if args.full_frame else result.zoom,
        "rules": {rule: RULES[rule].description for rule in result.rules},
        "precision": faces_precision(args),
        "precisions": dict(zip(result.rules, map(list, result.precisions), strict=True)),
        "shared_range": {"minmax": minmax, "signed": signed},
        "seeds": [
            {
                "channel": int(result.channels[k]),
                "position": None if result.positions is None else result.positions[k],
                "value": float(result.values[k]),
            }
            for k in range(result.channels.numel())
        ],
        "figure": FIGURE,
    }
    folder.write_manifest(manifest)
    print(args.out / FIGURE)
    return 0
