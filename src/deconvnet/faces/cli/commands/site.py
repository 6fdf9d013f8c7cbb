"""``deconvnet site``: a static site of a top-k scan, browsable from ``file://``.

SCAN_DIR is what 'deconvnet topk' wrote (topk_index.json and its tiles). The model card
lists every layer with its output shape and receptive field; the model is the scan's own
zoo model unless --model/--caffe names it (a Caffe scan needs --caffe for that table).
Its weights must be the ones the scan recorded.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

from deconvnet import models
from deconvnet.engine.receptive import LayerRow, layer_table
from deconvnet.errors import InputError
from deconvnet.faces.cli._help import command_parser
from deconvnet.faces.cli._model import LoadedModel, add_model_arguments, load_model
from deconvnet.faces.cli._output import OutputFolder, add_output_arguments, writes_output
from deconvnet.faces.site.build import build_site, scan_manifest

DESCRIPTION = """deconvnet site: a static site of a top-k scan, browsable from file://.

SCAN_DIR is what 'deconvnet topk' wrote (topk_index.json and its tiles). The model card
lists every layer with its output shape and receptive field; the model is the scan's own
zoo model unless --model/--caffe names it (a Caffe scan needs --caffe for that table).
Its weights must be the ones the scan recorded.
"""
EXAMPLES = """examples:
  deconvnet topk photos/ --layers conv2 --out scan/ && deconvnet site scan/ --out site/
  deconvnet site scan/ --caffe deploy.prototxt net.caffemodel --out site/
"""
SUMMARY = "a static site of a top-k scan: model card, layer pages, unit pages"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = command_parser(sub, "site", SUMMARY, DESCRIPTION, run, EXAMPLES)
    parser.add_argument("scan", metavar="SCAN_DIR", type=Path, help="a 'deconvnet topk' --out")
    add_model_arguments(parser)
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
    if loaded is None:
        print("note: a Caffe scan: give --caffe for the full layer table", file=sys.stderr)
    else:
        size = loaded.preprocessing.input_size
        rows = layer_table(loaded.model, (1, 3, *size), device=loaded.device)
        aliases = loaded.layer_aliases
    result = build_site(args.scan, args.out, layer_rows=rows, input_size=size, aliases=aliases)
    folder.write_manifest({"command": "site", "scan": str(args.scan)})
    print(result.index)
    return 0


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
