"""``deconvnet maps``: the feature maps of a layer as a grid (the old demo's vis_square)."""

from __future__ import annotations

import argparse
from pathlib import Path

from deconvnet.engine.engine import Deconvnet
from deconvnet.errors import InputError
from deconvnet.faces.cli._help import command_parser
from deconvnet.faces.cli._model import add_model_arguments, load_model
from deconvnet.faces.cli._output import (
    OutputFolder,
    add_output_arguments,
    output_stem,
    writes_output,
)
from deconvnet.figures import render
from deconvnet.figures.files import save_png
from deconvnet.inputs.prepared import prepare

SUMMARY = "feature-map grid of a layer for one image"
DESCRIPTION = "Tile every feature map of a layer for one image in a near-square grid."


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = command_parser(sub, "maps", SUMMARY, DESCRIPTION, run)
    parser.add_argument("image", metavar="IMAGE", help="an image file")
    add_model_arguments(parser)
    parser.add_argument(
        "--layer", default=None, help="layer name or alias (default: the model's last conv)"
    )
    parser.add_argument("--labels", action="store_true", help="print map indices on the tiles")
    add_output_arguments(parser)


@writes_output()
def run(args: argparse.Namespace, folder: OutputFolder) -> int:
    loaded = load_model(args)
    layer = loaded.layer(args.layer)
    device = loaded.device
    image = prepare(Path(args.image), loaded.preprocessing, device)
    output = Deconvnet(loaded.model).layer_output(image.tensor, layer)[0]
    if output.dim() != 3:
        raise InputError(f"layer {layer!r} has no feature maps (output {tuple(output.shape)})")
    grid = render.feature_grid(output.cpu(), labels=args.labels)
    stem = output_stem(f"{Path(args.image).stem}_{loaded.display_name(layer)}_maps")
    save_png(grid, args.out / f"{stem}.png")
    folder.write_manifest(
        {
            **loaded.provenance(),
            "image": str(args.image),
            "layer": layer,
            "layer_alias": loaded.display_name(layer),
            "maps": int(output.shape[0]),
            "map_size": list(output.shape[1:]),
            "normalisation": "min-max over the whole grid",
            "file": f"{stem}.png",
        }
    )
    print(args.out / f"{stem}.png")
    return 0
