"""``deconvnet compare``: one selection projected with each reverse rule, one colour scale."""

from __future__ import annotations

import argparse
from pathlib import Path

from deconvnet.faces.cli._bars import ProgressBar
from deconvnet.faces.cli._help import HelpFormatter
from deconvnet.faces.cli._inputs import image_path, prepare
from deconvnet.faces.cli._model import add_model_arguments, load_model
from deconvnet.faces.cli._select import add_target_arguments, parse_select
from deconvnet.figures import render
from deconvnet.figures.compare import comparison_figure
from deconvnet.figures.files import save_png, write_json
from deconvnet.instruments import compare

MANIFEST = "manifest.json"
FIGURE = "compare.png"
DEFAULT_SELECT = "top:1"
EXAMPLES = """examples:
  deconvnet compare --layer conv3 --select map:12 --out out/
  deconvnet compare cat.jpg --caffe deploy.prototxt net.caffemodel --layer conv5 --out out/
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "compare",
        help="the same selection under zeiler, guided and gradient, side by side",
        description="Project one selection with the deconvnet (zeiler), guided backprop and\n"
        "the plain gradient, on one shared colour scale and a signed view.",
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "image", nargs="?", metavar="IMAGE", help="an image file (default: a bundled CC0 photo)"
    )
    add_model_arguments(parser)
    add_target_arguments(parser, DEFAULT_SELECT)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    loaded = load_model(args)
    layer = loaded.layer(args.layer)
    selection = args.select or parse_select(DEFAULT_SELECT)
    device = loaded.device
    path = image_path(args.image)
    image = prepare(path, loaded.preprocessing, device)
    with ProgressBar(f"{path.name}: rules", unit="rule") as bar:
        result = compare.compare_rules(loaded.model, image.tensor, layer, selection, progress=bar)
    sheet = comparison_figure(result, image.rgb, channel_order=loaded.preprocessing.channel_order)
    save_png(sheet, args.out / FIGURE)
    minmax = render.shared_range(list(result.images), "minmax")
    signed = render.shared_range(list(result.images), "signed")
    manifest = {
        "command": "compare",
        "image": str(path),
        "input_size": list(image.tensor.shape[2:]),
        **loaded.provenance(),
        "layer": layer,
        "layer_alias": loaded.display_name(layer),
        "selection": selection.describe(),
        "rules": {rule: compare.RULE_DESCRIPTIONS[rule] for rule in result.rules},
        "shared_range": {"minmax": minmax, "signed": signed},
        "seeds": [
            {
                "channel": int(result.channels[k]),
                "position": None if result.positions is None else result.positions[k],
                "value": float(result.values[k]),
            }
            for k in range(result.channels.numel())
        ],
        "files": {"figure": FIGURE},
    }
    write_json(manifest, args.out / MANIFEST)
    print(args.out / FIGURE)
    return 0
