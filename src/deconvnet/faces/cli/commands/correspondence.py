"""``deconvnet correspondence``: the paper's §4.3 and Table 1, whether masking the same part
in different images changes the features in the same way."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
from pathlib import Path

import torch

from deconvnet.engine.receptive import Box
from deconvnet.errors import InputError
from deconvnet.faces.cli._bars import ProgressBar
from deconvnet.faces.cli._help import command_parser
from deconvnet.faces.cli._model import add_model_arguments, load_model
from deconvnet.faces.cli._numbers import MAX_SEED, MAX_SIDE, int_in
from deconvnet.faces.cli._output import OutputFolder, add_output_arguments, writes_output
from deconvnet.faces.cli._parts import read_parts
from deconvnet.faces.cli._work import add_max_work_argument
from deconvnet.figures.correspondence import correspondence_figure, table_rows
from deconvnet.figures.files import save_png, write_json
from deconvnet.inputs.images import deprocess, load_image
from deconvnet.inputs.prepared import PreparedImage, prepare
from deconvnet.instruments.correspondence import (
    BUNDLED_PARTS,
    DEFAULT_TRIALS,
    PART_KEYS_RESERVED,
    CorrespondenceResult,
    box_in_input,
    bundled_parts,
    correspondence,
)
from deconvnet.instruments.occlusion.occlusion import mean_fill
from deconvnet.instruments.work import check_work
from deconvnet.storage.atomic import atomic_write

FIGURE = "correspondence.png"
TABLE = "correspondence.csv"
RESULTS = "correspondence.json"
MAX_TRIALS = 10_000
"""Random-square trials of the control: more than enough for a stable mean."""
EXAMPLES = """examples:
  deconvnet correspondence dog1.jpg dog2.jpg dog3.jpg --parts parts.json \\
      --model squeezenet1_0 --weights deep-compression --layers fire5,fire9 --out out/

parts.json maps each image's file name to its part boxes, [top, left, bottom, right] in
the photo's own pixels; every image names the same parts, and an optional "object" box
bounds the random control's squares:

  {"dog1.jpg": {"left eye": [120, 80, 150, 115], "nose": [170, 120, 210, 160],
                "object": [40, 20, 300, 260]}, ...}

Each part is masked with a square of --size pixels of the network input (default 1/8 of
its shorter side) centred on the box, filled with the model's mean pixel. --parts
imagenet-dogs is the bundled set for five dogs of the ImageNet sample (the paper's
setting; the photos are not shipped):

  deconvnet correspondence ../shared/data/imagenet-sample/n02085936_Maltese_dog.JPEG ... \
      --parts imagenet-dogs --model squeezenet1_0 --weights deep-compression --out out/
"""
SUMMARY = "do masked parts change features consistently across images (§4.3, Table 1)"
DESCRIPTION = """Mask the same part in every image and score how consistently the sign of
the feature change agrees between images, against random squares of the same size
(Zeiler & Fergus 2014, §4.3, Table 1). Lower = more consistent."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = command_parser(sub, "correspondence", SUMMARY, DESCRIPTION, run, EXAMPLES)
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="at least two image files")
    parser.add_argument(
        "--parts",
        required=True,
        metavar="FILE|NAME",
        help="part boxes per image (JSON), or a bundled set: "
        + ", ".join(sorted(BUNDLED_PARTS)),
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--layers", default=None, help="comma-separated layers (default: the last convolution)"
    )
    parser.add_argument(
        "--size",
        type=int_in(1, MAX_SIDE),
        default=None,
        help="mask side in input pixels (default: 1/8 side)",
    )
    parser.add_argument(
        "--trials",
        type=int_in(1, MAX_TRIALS),
        default=DEFAULT_TRIALS,
        help="random-square trials (the control)",
    )
    parser.add_argument(
        "--seed", type=int_in(0, MAX_SEED), default=0, help="seed of the random squares"
    )
    parser.add_argument(
        "--no-photos",
        action="store_true",
        help="draw the masks on a blank canvas (for photos that may not be redistributed)",
    )
    add_max_work_argument(parser, "masked images (images x (1 + parts + trials))")
    add_output_arguments(parser)


@writes_output()
def run(args: argparse.Namespace, folder: OutputFolder) -> int:
    # its work is counted before the model loads
    given = read_parts(bundled_parts(args.parts) or Path(args.parts))
    names = {Path(p).name for p in args.images}
    parts = [set(boxes) - set(PART_KEYS_RESERVED) for name, boxes in given.items() if name in names]
    check_work(
        len(args.images) * (1 + max(map(len, parts), default=0) + args.trials),
        args.max_work,
        what="correspondence",
        unit="masked images",
    )
    loaded = load_model(args)
    layers = (
        [loaded.layer(name.strip()) for name in args.layers.split(",") if name.strip()]
        if args.layers
        else [loaded.default_layer()]
    )
    spec = loaded.one_size_preprocessing()
    paths = [Path(p) for p in args.images]
    prepared: list[PreparedImage] = []
    boxes: list[dict[str, Box]] = []
    for path in paths:
        if path.name not in given:
            raise InputError(f"{args.parts} has no boxes for {path.name}")
        photo_hw = load_image(path).shape[:2]
        prepared.append(prepare(path, spec, loaded.device))
        boxes.append(
            {
                part: box_in_input(box, (photo_hw[0], photo_hw[1]), spec)
                for part, box in given[path.name].items()
            }
        )
    fill = mean_fill(spec)
    with ProgressBar("correspondence", unit="img") as bar:
        result = correspondence(
            loaded.model,
            [p.tensor for p in prepared],
            boxes,
            layers,
            size=args.size,
            fill=fill,
            trials=args.trials,
            seed=args.seed,
            progress=bar,
            max_work=args.max_work,
        )
    shown = {layer: loaded.display_name(layer) for layer in layers}
    fill_rgb = deprocess(torch.tensor(fill, dtype=torch.float32).view(3, 1, 1), spec)[0, 0]
    figure = correspondence_figure(
        result,
        [p.rgb for p in prepared],
        [p.name for p in paths],
        fill_rgb=(int(fill_rgb[0]), int(fill_rgb[1]), int(fill_rgb[2])),
        part_boxes=boxes,
        display_names=shown,
        photos=not args.no_photos,
    )
    save_png(figure, args.out / FIGURE)
    table = _csv(result, shown)
    atomic_write(args.out / TABLE, lambda handle: handle.write(table.encode("utf-8")))
    write_json(_document(result, paths, boxes, shown), args.out / RESULTS)
    folder.write_manifest(
        {
            "command": "correspondence",
            **loaded.provenance(),
            "images": [str(p) for p in paths],
            "parts_file": str(args.parts),
            "input_size": list(prepared[0].tensor.shape[-2:]),
            "layers": shown,
            "size": result.size,
            "fill": list(result.fill),
            "trials": args.trials,
            "seed": args.seed,
            "figure": FIGURE,
            "table": TABLE,
            "results": RESULTS,
        }
    )
    _print_table(table_rows(result, shown))
    print(args.out / FIGURE)
    return 0


def _print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    for row in rows:
        print("  ".join(text.ljust(widths[c]) for c, text in enumerate(row)).rstrip())


def _csv(result: CorrespondenceResult, shown: dict[str, str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["part", "layer", "mean", "std", "delta", "feature_length", "pairs"])
    for part in result.parts:
        for layer in result.layers:
            score = result.scores[(part, layer)]
            writer.writerow(
                [
                    part,
                    shown[layer],
                    f"{score.mean:.6g}",
                    f"{score.std:.6g}",
                    f"{score.delta:.6g}",
                    result.feature_sizes[layer],
                    len(score.fractions),
                ]
            )
    return buffer.getvalue()


def _document(
    result: CorrespondenceResult,
    paths: list[Path],
    boxes: list[dict[str, Box]],
    shown: dict[str, str],
) -> dict[str, object]:
    return {
        "format": "deconvnet-correspondence/1",
        "size": result.size,
        "seed": result.seed,
        "feature_sizes": {shown[k]: v for k, v in result.feature_sizes.items()},
        "scores": [
            {**dataclasses.asdict(score), "layer": shown[score.layer]}
            for score in result.scores.values()
        ],
        "images": [
            {
                "image": path.name,
                "part_boxes": {
                    k: list(v) for k, v in boxes[n].items() if k not in PART_KEYS_RESERVED
                },
                "object_box": list(boxes[n]["object"]) if "object" in boxes[n] else None,
                "masks": {part: list(box) for part, box in result.masks[n].items()},
                "random_masks": [list(trial[n]) for trial in result.random_masks],
            }
            for n, path in enumerate(paths)
        ],
    }
