"""deconvnet topk: the paper's Fig. 2 — top-k activations per map over a dataset.

Scans DATA (a folder of images or an .npz file), keeps the K strongest images of each
chosen map, projects each one, and writes topk_<layer>.png sheets and topk_index.json
to OUT, with manifest.json listing every file written. The scan checkpoints to
OUT/topk_checkpoint.pt; --resume continues an interrupted scan in its own folder (the
files its manifest lists are replaced, no --overwrite needed); with --overwrite instead,
a new scan starts over.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from deconvnet.errors import InputError
from deconvnet.faces.cli._bars import ProgressBar
from deconvnet.faces.cli._help import HelpFormatter
from deconvnet.faces.cli._model import add_model_arguments, load_model
from deconvnet.faces.cli._numbers import (
    MAX_BATCH,
    MAX_CHECKPOINT_EVERY,
    MAX_K,
    MAX_SEED,
    MAX_TILE,
    MAX_WORKERS,
    MIN_TILE,
    int_in,
)
from deconvnet.faces.cli._output import OutputFolder, add_output_arguments, writes_output
from deconvnet.figures.topk import DEFAULT_TILE, render
from deconvnet.inputs import datasets
from deconvnet.instruments.topk.project import project
from deconvnet.instruments.topk.scan import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CHECKPOINT_EVERY,
    MapChoice,
    scan,
)

DEFAULT_WORKERS = 1
"""One loader process decodes the next batch while the model runs on this one."""

CHECKPOINT_FILE = "topk_checkpoint.pt"
DEFAULT_MAPS = "random:16"


def register(subparsers: Any) -> None:
    """Add the ``topk`` parser."""
    parser = subparsers.add_parser(
        "topk",
        help="top-k activations per feature map over a dataset, projected (paper Fig. 2)",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("data", metavar="DATA", help="a folder of images or an .npz file")
    add_model_arguments(parser)
    parser.add_argument("--layers", required=True, help="comma-separated layers (aliases ok)")
    parser.add_argument("--k", type=int_in(1, MAX_K), default=9, help="images per map")
    parser.add_argument("--maps", default=DEFAULT_MAPS, help="all, N or random:N")
    parser.add_argument("--seed", type=int_in(0, MAX_SEED), default=0, help="seed for random:N")
    add_output_arguments(parser)
    parser.add_argument("--resume", action="store_true", help="continue OUT's checkpoint")
    parser.add_argument(
        "--workers",
        type=int_in(0, MAX_WORKERS),
        default=DEFAULT_WORKERS,
        help="loader processes decoding images while the model runs; 0 decodes in this process",
    )
    parser.add_argument(
        "--batch-size",
        type=int_in(1, MAX_BATCH),
        default=DEFAULT_BATCH_SIZE,
        help="images per forward pass",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=int_in(1, MAX_CHECKPOINT_EVERY),
        default=DEFAULT_CHECKPOINT_EVERY,
        metavar="BATCHES",
        help="save the scan to OUT/topk_checkpoint.pt every this many batches of "
        "--batch-size images, and at the end",
    )
    parser.add_argument(
        "--rule",
        default="zeiler",
        choices=["zeiler", "guided", "gradient", "none"],
        help="reverse rule",
    )
    parser.add_argument(
        "--lrn",
        default=None,
        choices=["skip", "gradient", "reapply"],
        help="LRN on the way down (default: gradient with --rule gradient, skip otherwise)",
    )
    parser.add_argument(
        "--collisions", default="sum", choices=["sum", "overwrite"], help="overlapping unpooling"
    )
    parser.add_argument(
        "--display",
        default="minmax",
        choices=["minmax", "signed"],
        help="minmax: min to max as black to white; signed: zero as grey",
    )
    parser.add_argument(
        "--tile", type=int_in(MIN_TILE, MAX_TILE), default=DEFAULT_TILE, help="tile size in pixels"
    )
    parser.add_argument("--no-tiles", action="store_true", help="write only the sheets")
    parser.set_defaults(func=run)


@writes_output(resumable=CHECKPOINT_FILE)
def run(args: argparse.Namespace, folder: OutputFolder) -> int:
    """Scan, project, render; print where the files went."""
    maps = MapChoice.parse(args.maps)
    loaded = load_model(args)
    layers = [loaded.layer(name.strip()) for name in args.layers.split(",") if name.strip()]
    if not layers:
        raise InputError("--layers needs at least one layer name")
    data = datasets.open_dataset(args.data, loaded.preprocessing)
    out = args.out
    with ProgressBar("scan", unit="img") as bar:
        index = scan(
            loaded.model,
            data,
            layers,
            k=args.k,
            maps=maps,
            seed=args.seed,
            batch_size=args.batch_size,
            workers=args.workers,
            checkpoint=f"{out}/{CHECKPOINT_FILE}",
            checkpoint_every=args.checkpoint_every,
            resume=args.resume,
            progress=bar,
        )
    lrn = args.lrn or ("gradient" if args.rule == "gradient" else "skip")
    with ProgressBar("project", unit="proj") as bar:
        projections = project(
            index,
            loaded.model,
            data,
            rule=args.rule,
            lrn=lrn,
            collisions=args.collisions,
            progress=bar,
        )
    metadata = {
        **loaded.provenance(),
        "data": str(args.data),
        "layers": {layer: loaded.display_name(layer) for layer in layers},
        "rule": args.rule,
        "lrn": lrn,
        "collisions": args.collisions,
    }
    result = render(
        index,
        projections,
        out,
        tile=args.tile,
        mode=args.display,
        save_tiles=not args.no_tiles,
        metadata=metadata,
        display_names={layer: loaded.display_name(layer) for layer in layers},
    )
    print(f"scanned {index.num_images} images ({len(index.skipped)} skipped)")
    for name, why in index.skipped:
        print(f"  skipped {name}: {why}", file=sys.stderr)
    for layer, path in result.sheets.items():
        print(f"{loaded.display_name(layer)}: {path}")
    print(f"index: {result.index_file}")
    folder.write_manifest(
        {
            "command": "topk",
            **metadata,
            "k": args.k,
            "maps": index.maps,
            "seed": args.seed,
            "index": result.index_file.name,
            "checkpoint": CHECKPOINT_FILE,
            "skipped": [{"image": name, "error": why} for name, why in index.skipped],
        }
    )
    return 0
