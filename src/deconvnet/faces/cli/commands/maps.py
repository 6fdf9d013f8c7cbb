"""``deconvnet maps``: the feature maps of a layer for one image, numbered and readable."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

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
from deconvnet.figures.files import page_names, save_png
from deconvnet.figures.maps import (
    MAP_CONTRASTS,
    MAPS_PER_PAGE,
    maps_figure,
    pages,
    shared_scale,
)
from deconvnet.inputs.prepared import prepare

SUMMARY = "feature maps of a layer for one image, numbered and enlarged"
DESCRIPTION = """Show the feature maps of a layer for one image: each map enlarged and
numbered, titled with the layer and the image, with a colour bar."""
MAX_DIGITS = 9
"""Map numbers have at most this many ASCII digits (far more maps than any layer has)."""
MAPS_SYNTAX = "all, N (the first N), top:N (the N strongest) or a list such as 0-15,40"
EXAMPLES = f"""examples:
  deconvnet maps cat.jpg --layer conv1 --out out/
  deconvnet maps cat.jpg --model squeezenet1_0 --weights deep-compression --layer fire9 \\
      --maps top:64 --out out/

Each map is enlarged to at least 96 px and numbered; a layer with more than
{MAPS_PER_PAGE} chosen maps is written as pages (NAME_page1.png, NAME_page2.png, ...), all
on one grey scale with --contrast shared.
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = command_parser(sub, "maps", SUMMARY, DESCRIPTION, run, EXAMPLES)
    parser.add_argument("image", metavar="IMAGE", help="an image file")
    add_model_arguments(parser)
    parser.add_argument(
        "--layer",
        default=None,
        help="layer name or alias (default: the model's last conv, after its ReLU)",
    )
    parser.add_argument("--maps", default="all", help=f"which maps: {MAPS_SYNTAX}")
    parser.add_argument(
        "--contrast",
        choices=MAP_CONTRASTS,
        default="shared",
        help="shared: one grey scale for all maps, so strengths compare; tile: each map "
        "stretched on its own (its maximum written under it)",
    )
    add_output_arguments(parser)


@writes_output()
def run(args: argparse.Namespace, folder: OutputFolder) -> int:
    loaded = load_model(args)
    layer = loaded.layer(args.layer)
    shown = loaded.display_name(layer)
    image = prepare(Path(args.image), loaded.preprocessing, loaded.device)
    output = Deconvnet(loaded.model).layer_output(image.tensor, layer)[0].cpu()
    if output.dim() != 3:
        raise InputError(f"layer {shown!r} has no feature maps (output {tuple(output.shape)})")
    channels = chosen_maps(args.maps, output)
    chosen = output[channels]
    low, high = shared_scale(chosen)
    name = Path(args.image).name
    size = f"{output.shape[1]}x{output.shape[2]}"
    stem = output_stem(f"{Path(args.image).stem}_{shown}_maps")
    parts = pages(len(channels))
    names = page_names(stem, len(parts))
    for number, (part, file_name) in enumerate(zip(parts, names, strict=True), start=1):
        page_channels = [channels[i] for i in part]
        note = f"maps {_span(page_channels)}" + (
            f", page {number} of {len(parts)}" if len(parts) > 1 else ""
        )
        figure = maps_figure(
            chosen[part.start : part.stop],
            page_channels,
            title=f"{shown}: {output.shape[0]} maps of {size}, {name}",
            contrast=args.contrast,
            scale=(low, high),
            note=note,
        )
        save_png(figure, args.out / file_name)
    folder.write_manifest(
        {
            **loaded.provenance(),
            "command": "maps",
            "image": str(args.image),
            "layer": layer,
            "layer_alias": shown,
            "maps": int(output.shape[0]),
            "map_size": list(output.shape[1:]),
            "shown": channels,
            "selection": args.maps,
            "contrast": args.contrast,
            "scale": [low, high],
            "file": names[0],
            "pages": names,
        }
    )
    for file_name in names:
        print(args.out / file_name)
    return 0


def chosen_maps(text: str, output: torch.Tensor) -> list[int]:
    """``--maps``: every map, the first N, the N strongest (by maximum) or a list."""
    count = int(output.shape[0])
    spec = text.strip().lower()
    if spec == "all":
        return list(range(count))
    if spec.startswith("top:") and _digits(spec[4:]):
        wanted = min(int(spec[4:]), count)
        maxima = output.flatten(1).max(dim=1).values
        order = torch.sort(maxima, descending=True, stable=True).indices[:wanted]
        return sorted(int(c) for c in order)
    if _digits(spec):
        return list(range(min(int(spec), count)))
    found: set[int] = set()
    for part in spec.split(","):
        first, dash, last = part.strip().partition("-")
        if not _digits(first) or (dash and not _digits(last)):
            raise InputError(f"--maps {text!r}: use {MAPS_SYNTAX}")
        low, high = int(first), int(last if dash else first)
        if high >= count or low > high:
            raise InputError(f"--maps {text!r}: the layer has maps 0..{count - 1}")
        found.update(range(low, high + 1))
    return sorted(found)


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= MAX_DIGITS


def _span(channels: list[int]) -> str:
    """``0-63`` for a run, else ``3, 7, 12 …``."""
    if channels == list(range(channels[0], channels[-1] + 1)):
        return f"{channels[0]}-{channels[-1]}"
    shown = ", ".join(map(str, channels[:8]))
    return shown + (f" … ({len(channels)} maps)" if len(channels) > 8 else "")
