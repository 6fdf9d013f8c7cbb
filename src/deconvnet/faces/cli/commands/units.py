"""``deconvnet units``: what a scan says about each unit, as JSON for scripts.

The same per-unit records the static site writes beside each unit page
(``layers/<layer>/units/<map>.json``): the map's statistics and its sections (class
selectivity when the scan is labelled, the distribution of its per-image maximum), computed
by the same library functions. Without --out they are printed as one JSON list; with --out
each unit's record and charts are written as ``<layer>/<map>.json`` and
``<layer>/<map>_<section>.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from deconvnet.errors import InputError
from deconvnet.faces.cli._bars import ProgressBar
from deconvnet.faces.cli._help import command_parser
from deconvnet.faces.cli._output import OutputFolder, writes_output
from deconvnet.faces.cli.commands.maps import listed_maps
from deconvnet.faces.site.build import display_names, read_scan, slug, units_by_layer
from deconvnet.faces.site.sections import SCAN_SECTIONS, Section, UnitContext, unit_record
from deconvnet.figures.files import save_png, write_json

SUMMARY = "per-unit JSON of a scan: statistics, class selectivity, distribution"
DESCRIPTION = (__doc__ or "").replace("``", "'")
EXAMPLES = """examples:
  deconvnet units scan/ --layer conv4 --maps 0-3,17
  deconvnet units scan/ --layer fire9 --maps all --out units/
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = command_parser(sub, "units", SUMMARY, DESCRIPTION, run, EXAMPLES)
    parser.add_argument("scan", metavar="SCAN_DIR", type=Path, help="a 'deconvnet topk' --out")
    parser.add_argument("--layer", required=True, help="a scanned layer (alias or dotted name)")
    parser.add_argument(
        "--maps", default="all", help="all, or maps and ranges of the scan's maps: 0-15,40"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="write JSON and charts here instead of printing (default: print)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="reuse a non-empty --out (see 'project')"
    )


def run(args: argparse.Namespace) -> int:
    """Print the records, or write them with their charts into --out."""
    if args.out is not None:
        return _export(args)
    records = [
        unit_record(context, [(s, None) for s in sections])
        for context, sections in _units(args, draw=False)
    ]
    json.dump(records, sys.stdout, indent=2, sort_keys=True, allow_nan=False)
    print()
    return 0


@writes_output(apart_from=("scan", "SCAN_DIR"))
def _export(args: argparse.Namespace, folder: OutputFolder) -> int:
    files: list[str] = []
    for context, sections in _units(args, draw=True):
        made: list[tuple[Section, str | None]] = []
        for section in sections:
            picture = None
            if section.pixels is not None:
                picture = f"{slug(context.shown)}/{context.channel}_{slug(section.key)}.png"
                save_png(section.pixels, args.out / picture)
                files.append(picture)
            made.append((replace(section, pixels=None), picture))
        name = f"{slug(context.shown)}/{context.channel}.json"
        write_json(unit_record(context, made), args.out / name)
        files.append(name)
    folder.write_manifest({"command": "units", "scan": str(args.scan), "units": files})
    print(f"{len(files)} files in {args.out}")
    return 0


def _units(args: argparse.Namespace, *, draw: bool) -> list[tuple[UnitContext, list[Section]]]:
    """The chosen units of the chosen layer, each with its sections (charts drawn only
    when ``draw``: they are written)."""
    if not args.scan.is_dir():
        raise InputError(f"SCAN_DIR {args.scan} is not a folder")
    document = read_scan(args.scan)
    shown = display_names(document)
    layer = next((name for name, alias in shown.items() if args.layer in (name, alias)), None)
    if layer is None:
        raise InputError(f"the scan holds layers {', '.join(shown.values())}, not {args.layer!r}")
    units = units_by_layer(document)[layer]
    tracked = {unit.channel: unit for unit in units}
    if args.maps.strip().lower() == "all":
        wanted = list(tracked)
    else:
        wanted = listed_maps(args.maps, max(tracked) + 1)
        missing = [channel for channel in wanted if channel not in tracked]
        if missing:
            raise InputError(
                f"--maps: the scan did not track map {missing[0]} of {shown[layer]} "
                f"({len(tracked)} maps tracked)"
            )
    out: list[tuple[UnitContext, list[Section]]] = []
    with ProgressBar("units", unit="unit") as bar:
        bar(0, len(wanted))
        for done, channel in enumerate(wanted, start=1):
            unit = tracked[channel]
            context = UnitContext(
                layer, shown[layer], channel, unit.stats, unit.entries, document, draw=draw
            )
            out.append((context, [maker(context) for maker in SCAN_SECTIONS]))
            bar(done, len(wanted))
    return out
