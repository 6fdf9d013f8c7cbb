"""``deconvnet occlude``: the paper's Fig. 7 occlusion analysis for one image."""

from __future__ import annotations

import argparse

import torch

from deconvnet.engine.engine import Deconvnet
from deconvnet.errors import InputError
from deconvnet.faces.cli._bars import ProgressBar
from deconvnet.faces.cli._classes import add_categories_argument, categories_for, parse_label
from deconvnet.faces.cli._help import command_parser
from deconvnet.faces.cli._inputs import add_image_argument, image_path
from deconvnet.faces.cli._model import add_model_arguments, load_model
from deconvnet.faces.cli._numbers import MAX_BATCH, MAX_SIDE, int_in, real_number
from deconvnet.faces.cli._output import OutputFolder, add_output_arguments, writes_output
from deconvnet.faces.cli._rules import add_activations_argument
from deconvnet.faces.cli._work import add_max_work_argument
from deconvnet.figures.files import save_png
from deconvnet.figures.occlusion import figure, figure_panels
from deconvnet.inputs.prepared import prepare
from deconvnet.instruments.occlusion import occlusion
from deconvnet.instruments.work import check_work
from deconvnet.models import naming

FIGURE = "occlusion.png"
MAX_GREY = 255
EXAMPLES = """examples:
  deconvnet occlude --out out/                      # default model, bundled photo at 32x32
  deconvnet occlude cat.jpg --caffe deploy.prototxt net.caffemodel --label 281 --out out/
  deconvnet occlude cat.jpg --model alexnet --weights imagenet --size 48 --stride 8 --out out/

Models whose preprocessing keeps photos at their own size (the default CIFAR-10 model) are
occluded at their training size (32x32 for the default), where their classifier is valid;
--native-size keeps the photo's own size instead. Size and stride default to 48 and 8 for a
224-pixel input, scaled to the input (7 and 1 at 32x32).
"""
SUMMARY = "occlusion sensitivity (the paper's Fig. 7)"
DESCRIPTION = """Slide a grey square over the image and map a layer's strongest feature
map, the class probability and the top class (Zeiler & Fergus 2014, Fig. 7)."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = command_parser(sub, "occlude", SUMMARY, DESCRIPTION, run, EXAMPLES)
    add_image_argument(parser)
    add_model_arguments(parser)
    parser.add_argument(
        "--layer",
        default=None,
        help="layer of panels (b), (c) (default: the model's last conv, after its ReLU)",
    )
    parser.add_argument(
        "--label",
        default=None,
        help="true class, an index or a name (default: the top predicted class)",
    )
    add_categories_argument(parser)
    parser.add_argument(
        "--size",
        type=int_in(1, MAX_SIDE),
        default=None,
        help="occluder side in pixels (default: 48 for a 224-pixel input, scaled to the input)",
    )
    parser.add_argument(
        "--stride",
        type=int_in(1, MAX_SIDE),
        default=None,
        help="occluder step in pixels (default: 8 for a 224-pixel input, scaled to the input)",
    )
    parser.add_argument(
        "--fill", default="mean", help="'mean' (the model's mean pixel) or a grey level 0-255"
    )
    parser.add_argument(
        "--batch-size",
        type=int_in(1, MAX_BATCH),
        default=occlusion.DEFAULT_BATCH_SIZE,
        help="occluded images per forward pass",
    )
    parser.add_argument(
        "--native-size",
        action="store_true",
        help="occlude at the photo's own size for models that do not resize (see below)",
    )
    add_activations_argument(parser)
    add_max_work_argument(parser, "occluder positions")
    add_output_arguments(parser)


@writes_output()
def run(args: argparse.Namespace, folder: OutputFolder) -> int:
    loaded = load_model(args)
    layer = loaded.layer(args.layer)
    spec = loaded.preprocessing if args.native_size else loaded.one_size_preprocessing()
    device = loaded.device
    path = image_path(args.image)
    image = prepare(path, spec, device)
    height, width = image.tensor.shape[-2:]
    options = {"batch_size": args.batch_size, "fill": _fill(args.fill, spec)}
    if args.size is not None:
        options["size"] = args.size
    if args.stride is not None:
        options["stride"] = args.stride
    occluder = occlusion.Occluder.for_input(height, width, **options)
    rows, cols = occluder.grid(height, width)
    check_work(len(rows) * len(cols), args.max_work, what="occlusion", unit="occluder positions")
    with torch.no_grad():
        outputs = loaded.model(image.tensor).flatten(1).shape[1]
    names, source = categories_for(args.categories, loaded.categories, outputs)
    label = parse_label(args.label, names, outputs)
    with ProgressBar(f"{path.name}: occlusion", unit="pos") as bar:
        result = occlusion.occlude(
            loaded.model,
            image.tensor,
            layer,
            occluder,
            label=label,
            activations=args.activations,
            progress=bar,
            max_work=args.max_work,
        )
    order = spec.channel_order
    aliases = loaded.layer_aliases
    pixels = occlusion.fill_pixels(result.fill, spec)
    what = "the mean pixel" if args.fill == "mean" else "grey"
    fill_label = f"{what}, {'RGB' if len(pixels) == 3 else 'grey'} " + ", ".join(
        f"{round(v)}" for v in pixels
    )
    channels = int(Deconvnet(loaded.model).layer_output(image.tensor, layer).shape[1])
    classes = names is not None and naming.class_layer(loaded.model, layer, channels, names)
    map_name = naming.short_class_name(names[result.channel]) if names and classes else None
    options = {"channel_order": order, "aliases": aliases, "map_name": map_name}
    args.out.mkdir(parents=True, exist_ok=True)
    save_png(figure(result, image.rgb, names, fill_label=fill_label, **options), args.out / FIGURE)
    panels = {}
    drawn = figure_panels(result, image.rgb, names, **options)
    for key, panel in drawn.items():
        panels[key] = f"panel_{key}.png"
        save_png(panel, args.out / panels[key])

    def name(index: int) -> str:
        return names[index] if names else f"class {index}"

    manifest = {
        "command": "occlude",
        "image": str(path),
        "input_size": [height, width],
        **loaded.provenance(),
        "layer": layer,
        "layer_alias": loaded.display_name(layer),
        "map": result.channel,
        "map_class": map_name,
        "size": occluder.size,
        "stride": occluder.stride,
        "fill": list(result.fill),
        "fill_pixels": [round(v, 3) for v in pixels],
        "fill_label": fill_label,
        "fill_given": args.fill,
        "label": result.target if result.target_is_label else None,
        "target": result.target,
        "target_name": name(result.target),
        "categories": source,
        "baseline": {
            "class": result.baseline_class,
            "class_name": name(result.baseline_class),
            "probability_of_target": result.baseline_probability,
            "map_total_activation": result.baseline_activation,
        },
        "positions": {"rows": result.rows, "cols": result.cols},
        "min_probability_of_target": float(result.probability.min()),
        "method": result.method,
        "activations": result.activations,
        "splice_layer": result.splice_layer,
        "precision": result.precision,
        "figure": FIGURE,
        "panels": panels,
    }
    folder.write_manifest(manifest)
    print(args.out / FIGURE)
    return 0


def _fill(text: str, spec: object) -> tuple[float, ...] | None:
    if text == "mean":
        return occlusion.mean_fill(spec)  # type: ignore[arg-type]
    try:
        grey = real_number(text)
    except ValueError:
        grey = -1.0
    if not 0 <= grey <= MAX_GREY:
        raise InputError(f"--fill must be 'mean' or a grey level 0-255, got {text!r}")
    return occlusion.grey_fill(spec, grey / MAX_GREY)  # type: ignore[arg-type]
