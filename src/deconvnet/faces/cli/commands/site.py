"""``deconvnet site``: a static site of a top-k scan, browsable from ``file://``.

SCAN_DIR is what 'deconvnet topk' wrote (topk_index.json and its tiles). The model card
lists every layer with its output shape and receptive field; the model is the scan's own
zoo model unless --model/--caffe names it (a Caffe scan needs --caffe for that table).
Its weights must be the ones the scan recorded. Each unit page shows the map's class
selectivity (a labelled scan), the distribution of its per-image maximum, its tuning curves
(generated stimuli, when the model is known) and, with --data (the scanned images), its
circuit between the scanned layers.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deconvnet import models
from deconvnet.engine.receptive import LayerRow, layer_table
from deconvnet.errors import InputError, SelectionError
from deconvnet.faces.cli._bars import ProgressBar
from deconvnet.faces.cli._help import command_parser
from deconvnet.faces.cli._model import LoadedModel, add_model_arguments, load_model
from deconvnet.faces.cli._numbers import MAX_K, int_in
from deconvnet.faces.cli._output import OutputFolder, add_output_arguments, writes_output
from deconvnet.faces.cli._units import (
    MAPS_SYNTAX,
    add_cache_arguments,
    maps_of,
    parse_maps,
    read_scan_index,
    result_cache,
    scanned_data,
    tracked_maps,
)
from deconvnet.faces.cli._work import add_max_work_argument
from deconvnet.faces.site.build import build_site, display_names, read_scan, scan_manifest
from deconvnet.faces.site.lenses import dream_section, faithfulness_section
from deconvnet.faces.site.measured import (
    CIRCUIT_RULE,
    circuits_section,
    previous_scanned,
    scan_index,
    tuning_section,
)
from deconvnet.faces.site.sections import SCAN_SECTIONS, SectionMaker
from deconvnet.inputs import datasets
from deconvnet.instruments import dream
from deconvnet.instruments import faithfulness as faith
from deconvnet.instruments.circuits import LayerCircuits, layer_circuits
from deconvnet.instruments.tuning import tuning
from deconvnet.instruments.work import check_work

DESCRIPTION = """deconvnet site: a static site of a top-k scan, browsable from file://.

SCAN_DIR is what 'deconvnet topk' wrote (topk_index.json and its tiles). The model card
lists every layer with its output shape and receptive field; the model is the scan's own
zoo model unless --model/--caffe names it (a Caffe scan needs --caffe for that table).
Its weights must be the ones the scan recorded. Each unit page shows the map's class
selectivity (a labelled scan), the distribution of its per-image maximum, its tuning curves
(generated stimuli, when the model is known) and, with --data (the scanned images), its
circuit between the scanned layers.
"""
EXAMPLES = """examples:
  deconvnet topk photos/ --layers conv2 --out scan/ && deconvnet site scan/ --out site/
  deconvnet site scan/ --data photos/ --cards --sanity --optimise 0,5,9 --out site/
  deconvnet site scan/ --caffe deploy.prototxt net.caffemodel --out site/
  deconvnet site scan/ --data photos/ --out site/      # circuits between scanned layers
"""
SUMMARY = "a static site of a top-k scan: model card, layer pages, unit pages"
CARD_IMAGES = 3
"""Images per faithfulness card on a unit page (the unit's strongest)."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = command_parser(sub, "site", SUMMARY, DESCRIPTION, run, EXAMPLES)
    parser.add_argument("scan", metavar="SCAN_DIR", type=Path, help="a 'deconvnet topk' --out")
    parser.add_argument(
        "--data",
        type=Path,
        help="the scanned images (the folder or .npz given to topk, checked against the "
        "scan's fingerprint): circuits between the scanned layers on each map's top-k "
        "images, and the faithfulness cards of --cards (default: none)",
    )
    parser.add_argument(
        "--no-tuning", action="store_true", help="leave out the tuning curves (no model runs)"
    )
    add_model_arguments(parser)
    lenses = parser.add_argument_group("which lens to trust, and the unit's optimised image")
    lenses.add_argument(
        "--cards",
        action="store_true",
        help="every unit page gets its faithfulness card over its top --k images (needs "
        "--data; about 20 forward passes per image and rule)",
    )
    lenses.add_argument(
        "--k",
        type=int_in(1, MAX_K),
        default=CARD_IMAGES,
        help="images per faithfulness card, the unit's strongest first",
    )
    lenses.add_argument(
        "--sanity",
        action="store_true",
        help="the card also shows the cascading-randomisation scores of the unit's first "
        "image (needs --cards)",
    )
    lenses.add_argument(
        "--optimise",
        metavar="MAPS",
        default=None,
        help=f"the optimised image on the pages of these maps of each scanned layer: "
        f"{MAPS_SYNTAX}, among the scan's maps; all is best with --device cuda "
        "(default: none)",
    )
    lenses.add_argument(
        "--optimise-steps",
        type=int_in(1, dream.MAX_STEPS),
        default=dream.DEFAULT_STEPS,
        help="Adam steps per optimised image",
    )
    add_cache_arguments(lenses)
    add_max_work_argument(
        parser, "forward passes (the cards' perturbed images and the optimisation steps)"
    )
    add_output_arguments(parser)


@writes_output(apart_from=("scan", "SCAN_DIR"))
def run(args: argparse.Namespace, folder: OutputFolder) -> int:
    """Build the site; print where its index page is."""
    if not args.scan.is_dir():
        raise InputError(f"SCAN_DIR {args.scan} is not a folder")
    loaded = scan_model(args, scan_manifest(args.scan))
    rows: list[LayerRow] = []
    size = None
    aliases: Mapping[str, str] = {}
    sections: list[SectionMaker] = list(SCAN_SECTIONS)
    if loaded is None:
        print("note: a Caffe scan: give --caffe for the full layer table", file=sys.stderr)
        if args.data is not None:
            raise InputError("--data needs the scan's model (--model or --caffe) for circuits")
    else:
        size = loaded.preprocessing.input_size
        rows = layer_table(loaded.model, (1, 3, *size), device=loaded.device)
        aliases = loaded.layer_aliases
        sections += measure(args, loaded)
    lenses, work = _lens_sections(args, loaded)
    sections += lenses
    with ProgressBar("unit pages", unit="unit") as bar:
        result = build_site(
            args.scan,
            args.out,
            layer_rows=rows,
            input_size=size,
            aliases=aliases,
            sections=sections,
            progress=bar,
        )
    folder.write_manifest(
        {
            "command": "site",
            "scan": str(args.scan),
            "data": str(args.data) if args.data is not None else None,
            "optimise": args.optimise,
            "work": work,
            "precision": result.precision,
        }
    )
    print(result.index)
    return 0


def measure(args: argparse.Namespace, loaded: LoadedModel) -> list[SectionMaker]:
    """Tuning curves of every scanned layer and, with ``--data``, the circuits between
    scanned layers: each measured once for all tracked maps, with a progress bar (``serve``,
    which has neither option, gets the tuning curves)."""
    document = read_scan(args.scan)
    shown = display_names(document)
    tracked = {
        layer: [int(r["map"]) for r in records] for layer, records in document["stats"].items()
    }
    made: list[SectionMaker] = []
    data_dir = getattr(args, "data", None)
    data = None if data_dir is None else datasets.open_dataset(data_dir, loaded.preprocessing)
    index = None if data is None else scan_index(document, data)  # refused before any work
    if not getattr(args, "no_tuning", False):
        tunings = {}
        for layer, maps in tracked.items():
            with ProgressBar(f"tuning {shown[layer]}", unit="stimulus") as bar:
                tunings[layer] = tuning(
                    loaded.model, layer, maps=maps, device=loaded.device, progress=bar
                )
        made.append(tuning_section(tunings))
    below: dict[str, LayerCircuits] = {}
    above: dict[str, LayerCircuits] = {}
    if data is not None and index is not None:
        for layer, under in previous_scanned(loaded.model, list(tracked)).items():
            with ProgressBar(f"circuits {shown[layer]} ← {shown[under]}", unit="pass") as bar:
                measured = layer_circuits(
                    index,
                    loaded.model,
                    data,
                    layer,
                    under,
                    rule=CIRCUIT_RULE,
                    device=loaded.device,
                    progress=bar,
                )
            below[layer], above[under] = measured, measured
    made.append(circuits_section(below, above, shown))  # unmeasured: the page says why
    return made


def _lens_sections(
    args: argparse.Namespace, loaded: LoadedModel | None
) -> tuple[list[SectionMaker], int]:
    """The faithfulness card (with --cards) and the optimised image (with --optimise), and
    the work those two will run (refused over --max-work first)."""
    sections: list[SectionMaker] = []
    if args.sanity and not args.cards:
        raise InputError("--sanity needs --cards (the card it is shown on)")
    if args.cards and args.data is None:
        raise InputError("--cards needs --data (the images the cards delete pixels from)")
    if not args.cards and args.optimise is None:
        return sections, 0
    if loaded is None:
        raise InputError("a Caffe scan: give the model with --caffe for cards or --optimise")
    index = read_scan_index(args.scan)
    cache = result_cache(args)
    work = 0
    if args.cards:
        dataset = scanned_data(args.data, loaded.preprocessing, index)
        settings = faith.FaithfulnessSettings()
        images = Counter((entry["layer"], entry["map"]) for entry in index["entries"])
        work += sum(min(count, args.k) for count in images.values()) * faith.image_work(settings)
        sections.append(
            faithfulness_section(
                loaded.model,
                dataset,
                preprocessing=loaded.preprocessing,
                k=args.k,
                settings=settings,
                sanity=args.sanity,
                cache=cache,
            )
        )
    if args.optimise is not None:
        maps = _optimised_maps(args.optimise, index)
        dreaming = dream.DreamSettings(steps=args.optimise_steps)
        work += sum(len(chosen) for chosen in maps.values()) * dreaming.steps
        sections.append(
            dream_section(
                loaded.model,
                preprocessing=loaded.preprocessing,
                maps=maps,
                settings=dreaming,
                cache=cache,
            )
        )
    check_work(work, args.max_work, what="the site's cards and images", unit="forward passes")
    return sections, work


def _optimised_maps(text: str, index: dict[str, Any]) -> dict[str, set[int]]:
    """Per scanned layer, the maps --optimise names among the scan's; a list keeps, in each
    layer, the maps that layer tracks (refused when no layer tracks any)."""
    choice = parse_maps(text)
    maps = {}
    for layer in index["stats"]:
        tracked = tracked_maps(index, layer)
        if choice.kind == "list":
            maps[layer] = {c for c in choice.channels if c in tracked}
        else:
            maps[layer] = set(maps_of(choice, layer, len(tracked), tracked, 0))
    if not any(maps.values()):
        raise SelectionError(f"--optimise {text!r} names none of the scan's maps")
    return maps


def scan_model(args: argparse.Namespace, manifest: dict[str, object]) -> LoadedModel | None:
    """The model the options name, else the scan's zoo model; ``None`` for a Caffe scan
    without ``--caffe``. Refuses weights other than those the scan recorded."""
    name = manifest.get("model")
    if not (args.model or args.caffe):
        if not isinstance(name, str) or name not in models.names():
            return None
        args.model = name
        if args.weights is None:
            args.weights = _named_weights(name, manifest.get("weights"))
    loaded = load_model(args)
    check_weights(loaded, manifest)
    return loaded


def _named_weights(model: str, weights: object) -> str | None:
    """The manifest's weights when they name one of ``model``'s sets; a file path read from
    a manifest is never opened (the scan's files are untrusted): the user gives it."""
    if weights in (None, "default"):
        return None
    known = {w.name for w in models.info(model).weights} | {models.RANDOM_INIT}
    if weights not in known:
        raise InputError(
            f"the scan was made with weights from a file ({ascii(weights)[:120]}); give that "
            "file with --weights to build the model card"
        )
    return str(weights)


def check_weights(loaded: LoadedModel, manifest: dict[str, object]) -> None:
    """Refuse a model whose weights are not the ones the scan's manifest recorded."""
    recorded = manifest.get("weights_sha256")
    if recorded and loaded.weights_sha256 and recorded != loaded.weights_sha256:
        raise InputError(
            f"the weights differ from the scan's (sha256 {loaded.weights_sha256[:12]}… vs "
            f"{str(recorded)[:12]}…); give the model the scan was made with"
        )
