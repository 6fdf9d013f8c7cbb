"""``deconvnet invariance``: the paper's Fig. 5, feature distance and class probability as
images are shifted, scaled or rotated."""

from __future__ import annotations

import argparse
import csv
import io
import math

import torch
from torch import nn

from deconvnet.errors import InputError
from deconvnet.faces.cli._bars import ProgressBar
from deconvnet.faces.cli._classes import add_categories_argument, categories_for, parse_label
from deconvnet.faces.cli._help import command_parser
from deconvnet.faces.cli._inputs import image_paths
from deconvnet.faces.cli._model import LoadedModel, add_model_arguments, load_model
from deconvnet.faces.cli._output import OutputFolder, add_output_arguments, writes_output
from deconvnet.faces.cli._work import add_max_work_argument
from deconvnet.figures.files import save_png, write_json
from deconvnet.figures.invariance import invariance_figure
from deconvnet.inputs.prepared import prepare
from deconvnet.instruments.invariance import (
    TRANSFORMS,
    UNITS,
    InvarianceResult,
    default_amounts,
    invariance,
    previews,
)
from deconvnet.instruments.occlusion.occlusion import mean_fill
from deconvnet.instruments.work import check_work
from deconvnet.models.naming import wnid_in, wnids_for
from deconvnet.storage.atomic import atomic_write

EXAMPLES = """examples:
  deconvnet invariance a.jpg b.jpg --model squeezenet1_0 --weights deep-compression \\
      --transform rotate --layers conv1,fire9 --out out/
  deconvnet invariance a.jpg --transform translate --range -60:60:10 --out out/
  deconvnet invariance a.jpg --transform scale --range 1,1.2,1.4,1.6 --labels 281 --out out/

--range is START:STOP:STEP (STOP included) or a comma-separated list; the default is the
paper's: vertical shifts of -60..60 px (scaled to the input size), scale 1..1.8, rotation
0..360 degrees. Distances are Euclidean between the two feature vectors after each is
divided by its L2 norm (0 = same features, at most 2). Transforms act on the network
input; the canvas they uncover is the model's mean pixel (--canvas wrap: wraps around).
Models that keep photos at their own size (the default CIFAR-10 model) are run at their
training size.
"""
SUMMARY = "feature distance and class probability under shifts, scaling, rotation (Fig. 5)"
DESCRIPTION = """Transform each image by a range of amounts and plot, per layer, the
distance between its features and the original's, and the probability of its
true (or top) class (Zeiler & Fergus 2014, Fig. 5)."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = command_parser(sub, "invariance", SUMMARY, DESCRIPTION, run, EXAMPLES)
    parser.add_argument(
        "images", nargs="*", metavar="IMAGE", help="image files (default: a bundled CC0 photo)"
    )
    add_model_arguments(parser)
    parser.add_argument("--transform", required=True, choices=TRANSFORMS, help="what to vary")
    parser.add_argument(
        "--range",
        default=None,
        help="amounts: START:STOP:STEP or a list (default: the paper's range, see below)",
    )
    parser.add_argument(
        "--layers",
        default=None,
        help="comma-separated layers (default: the model's first and last convolution)",
    )
    parser.add_argument(
        "--labels",
        default=None,
        help="true class per image, comma-separated indices, names or WordNet ids, 'top' for "
        "the top predicted class (default: the WordNet id in an ImageNet file name such as "
        "n02123045_1.JPEG, else the top class of each original image)",
    )
    add_categories_argument(parser)
    add_max_work_argument(parser, "transformed images (images x amounts)")
    parser.add_argument(
        "--canvas",
        default="fill",
        choices=["fill", "wrap"],
        help="what uncovered canvas shows: the mean pixel, or the image wrapped around",
    )
    parser.add_argument(
        "--no-photos",
        action="store_true",
        help="leave the strip of transformed images out of the figure (charts only)",
    )
    add_output_arguments(parser)


@writes_output()
def run(args: argparse.Namespace, folder: OutputFolder) -> int:
    given = _amounts(args.range, max(1, len(args.images)), args.max_work) if args.range else None
    loaded = load_model(args)
    layers = _layers(loaded, args.layers)
    spec = loaded.one_size_preprocessing()
    paths = image_paths(args.images)
    prepared = [prepare(path, spec, loaded.device) for path in paths]
    height, width = prepared[0].tensor.shape[-2:]
    amounts = given or default_amounts(args.transform, min(height, width))
    outputs = _outputs(loaded.model, prepared[0].tensor)
    names, source = categories_for(args.categories, loaded.categories, outputs)
    labels = _labels(args.labels, [path.name for path in paths], names, outputs)
    fill = mean_fill(spec)
    with ProgressBar(f"{args.transform}", unit="img") as bar:
        result = invariance(
            loaded.model,
            [p.tensor for p in prepared],
            args.transform,
            amounts,
            layers,
            labels=labels,
            fill=fill,
            canvas=args.canvas,
            progress=bar,
            max_work=args.max_work,
        )
    shown = {layer: loaded.display_name(layer) for layer in layers}
    image_names = [path.name for path in paths]
    pictures = (
        None
        if args.no_photos
        else previews(
            prepared[0].tensor, args.transform, amounts, spec, fill=fill, canvas=args.canvas
        )
    )
    stem = f"invariance_{args.transform}"
    figure = invariance_figure(
        result, image_names, pictures, class_names=names, display_names=shown
    )
    save_png(figure, args.out / f"{stem}.png")
    table = _csv(result, image_names, shown)
    atomic_write(args.out / f"{stem}.csv", lambda handle: handle.write(table.encode("utf-8")))
    write_json(_document(result, image_names, shown, names), args.out / f"{stem}.json")
    folder.write_manifest(
        {
            "command": "invariance",
            **loaded.provenance(),
            "images": [str(p) for p in paths],
            "input_size": [height, width],
            "transform": args.transform,
            "unit": UNITS[args.transform],
            "amounts": list(result.amounts),
            "layers": shown,
            "canvas": args.canvas,
            "fill": list(result.fill),
            "categories": source,
            "distance": "Euclidean distance of the L2-normalised feature vectors",
            "figure": f"{stem}.png",
            "table": f"{stem}.csv",
            "results": f"{stem}.json",
        }
    )
    print(args.out / f"{stem}.png")
    return 0


def _layers(loaded: LoadedModel, text: str | None) -> list[str]:
    if text is None:
        convs = [n for n, m in loaded.model.named_modules() if isinstance(m, nn.Conv2d)]
        if not convs:
            raise InputError("the model has no Conv2d layer; name layers with --layers")
        return list(dict.fromkeys([convs[0], convs[-1]]))
    return loaded.layer_list(text)


def _amounts(text: str, images: int, max_work: int) -> list[float]:
    """``START:STOP:STEP`` (STOP included when the steps reach it) or ``a,b,c``; counted
    against ``max_work`` (``images`` x amounts) before the list is made."""
    try:
        if ":" in text:
            start, stop, step = (float(part) for part in text.split(":"))
            if not all(map(math.isfinite, (start, stop, step))):
                raise ValueError
            if step == 0 or (stop - start) / step < 0:
                raise ValueError
            count = int(round((stop - start) / step, 9)) + 1
        else:
            values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(
            f"--range must be START:STOP:STEP or a list of numbers, got {text!r}"
        ) from None
    if ":" in text:
        check_work(count * images, max_work, what="invariance", unit="transformed images")
        return [round(start + i * step, 9) for i in range(count)]
    if not values or not all(map(math.isfinite, values)):
        raise InputError("--range names no amounts, or one that is not a finite number")
    return values


def _labels(
    text: str | None, files: list[str], names: tuple[str, ...] | None, outputs: int
) -> list[int | None]:
    """``--labels`` as given; without it, each image's WordNet id when its file name holds
    one and the classes are ImageNet's (``n02123045_1234.JPEG``), else its top class."""
    if text is None:
        wnids = wnids_for(names)
        found = [wnid_in(name) if wnids is not None else None for name in files]
        return [wnids.index(w) if wnids is not None and w in wnids else None for w in found]
    given = [part.strip() for part in text.split(",")]
    if len(given) != len(files):
        raise InputError(f"--labels names {len(given)} classes for {len(files)} images")
    return [None if part == "top" else parse_label(part, names, outputs) for part in given]


def _outputs(model: nn.Module, x: torch.Tensor) -> int:
    """The number of classes: the length of one image's output."""
    with torch.no_grad():
        return int(model(x).flatten(1).shape[1])


def _csv(result: InvarianceResult, image_names: list[str], shown: dict[str, str]) -> str:
    """One row per image and amount: each layer's distance, then probability and top class."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    layer_columns = [f"distance_{shown[layer]}" for layer in result.layers]
    writer.writerow(
        ["image", UNITS[result.transform], *layer_columns, "target", "probability", "top_class"]
    )
    for n, name in enumerate(image_names):
        for k, amount in enumerate(result.amounts):
            distances = [f"{float(result.distance[layer][n, k]):.6g}" for layer in result.layers]
            writer.writerow(
                [
                    name,
                    f"{amount:g}",
                    *distances,
                    result.targets[n],
                    f"{float(result.probability[n, k]):.6g}",
                    int(result.top_class[n, k]),
                ]
            )
    return buffer.getvalue()


def _document(
    result: InvarianceResult,
    image_names: list[str],
    shown: dict[str, str],
    names: tuple[str, ...] | None,
) -> dict[str, object]:
    def name(index: int) -> str:
        return names[index] if names else f"class {index}"

    return {
        "format": "deconvnet-invariance/1",
        "transform": result.transform,
        "amounts": list(result.amounts),
        "layers": {layer: shown[layer] for layer in result.layers},
        "feature_sizes": result.feature_sizes,
        "images": [
            {
                "image": image_names[n],
                "target": result.targets[n],
                "target_name": name(result.targets[n]),
                "target_is_label": result.target_is_label[n],
                "distance": {shown[layer]: result.distance[layer][n] for layer in result.layers},
                "raw_distance": {
                    shown[layer]: result.raw_distance[layer][n] for layer in result.layers
                },
                "probability": result.probability[n],
                "top_class": result.top_class[n],
            }
            for n in range(len(image_names))
        ],
    }
