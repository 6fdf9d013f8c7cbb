"""Which units a per-unit command works on (``--maps``/``--map``), the scan it may read them
from (``--scan`` with ``--data``), and the cache it keeps results in (``--cache``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from deconvnet.engine.capture import forward_until
from deconvnet.engine.layers import resolve_layer
from deconvnet.errors import InputError, SelectionError
from deconvnet.faces.cli._model import LoadedModel
from deconvnet.faces.cli._numbers import MAX_SEED, MAX_SELECTION_NUMBER, int_in
from deconvnet.figures.topk_index import read_index
from deconvnet.inputs.datasets import ImageDataset, open_dataset
from deconvnet.inputs.preprocessing import Preprocessing
from deconvnet.instruments.cache import CACHE_ENVIRONMENT, ResultCache, default_folder
from deconvnet.instruments.topk.scan import MapChoice

MAPS_SYNTAX = "all | N (the first N) | random:N | C1,C2,… (a list; one map: list:C)"


def add_unit_arguments(parser: argparse.ArgumentParser, *, default_maps: str | None) -> None:
    """``--maps``, ``--map`` and ``--seed`` (of ``random:N``)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--maps",
        default=None,
        help=f"{MAPS_SYNTAX}; among the scan's maps with --scan "
        f"(default: {default_maps or 'none'})",
    )
    group.add_argument(
        "--map",
        type=int_in(0, MAX_SELECTION_NUMBER),
        default=None,
        help="one map (default: --maps)",
    )
    parser.add_argument(
        "--seed", type=int_in(0, MAX_SEED), default=0, help="seed of random:N and of the method"
    )


def parse_maps(text: str) -> MapChoice:
    """``--maps`` as a :class:`MapChoice` (a comma makes a list; ``list:C`` one map)."""
    value = text.strip()
    if value.lower().startswith("list:"):
        value = value[5:] + ","
    if "," in value:
        parts = [part.strip() for part in value.split(",") if part.strip()]
        if not parts or not all(p.isascii() and p.isdigit() and len(p) <= 9 for p in parts):
            raise SelectionError(f"cannot read --maps {text!r}; use {MAPS_SYNTAX}")
        return MapChoice.parse([int(p) for p in parts])
    return MapChoice.parse(value)


def chosen_maps(
    args: argparse.Namespace,
    layer: str,
    num_maps: int,
    tracked: Sequence[int] | None,
    default: str,
) -> list[int]:
    """The maps ``--map``/``--maps`` name for ``layer`` (``num_maps`` maps), chosen among
    ``tracked`` (a scan's maps) when given."""
    text = args.maps or default
    choice = MapChoice.parse([args.map]) if args.map is not None else parse_maps(text)
    return maps_of(choice, layer, num_maps, tracked, args.seed)


def maps_of(
    choice: MapChoice, layer: str, num_maps: int, tracked: Sequence[int] | None, seed: int
) -> list[int]:
    """The maps ``choice`` names among ``layer``'s ``num_maps`` maps, or among ``tracked``
    (a scan's maps) when given."""
    pool = sorted(tracked) if tracked is not None else list(range(num_maps))
    if choice.kind == "list":
        outside = [c for c in choice.channels if c not in pool]
        if outside:
            where = "the scan's maps of" if tracked is not None else "the maps of"
            raise SelectionError(f"map {outside[0]} is not one of {where} {layer} ({len(pool)})")
        return list(choice.channels)
    picked = choice.resolve(len(pool), layer, seed).tolist()
    return [pool[i] for i in picked]


def map_count(loaded: LoadedModel, layer: str, size: tuple[int, int]) -> int:
    """How many feature maps ``layer`` has (one forward pass of a blank image of ``size``)."""
    name, module = resolve_layer(loaded.model, layer)
    blank = torch.zeros(1, loaded.preprocessing.channels, *size, device=loaded.device)
    with torch.no_grad():
        out: torch.Tensor = forward_until(loaded.model, blank, {name: module})[name]
    if out.dim() != 4:
        raise InputError(f"layer {layer!r} has no feature maps (output {tuple(out.shape)})")
    return int(out.shape[1])


def add_scan_arguments(parser: argparse.ArgumentParser, *, data: bool) -> None:
    """``--scan SCAN_DIR`` (and ``--data DATA``, the scanned images, when they are read)."""
    parser.add_argument(
        "--scan",
        type=Path,
        default=None,
        help="a 'deconvnet topk' --out folder, whose index names the units (default: none)",
    )
    if data:
        parser.add_argument(
            "--data",
            type=Path,
            default=None,
            help="the images the scan read (a folder or .npz; checked against the scan's "
            "fingerprint); needed with --scan (default: none)",
        )


def read_scan_index(scan: Path) -> dict[str, Any]:
    """The scan's index, validated (one line naming the field when it is not sound)."""
    if not scan.is_dir():
        raise InputError(f"--scan {scan} is not a folder")
    return read_index(scan)


def scanned_data(data: Path, preprocessing: Preprocessing, index: dict[str, Any]) -> ImageDataset:
    """``--data`` opened as the scan read it; refused when its listing's fingerprint is not
    the one the scan recorded."""
    dataset = open_dataset(data, preprocessing)
    recorded = index.get("dataset_fingerprint")
    if recorded is not None and recorded != dataset.fingerprint():
        raise InputError(
            f"--data {data} is not the data the scan read (its listing's fingerprint "
            "differs: other files, sizes or times)"
        )
    return dataset


def tracked_maps(index: dict[str, Any], layer: str) -> list[int]:
    """The maps the scan tracked at ``layer``; refuses a layer it did not scan."""
    stats = index.get("stats", {})
    if layer not in stats:
        scanned = ", ".join(stats) or "none"
        raise InputError(f"the scan has no layer {layer!r} (it scanned {scanned})")
    return [int(record["map"]) for record in stats[layer]]


def scan_top1(index: dict[str, Any], layer: str) -> dict[int, float]:
    """Map -> the strongest activation the scan saw there (maps no image was read for are
    left out)."""
    return {
        int(r["map"]): float(r["max"])
        for r in index["stats"].get(layer, [])
        if r["max"] is not None
    }


def add_cache_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--cache DIR`` and ``--no-cache``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--cache",
        type=Path,
        default=None,
        help=f"keep results here, by model digest, unit and settings, so asking again is free "
        f"(default: ${CACHE_ENVIRONMENT}, else $XDG_CACHE_HOME/deconvnet or ~/.cache/deconvnet)",
    )
    group.add_argument("--no-cache", action="store_true", help="neither read nor write a cache")


def result_cache(args: argparse.Namespace) -> ResultCache | None:
    """The cache the options name (None with ``--no-cache``)."""
    if args.no_cache:
        return None
    folder = args.cache if args.cache is not None else default_folder()
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--cache {folder} is not a folder")
    return ResultCache(folder)
