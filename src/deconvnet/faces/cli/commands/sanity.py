"""``deconvnet sanity``: cascading model randomisation (Adebayo et al. 2018)."""

from __future__ import annotations

import argparse
import math

from deconvnet.engine.rules import RULES
from deconvnet.faces.cli._bars import ProgressBar
from deconvnet.faces.cli._help import HelpFormatter
from deconvnet.faces.cli._inputs import image_path, prepare
from deconvnet.faces.cli._model import add_model_arguments, load_model
from deconvnet.faces.cli._output import OutputFolder, add_output_arguments, writes_output
from deconvnet.faces.cli._select import add_target_arguments, parse_select
from deconvnet.figures.files import save_png
from deconvnet.figures.sanity import sanity_figure
from deconvnet.instruments import sanity

FIGURE = "sanity.png"
DEFAULT_SELECT = "top:1"
EXAMPLES = """examples:
  deconvnet sanity --layer conv3 --select map:12 --out out/
  deconvnet sanity cat.jpg --caffe deploy.prototxt net.caffemodel --layer conv5 --out out/
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "sanity",
        help="cascading randomisation: does the projection depend on the weights?",
        description="Re-initialise the model's layers from the top down, one more each step,\n"
        "and compare each projection with the trained one (Spearman rank correlation, SSIM).",
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "image", nargs="?", metavar="IMAGE", help="an image file (default: a bundled CC0 photo)"
    )
    add_model_arguments(parser)
    add_target_arguments(parser, DEFAULT_SELECT)
    parser.add_argument("--rule", choices=RULES, default="zeiler", help="reverse rule")
    parser.add_argument("--seed", type=int, default=sanity.DEFAULT_SEED, help="random seed")
    add_output_arguments(parser)
    parser.set_defaults(func=run)


@writes_output()
def run(args: argparse.Namespace, folder: OutputFolder) -> int:
    loaded = load_model(args)
    layer = loaded.layer(args.layer)
    selection = args.select or parse_select(DEFAULT_SELECT)
    device = loaded.device
    path = image_path(args.image)
    image = prepare(path, loaded.preprocessing, device)
    with ProgressBar(f"{path.name}: randomising", unit="layer") as bar:
        result = sanity.cascading_randomisation(
            loaded.model,
            image.tensor,
            layer,
            selection,
            rule=args.rule,
            seed=args.seed,
            progress=bar,
        )
    order = loaded.preprocessing.channel_order
    save_png(sanity_figure(result, channel_order=order), args.out / FIGURE)
    manifest = {
        "command": "sanity",
        "image": str(path),
        "input_size": list(image.tensor.shape[2:]),
        **loaded.provenance(),
        "layer": layer,
        "layer_alias": loaded.display_name(layer),
        "selection": selection.describe(),
        "seeds": list(result.seeds),
        "rule": args.rule,
        "seed": args.seed,
        "metrics": "spearman and ssim of |projection| summed over channels, divided by max; "
        "spearman_signed of the channel sum",
        "rows": [
            {
                "step": row.step,
                "randomised_down_to": row.randomised[-1] if row.randomised else None,
                "spearman": _number(row.spearman),
                "ssim": _number(row.ssim),
                "spearman_signed": _number(row.spearman_signed),
            }
            for row in result.rows
        ],
        "figure": FIGURE,
    }
    folder.write_manifest(manifest)
    print(args.out / FIGURE)
    return 0


def _number(value: float) -> float | None:
    """JSON has no NaN: an undefined correlation (a constant map) is written as null."""
    return value if math.isfinite(value) else None
