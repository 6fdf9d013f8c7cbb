"""``deconvnet project``: the main job — project a layer's activations to pixels."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deconvnet import figures, render
from deconvnet.cli._inputs import image_paths, prepare
from deconvnet.cli._model import add_model_arguments, load_model
from deconvnet.cli._progress import ProgressBar
from deconvnet.cli._select import DEFAULT_SELECT, SELECT_SYNTAX, select_argument
from deconvnet.engine import DEFAULT_BATCH_SIZE, Deconvnet
from deconvnet.receptive import receptive_fields
from deconvnet.rules import COLLISION_MODES, LRN_MODES, RULES

MANIFEST = "manifest.json"
EXAMPLES = """examples:
  deconvnet project --out out/          # embedded default model on the bundled photo
  deconvnet project cat.jpg --layer conv3 --select map:12 --out out/
  deconvnet project cat.jpg --model alexnet --weights imagenet --layer features.10 --out out/
  deconvnet project img.jpg --caffe deploy.prototxt net.caffemodel --layer pool5 --out out/
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "project",
        help="project a layer's activations back to pixels (the deconvnet)",
        description="Project selected activations of a layer back to pixel space "
        "(Zeiler & Fergus 2014). Writes PNGs and a JSON manifest.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="default: a bundled CC0 photo")
    add_model_arguments(parser)
    parser.add_argument("--layer", default=None, help="layer name or alias (default: last conv)")
    parser.add_argument(
        "--select",
        type=select_argument,
        default=select_argument(DEFAULT_SELECT),
        help=f"{SELECT_SYNTAX} (default: {DEFAULT_SELECT})",
    )
    add_rule_arguments(parser)
    parser.add_argument("--no-crop", action="store_true", help="keep whole-image projections")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.set_defaults(func=run)


def add_rule_arguments(parser: argparse.ArgumentParser) -> None:
    """``--rule``, ``--lrn``, ``--collisions``, ``--batch-size`` (shared with other commands)."""
    parser.add_argument("--rule", choices=RULES, default="zeiler", help="reverse rule")
    parser.add_argument("--lrn", choices=LRN_MODES, default="skip", help="LRN on the way down")
    parser.add_argument(
        "--collisions", choices=COLLISION_MODES, default="sum", help="overlapping unpooling"
    )
    parser.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="reverse passes run together"
    )


def run(args: argparse.Namespace) -> int:
    loaded = load_model(args)
    layer = loaded.layer(args.layer)
    label = loaded.display_name(layer)
    net = Deconvnet(
        loaded.model,
        rule=args.rule,
        lrn=args.lrn,
        collisions=args.collisions,
        batch_size=args.batch_size,
    )
    device = next(loaded.model.parameters()).device
    entries = []
    for index, path in enumerate(image_paths(args.images)):
        image = prepare(path, loaded.preprocessing, device)
        if image.downscaled:
            print(
                f"note: {path} downscaled to {image.rgb.shape[1]}x{image.rgb.shape[0]}",
                file=sys.stderr,
            )
        with ProgressBar(f"{path.name}: {label}", unit="proj") as bar:
            result = net.project(image.tensor, layer, args.select, progress=bar)
        fields = receptive_fields(loaded.model, tuple(image.tensor.shape), device=device)
        figure = figures.projection_figure(
            result,
            channel_order=loaded.preprocessing.channel_order,
            receptive_field=fields.get(layer),
            input_rgb=image.rgb,
            layer_label=label,
            crop=not args.no_crop,
        )
        stem = f"{index:02d}_{path.stem}"
        files = figures.save_projection_figure(figure, args.out, stem)
        entries.append(
            {
                "image": str(path),
                "input_size": list(image.tensor.shape[2:]),
                "sheet": files["sheet"],
                "projections": [
                    {**record, "files": tile}
                    for record, tile in zip(figure.records, files["tiles"], strict=True)
                ],
            }
        )
        print(args.out / files["sheet"])
    manifest = {
        "model": loaded.name,
        "weights": loaded.weights,
        "weights_sha256": loaded.weights_sha256,
        "layer": layer,
        "layer_alias": label,
        "selection": args.select.describe(),
        "rule": args.rule,
        "lrn": args.lrn,
        "collisions": args.collisions,
        "preprocessing": loaded.preprocessing,
        "images": entries,
    }
    render.write_json(manifest, args.out / MANIFEST)
    print(args.out / MANIFEST)
    return 0
