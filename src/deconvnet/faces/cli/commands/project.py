"""``deconvnet project``: the main job — project a layer's activations to pixels."""

from __future__ import annotations

import argparse
import sys

from deconvnet.engine.compat import MAX_8BIT, PRESETS, demo_display
from deconvnet.engine.engine import DEFAULT_BATCH_SIZE, Deconvnet
from deconvnet.engine.precision import FULL_PRECISION
from deconvnet.engine.projection import Projection
from deconvnet.engine.receptive import ReceptiveField, receptive_fields
from deconvnet.errors import InputError
from deconvnet.faces.cli._bars import ProgressBar
from deconvnet.faces.cli._help import command_parser
from deconvnet.faces.cli._inputs import add_full_frame_argument, image_paths
from deconvnet.faces.cli._model import add_model_arguments, load_model
from deconvnet.faces.cli._numbers import MAX_BATCH, int_in
from deconvnet.faces.cli._output import (
    MANIFEST,
    OutputFolder,
    add_output_arguments,
    output_stem,
    writes_output,
)
from deconvnet.faces.cli._rules import add_rule_arguments, faces_precision
from deconvnet.faces.cli._select import DEFAULT_SELECT, add_target_arguments, parse_select
from deconvnet.figures.files import save_png
from deconvnet.figures.projection import (
    CONTRASTS,
    FigureOptions,
    blank_record,
    manifest,
    manifest_entry,
    projection_figure,
    save_projection_figure,
)
from deconvnet.figures.render import DISPLAYS
from deconvnet.inputs.prepared import prepare
from deconvnet.instruments.signal import explain_blanks

EXAMPLES = """examples:
  deconvnet project --out out/          # embedded default model on the bundled photo
  deconvnet project cat.jpg --layer conv3 --select map:12 --out out/
  deconvnet project cat.jpg --model alexnet --weights imagenet --layer features.10 --out out/
  deconvnet project img.jpg --caffe deploy.prototxt net.caffemodel --layer pool5 --out out/
"""
SUMMARY = "project a layer's activations back to pixels (the deconvnet)"
DESCRIPTION = """Project selected activations of a layer back to pixel space
(Zeiler & Fergus 2014). Writes PNGs and a JSON manifest."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = command_parser(sub, "project", SUMMARY, DESCRIPTION, run, EXAMPLES)
    parser.add_argument(
        "images", nargs="*", metavar="IMAGE", help="image files (default: a bundled CC0 photo)"
    )
    add_model_arguments(parser)
    add_target_arguments(parser, DEFAULT_SELECT)
    add_rule_arguments(parser)
    parser.add_argument(
        "--batch-size",
        type=int_in(1, MAX_BATCH),
        default=DEFAULT_BATCH_SIZE,
        help="reverse passes run at once",
    )
    parser.add_argument(
        "--compat",
        choices=sorted(PRESETS),
        default=None,
        help="reproduce another tool exactly; caffe-deconvnet: the old Caffe demo, with its "
        "layer pool5, threshold:150 rescaled, no ReLU, LRN re-applied, overwrite "
        "(default: none, this package's own rules)",
    )
    add_figure_arguments(parser)
    add_output_arguments(parser)


def add_figure_arguments(parser: argparse.ArgumentParser) -> None:
    """``--display``, ``--contrast``, ``--full-frame``, ``--captions``."""
    group = parser.add_argument_group("pictures")
    group.add_argument(
        "--display",
        choices=DISPLAYS,
        default="rgb",
        help="rgb: colours scaled by the largest |value|, zero mid-grey; signed: channel sum, "
        "blue < 0 < red, zero white; heat: magnitude on inferno; overlay: magnitude over the "
        "greyed input",
    )
    group.add_argument(
        "--contrast",
        choices=CONTRASTS,
        default="tile",
        help="tile: each projection stretched on its own (the paper's); shared: one scale",
    )
    add_full_frame_argument(group)
    group.add_argument(
        "--captions", action="store_true", help="add a caption strip to per-projection files"
    )


def figure_options(args: argparse.Namespace) -> FigureOptions:
    """The picture options the command line asked for."""
    return FigureOptions(
        display=args.display,
        contrast=args.contrast,
        full_frame=args.full_frame,
        captions=args.captions,
    )


@writes_output()
def run(args: argparse.Namespace, folder: OutputFolder) -> int:
    loaded = load_model(args)
    compat = PRESETS[args.compat] if args.compat else None
    if compat is not None and (args.rule or args.lrn or args.collisions):
        raise InputError(f"--compat {compat.name} fixes --rule, --lrn and --collisions")
    layer = loaded.layer(args.layer or (compat.layer if compat else None))
    label = loaded.display_name(layer)
    selection = args.select or (compat.selection() if compat else parse_select(DEFAULT_SELECT))
    net = Deconvnet(
        loaded.model,
        rule=args.rule,
        lrn=args.lrn,
        collisions=args.collisions,
        activations=args.activations,
        # another tool reproduced exactly: in full precision unless asked otherwise
        precision=args.precision or (FULL_PRECISION if compat else faces_precision(args)),
        batch_size=args.batch_size,
        compat=args.compat,
    )
    device = loaded.device
    options = figure_options(args)
    entries = []
    fields_by_shape: dict[tuple[int, ...], dict[str, ReceptiveField]] = {}
    for index, path in enumerate(image_paths(args.images)):
        image = prepare(path, loaded.preprocessing, device)
        if image.downscaled:
            print(
                f"note: {path} downscaled to {image.rgb.shape[1]}x{image.rgb.shape[0]}",
                file=sys.stderr,
            )
        with ProgressBar(f"{path.name}: {label}", unit="proj") as bar:
            result = net.project(image.tensor, layer, selection, progress=bar)
        shape = tuple(image.tensor.shape)
        if shape not in fields_by_shape:  # one tracing pass per input size, not per image
            fields_by_shape[shape] = receptive_fields(loaded.model, shape, device=device)
        fields = fields_by_shape[shape]
        blanks = explain_blanks(loaded.model, result, scales=_scales(result, options))
        if blanks is not None:
            print(f"note: {path.name}: {blanks.sentence(result.images.shape[1])}", file=sys.stderr)
        figure = projection_figure(
            result,
            options=options,
            receptive_field=fields.get(layer),
            input_rgb=image.rgb,
            layer_label=label,
            categories=loaded.categories,
            blanks=blanks,
        )
        stem = output_stem(f"{index:02d}_{path.stem}")
        files = save_projection_figure(figure, args.out, stem)
        entry = manifest_entry(figure, files, str(path), image.tensor.shape[2:])
        if blanks is not None:
            entry["blank"] = blank_record(blanks, result.images.shape[1])
        if compat is not None:
            display = demo_display(result.images[0, 0], loaded.preprocessing)
            entry["demo_display"] = f"{stem}_demo_display.png"
            save_png(
                (display.clip(0, 1) * MAX_8BIT).round().astype("uint8"),
                args.out / entry["demo_display"],
            )
        entries.append(entry)
        last = result
        print(args.out / files["sheet"])
    document = {
        **loaded.provenance(),
        **manifest(last, entries, options),
        "layer_alias": label,
        "compat": args.compat,
        "preprocessing": loaded.preprocessing.record(),
    }
    folder.write_manifest(document)
    print(args.out / MANIFEST)
    return 0


def _scales(result: Projection, options: FigureOptions) -> list[float | None] | None:
    """The display range each projection is drawn on when they share one (else each its
    own): the largest magnitude of them all."""
    if options.contrast != "shared":
        return None
    largest = float(result.images[0].abs().max())
    return [largest] * result.images.shape[1]
