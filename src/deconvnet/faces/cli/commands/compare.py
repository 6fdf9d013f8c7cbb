"""``deconvnet compare``: one selection projected with each reverse rule, row by row."""

from __future__ import annotations

import argparse

from deconvnet.engine.rules import RULES
from deconvnet.faces.cli._bars import ProgressBar
from deconvnet.faces.cli._help import command_parser
from deconvnet.faces.cli._inputs import add_full_frame_argument
from deconvnet.faces.cli._output import OutputFolder, add_output_arguments, writes_output
from deconvnet.faces.cli._rules import (
    add_activations_argument,
    add_precision_argument,
    faces_precision,
    reverse_policy,
)
from deconvnet.faces.cli._select import add_image_target_arguments, image_target
from deconvnet.figures.compare import comparison_figure, seed_box, tile_values
from deconvnet.figures.files import save_png
from deconvnet.figures.projection import CONTRASTS
from deconvnet.figures.render import DISPLAYS
from deconvnet.instruments import compare

FIGURE = "compare.png"
DEFAULT_SELECT = "top:1"
EXAMPLES = """examples:
  deconvnet compare --layer conv3 --select map:12 --out out/
  deconvnet compare cat.jpg --caffe deploy.prototxt net.caffemodel --layer conv5 --out out/
"""
SUMMARY = "the same selection under zeiler, guided and gradient, side by side"
DESCRIPTION = """Project one selection with the deconvnet (zeiler), guided backprop and
the plain gradient: one row per selected unit, one column per rule, each row cut
to that unit's receptive field."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = command_parser(sub, "compare", SUMMARY, DESCRIPTION, run, EXAMPLES)
    add_image_target_arguments(parser, DEFAULT_SELECT)
    add_activations_argument(parser)
    add_precision_argument(parser)
    group = parser.add_argument_group("pictures")
    group.add_argument("--display", choices=DISPLAYS, default="rgb", help="as for project")
    group.add_argument(
        "--contrast",
        choices=CONTRASTS,
        default="tile",
        help="tile: each tile on its own scale, its largest |value| written under it; "
        "shared: one scale for every tile",
    )
    add_full_frame_argument(group)
    add_output_arguments(parser)


@writes_output()
def run(args: argparse.Namespace, folder: OutputFolder) -> int:
    loaded, layer, selection, image = image_target(args, DEFAULT_SELECT)
    shown = loaded.display_name(layer)
    activations = reverse_policy(args).activations
    with ProgressBar(f"{image.path.name}: rules", unit="rule") as bar:
        result = compare.compare_rules(
            loaded.model,
            image.tensor,
            layer,
            selection,
            activations=activations,
            precision=faces_precision(args),
            progress=bar,
        )
    sheet = comparison_figure(
        result,
        image.rgb,
        channel_order=loaded.preprocessing.channel_order,
        full_frame=args.full_frame,
        display=args.display,
        contrast=args.contrast,
        layer_label=shown,
    )
    save_png(sheet, args.out / FIGURE)
    seeds = []
    for k in range(result.channels.numel()):
        values = tile_values(result, k, args.full_frame)
        seeds.append(
            {
                "channel": int(result.channels[k]),
                "position": None if result.positions is None else result.positions[k],
                "value": float(result.values[k]),
                "box": seed_box(result, k, args.full_frame),
                "largest_magnitude": {
                    rule: float(values[r].abs().max()) for r, rule in enumerate(result.rules)
                },
            }
        )
    manifest = {
        "command": "compare",
        "image": str(image.path),
        "input_size": list(image.tensor.shape[2:]),
        **loaded.provenance(),
        "layer": layer,
        "layer_alias": shown,
        "selection": selection.describe(),
        "display": args.display,
        "contrast": args.contrast,
        "full_frame": args.full_frame,
        "rules": {rule: RULES[rule].description for rule in result.rules},
        "activations": result.activations,
        "precision": faces_precision(args),
        "precisions": dict(zip(result.rules, map(list, result.precisions), strict=True)),
        "seeds": seeds,
        "figure": FIGURE,
    }
    folder.write_manifest(manifest)
    print(args.out / FIGURE)
    return 0
