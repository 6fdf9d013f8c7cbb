"""``deconvnet faithfulness``: which rule's picture explains a unit's activation (deletion and
insertion curves per rule against random orders), per unit and layer by layer."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from deconvnet.engine.capture import forward_until
from deconvnet.engine.layers import resolve_layer
from deconvnet.engine.rules import COMPARED_RULES, RULES
from deconvnet.errors import InputError
from deconvnet.faces.cli._bars import ProgressBar
from deconvnet.faces.cli._help import command_parser
from deconvnet.faces.cli._inputs import image_paths
from deconvnet.faces.cli._model import LoadedModel, add_model_arguments, load_model
from deconvnet.faces.cli._numbers import MAX_BATCH, MAX_K, int_in, real_in
from deconvnet.faces.cli._output import (
    OutputFolder,
    add_output_arguments,
    output_stem,
    writes_output,
)
from deconvnet.faces.cli._units import (
    add_cache_arguments,
    add_scan_arguments,
    add_unit_arguments,
    chosen_maps,
    map_count,
    read_scan_index,
    result_cache,
    scanned_data,
    tracked_maps,
)
from deconvnet.faces.cli._work import add_max_work_argument
from deconvnet.faces.cli.commands.site import scan_model
from deconvnet.faces.site.build import scan_manifest
from deconvnet.figures.faithfulness import layers_figure, summary_record
from deconvnet.figures.files import save_png, write_json
from deconvnet.figures.unit_sections import write_card_section
from deconvnet.inputs.prepared import prepare
from deconvnet.instruments import faithfulness as faith
from deconvnet.instruments.unit_sanity import unit_sanity
from deconvnet.instruments.work import check_work

RESULTS = "faithfulness.json"
CARDS = "cards"
LAYERS_FIGURE = "faithfulness_layers.png"
SUMMARY = "which rule explains a unit: deletion/insertion curves per rule vs random orders"
DESCRIPTION = """For each unit (a map at its strongest position in each image), order the
pixels of its receptive field by the magnitude of each rule's projection (zeiler, guided,
gradient; |p| summed over channels), delete them in --steps steps (replaced by the
model's mean pixel, and by a blurred copy), insert them into a blurred copy, and do the
same in random orders (mean of --random-seeds seeds); record the unit's own activation.
Reports per rule the areas under the curves divided by the unit's activation and the gain
over random (positive: better than chance), per unit (a figure each) and per layer (the
median gain across units, faithfulness_layers.png). Images: a scan's top-k (--scan with
--data, the scanned images) and/or IMAGE files."""
EXAMPLES = """examples:
  deconvnet topk ../shared/data/cifar10/test --layers conv1,conv2,conv3,conv4 --k 3 \\
      --maps random:16 --out scan/
  deconvnet faithfulness --scan scan/ --data ../shared/data/cifar10/test --out faith/
  deconvnet faithfulness cat.jpg --layer conv3 --map 12 --sanity --out faith_cat/
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = command_parser(sub, "faithfulness", SUMMARY, DESCRIPTION, run, EXAMPLES)
    parser.add_argument(
        "images",
        nargs="*",
        metavar="IMAGE",
        help="image files (default without --scan: a "
        "bundled CC0 photo); with --scan, added to every unit's top-k",
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--layers",
        default=None,
        help="comma-separated layers (default: the scan's, else the last conv)",
    )
    add_unit_arguments(parser, default_maps="all (with --scan), else the first image's strongest")
    add_scan_arguments(parser, data=True)
    parser.add_argument(
        "--k",
        type=int_in(1, MAX_K),
        default=None,
        help="images per unit from the scan (default: all it kept)",
    )
    parser.add_argument(
        "--steps",
        type=int_in(1, faith.MAX_STEPS),
        default=faith.DEFAULT_STEPS,
        help="deletion/insertion steps",
    )
    parser.add_argument(
        "--random-seeds",
        type=int_in(1, faith.MAX_RANDOM_SEEDS),
        default=faith.DEFAULT_RANDOM_SEEDS,
        help="random orders averaged",
    )
    parser.add_argument(
        "--rules",
        default=",".join(COMPARED_RULES),
        help=f"comma-separated rules ({', '.join(RULES)})",
    )
    parser.add_argument(
        "--blur-sigma",
        type=real_in(0.1, 1000),
        default=None,
        help="blur of the blurred baseline in input pixels (default: 5 px per 224, at least 1)",
    )
    parser.add_argument(
        "--batch-size",
        type=int_in(1, MAX_BATCH),
        default=faith.DEFAULT_BATCH_SIZE,
        help="perturbed images per forward pass",
    )
    parser.add_argument(
        "--sanity",
        action="store_true",
        help="also the cascading-randomisation scores of each unit's first "
        "image, per rule (cached)",
    )
    add_cache_arguments(parser)
    add_max_work_argument(parser, "forward passes (units x images x the card's perturbed images)")
    add_output_arguments(parser)


@writes_output()
def run(args: argparse.Namespace, folder: OutputFolder) -> int:
    settings = faith.FaithfulnessSettings(
        steps=args.steps,
        random_seeds=args.random_seeds,
        rules=tuple(r.strip() for r in args.rules.split(",") if r.strip()),
        blur_sigma=args.blur_sigma,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    if args.scan is not None:
        loaded, units = _scan_units(args)
    else:
        if args.data is not None:
            raise InputError("--data needs --scan (the scan says which images to read)")
        loaded = load_model(args)
        units = _image_units(args, loaded)
    work = check_work(
        sum(len(images) for _, _, images in units) * faith.image_work(settings),
        args.max_work,
        what="faithfulness",
        unit="forward passes",
    )
    cache = result_cache(args)
    cards, records = [], []
    with ProgressBar(f"faithfulness of {len(units)} units", unit="pass") as bar:
        done = 0
        for layer, channel, images in units:
            offset = done

            def moved(count: int, _: int | None, offset: int = offset) -> None:
                bar(offset + count, work)

            card = faith.faithfulness_card(
                loaded.model,
                layer,
                channel,
                images,
                settings=settings,
                preprocessing=loaded.preprocessing,
                progress=moved,
                max_work=None,
                cache=cache,
            )
            done = offset + len(images) * faith.image_work(settings)
            bar(done, work)
            sanity = None
            if args.sanity:
                first = images[0]
                sanity = unit_sanity(
                    loaded.model,
                    first.x,
                    layer,
                    channel,
                    card.images[0].position,
                    rules=settings.rules,
                    seed=args.seed,
                    cache=cache,
                )
            shown = loaded.display_name(layer)
            section = write_card_section(
                card,
                args.out / CARDS,
                stem=f"{output_stem(shown)}_map{channel}",
                display_name=shown,
                sanity=sanity,
            )
            record = {
                **section.record,
                "figure": f"{CARDS}/{section.picture.name}",
                "document": f"{CARDS}/{section.document.name}",
            }
            cards.append(card)
            records.append(record)
    summary = faith.summarise(cards)
    names = {layer: loaded.display_name(layer) for layer, _, _ in units}
    save_png(layers_figure(summary, display_names=names), args.out / LAYERS_FIGURE)
    write_json(
        {"units": records, "layers": summary_record(summary), "layer_aliases": names},
        args.out / RESULTS,
    )
    folder.write_manifest(
        {
            "command": "faithfulness",
            **loaded.provenance(),
            "scan": str(args.scan) if args.scan is not None else None,
            "data": str(args.data) if args.data is not None else None,
            "images": [str(p) for p in args.images],
            "units": [
                {"layer": layer, "map": channel, "images": len(images)}
                for layer, channel, images in units
            ],
            "work": work,
            "precision": faith.PRECISION,
            "figure": LAYERS_FIGURE,
            "results": RESULTS,
        }
    )
    print(format_table(cards, names))
    print(args.out / LAYERS_FIGURE)
    return 0


Units = list[tuple[str, int, list[faith.UnitImage]]]


def _scan_units(args: argparse.Namespace) -> tuple[LoadedModel, Units]:
    """Every chosen map of every chosen layer of the scan, with its top-k images read from
    --data (checked to be the scanned data), then the IMAGE files."""
    if args.data is None:
        raise InputError("--scan needs --data: the images the scan read")
    index = read_scan_index(args.scan)
    loaded = scan_model(args, scan_manifest(args.scan))
    if loaded is None:
        raise InputError("a Caffe scan: give the model with --caffe")
    dataset = scanned_data(args.data, loaded.preprocessing, index)
    layers = loaded.layer_list(args.layers) if args.layers else _in_order(loaded, index["stats"])
    extra = _extra_images(args, loaded)
    units: Units = []
    for layer in layers:
        tracked = tracked_maps(index, layer)
        for channel in chosen_maps(args, layer, max(tracked) + 1, tracked, "all"):
            images = faith.scan_images(index["entries"], dataset, layer, channel, args.k)
            if images or extra:
                units.append((layer, channel, [*images, *extra]))
    if not units:
        raise InputError("the scan holds no images for the chosen maps")
    return loaded, units


def _in_order(loaded: LoadedModel, layers: Sequence[str]) -> list[str]:
    """``layers`` in the order the model's modules are listed (the index sorts them by name)."""
    order = {name: number for number, (name, _) in enumerate(loaded.model.named_modules())}
    return sorted(layers, key=lambda layer: order.get(layer.split("#")[0], len(order)))


def _image_units(args: argparse.Namespace, loaded: LoadedModel) -> Units:
    """The chosen maps of each layer on the IMAGE files (or the bundled photo)."""
    images = _extra_images(args, loaded, bundled=True)
    layers = loaded.layer_list(args.layers) if args.layers else [loaded.layer(None)]
    size = tuple(images[0].x.shape[-2:])
    units: Units = []
    for layer in layers:
        if args.map is None and args.maps is None:
            maps = [_strongest_map(loaded, layer, images[0])]
        else:
            maps = chosen_maps(
                args, layer, map_count(loaded, layer, (size[0], size[1])), None, "all"
            )
        units.extend((layer, channel, images) for channel in maps)
    return units


def _extra_images(
    args: argparse.Namespace, loaded: LoadedModel, *, bundled: bool = False
) -> list[faith.UnitImage]:
    paths = image_paths(args.images) if bundled else [Path(p) for p in args.images]
    return [
        faith.UnitImage(prepared.tensor, name=str(prepared.path))
        for prepared in (prepare(path, loaded.preprocessing, loaded.device) for path in paths)
    ]


def _strongest_map(loaded: LoadedModel, layer: str, image: faith.UnitImage) -> int:
    name, module = resolve_layer(loaded.model, layer)
    with torch.no_grad():
        maps: torch.Tensor = forward_until(loaded.model, image.x, {name: module})[name]
    if maps.dim() != 4:
        raise InputError(f"layer {layer!r} has no feature maps (output {tuple(maps.shape)})")
    return int(maps[0].flatten(1).max(dim=1).values.argmax())


def format_table(cards: Sequence[faith.FaithfulnessCard], names: dict[str, str]) -> str:
    """One line per unit: its images and each rule's deletion gain over random (mean pixel),
    then one line per layer with the medians."""
    if not cards:
        return ""
    rules = cards[0].settings.rules
    header = ["layer", "map", "images", *(f"{r} gain" for r in rules)]
    lines = [header]
    for card in cards:
        gains = card.gain[faith.DELETION]
        lines.append(
            [
                names.get(card.layer, card.layer),
                str(card.map),
                f"{len(card.active_images)}/{len(card.images)}",
                *(_cell(gains[r]) for r in rules),
            ]
        )
    for layer in faith.summarise(cards):
        medians = layer.median_gain[faith.DELETION]
        lines.append(
            [
                names.get(layer.layer, layer.layer),
                "median",
                str(layer.units),
                *(_cell(medians[r]) for r in rules),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [f"deletion by the mean pixel: gain of each rule's order over random ({faith.DELETION})"]
    text += [
        "  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)) for line in lines
    ]
    return "\n".join(text)


def _cell(value: float | None) -> str:
    return "inactive" if value is None else f"{value:+.3f}"
