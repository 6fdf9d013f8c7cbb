"""deconvnet topk: the paper's Fig. 2 — top-k activations per map over a dataset.

Scans DATA (a folder of images or an .npz file), keeps the K strongest images of each
chosen map, projects each one, and writes to OUT: tiles/<layer>/<map>.png per map (its
projections beside their patches, captioned), topk_<layer>.png contact sheets (paged as
topk_<layer>_page1.png ... when a layer's maps do not fit one), the per-tile PNGs the
static site shows, and topk_index.json, with manifest.json listing every file written.
The scan checkpoints to OUT/topk_checkpoint.pt; --resume continues an interrupted scan
in its own folder (the files its manifest lists are replaced, no --overwrite needed);
with --overwrite instead, a new scan starts over.

Under torchrun (WORLD_SIZE > 1) each rank scans its own whole batches of DATA and
checkpoints to OUT/topk_checkpoint.rankR-of-W.pt; the ranks merge their top-k, each
projects a share of the images, and rank 0 writes the files one process writes. A job that
torchrun restarts (--max-restarts) continues from the per-rank checkpoints.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from datetime import timedelta
from typing import Any

from deconvnet.engine.engine import default_lrn
from deconvnet.faces.cli._bars import ProgressBar
from deconvnet.faces.cli._help import HelpFormatter
from deconvnet.faces.cli._inputs import add_batch_size_argument
from deconvnet.faces.cli._model import LoadedModel, add_model_arguments, load_model
from deconvnet.faces.cli._numbers import (
    MAX_CHECKPOINT_EVERY,
    MAX_K,
    MAX_SEED,
    MAX_TILE,
    MAX_WORKERS,
    int_in,
    real_in,
)
from deconvnet.faces.cli._output import (
    OutputFolder,
    add_output_arguments,
    prepare_output,
    writes_output,
)
from deconvnet.figures.render import DISPLAYS
from deconvnet.figures.topk import DEFAULT_TILE, render
from deconvnet.inputs import datasets
from deconvnet.instruments.topk import distributed
from deconvnet.instruments.topk.distributed import Group, together
from deconvnet.instruments.topk.project import ProjectedEntry, project
from deconvnet.instruments.topk.scan import (
    DEFAULT_CHECKPOINT_EVERY,
    MapChoice,
    TopKIndex,
    scan,
)

DEFAULT_WORKERS = 1
"""One loader process decodes the next batch while the model runs on this one."""

CHECKPOINT_FILE = "topk_checkpoint.pt"
CHECKPOINTS = "topk_checkpoint*.pt"
"""The single-process checkpoint and the per-rank ones of a distributed scan."""
MAX_DIST_TIMEOUT_S = 7 * 24 * 3600
"""A week: longer than any wait for a healthy rank, yet finite so a dead one ends the job."""
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
    add_batch_size_argument(parser)
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
        default="rgb",
        choices=DISPLAYS,
        help="as for project: rgb: colours scaled by the largest |value|, zero mid-grey; "
        "signed: channel sum, blue < 0 < red; heat: magnitude on inferno; overlay: "
        "magnitude over the greyed patch (each map's k tiles share one range)",
    )
    parser.add_argument(
        "--tile",
        type=int_in(DEFAULT_TILE, MAX_TILE),
        default=DEFAULT_TILE,
        help="tile size in pixels",
    )
    parser.add_argument(
        "--no-tiles",
        action="store_true",
        help="write only the sheets and the index (no per-map or per-tile PNGs)",
    )
    parser.add_argument(
        "--dist-timeout",
        type=real_in(1, MAX_DIST_TIMEOUT_S),
        default=distributed.DEFAULT_TIMEOUT.total_seconds(),
        metavar="SECONDS",
        help="under torchrun: how long a rank waits for the others before it gives up",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """One process, or one rank of a torchrun job when ``WORLD_SIZE`` > 1."""
    group = Group.from_environment()
    if group is None:
        return _run_alone(args)
    return _run_rank(args, group)


@writes_output(resumable=CHECKPOINTS)
def _run_alone(args: argparse.Namespace, folder: OutputFolder) -> int:
    """Scan, project, render; print where the files went."""
    maps, loaded, layers, data = _open(args)
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
            checkpoint=f"{args.out}/{CHECKPOINT_FILE}",
            checkpoint_every=args.checkpoint_every,
            resume=args.resume,
            progress=bar,
        )
    with ProgressBar("project", unit="proj") as bar:
        projections = project(index, loaded.model, data, progress=bar, **_projection_options(args))
    extra = {"checkpoint": CHECKPOINT_FILE}
    return _finish(args, folder, loaded, layers, index, projections, extra)


def _run_rank(args: argparse.Namespace, group: Group) -> int:
    """This rank's part; rank 0 prepares OUT first and writes every file but checkpoints.

    A restarted job (torchrun --max-restarts) resumes: its folder holds the checkpoints and
    whatever the killed attempt had written, which this attempt writes again.
    """
    timeout = timedelta(seconds=args.dist_timeout)
    with distributed.process_group(group, args.device, timeout) as joined:
        device, restarted = joined.device, joined.attempt > 0
        resume = bool(args.resume) or restarted

        def prepare() -> OutputFolder | None:
            if not group.is_leader:
                return None
            return prepare_output(
                args.out,
                overwrite=bool(args.overwrite) or restarted,
                resumable=CHECKPOINTS,
                resume=resume,
            )

        folder = together(group, device, prepare)
        try:
            on_device = argparse.Namespace(**{**vars(args), "device": str(device)})
            maps, loaded, layers, data = together(group, device, lambda: _open(on_device))
            hidden = None if group.is_leader else True  # rank 0's bar, as in one process
            with ProgressBar(f"scan ({group.describe()})", unit="img", disable=hidden) as bar:
                index = distributed.scan_shards(
                    loaded.model,
                    data,
                    layers,
                    group,
                    device,
                    k=args.k,
                    maps=maps,
                    seed=args.seed,
                    batch_size=args.batch_size,
                    workers=args.workers,
                    checkpoint=args.out / CHECKPOINT_FILE,
                    checkpoint_every=args.checkpoint_every,
                    resume=resume,
                    progress=bar,
                )
            with ProgressBar(f"project ({group.describe()})", unit="proj", disable=hidden) as bar:
                projections = distributed.project_shares(
                    index, loaded.model, data, group, device, bar, **_projection_options(args)
                )
            names = [
                distributed.rank_checkpoint(CHECKPOINT_FILE, replace(group, rank=rank)).name
                for rank in range(group.world_size)
            ]
            extra = {"checkpoint": names[0], "checkpoints": names, "world_size": group.world_size}

            def finish() -> int:
                if folder is None or projections is None:
                    return 0
                return _finish(args, folder, loaded, layers, index, projections, extra)

            return together(group, device, finish)
        except BaseException:
            if folder is not None:
                folder.discard()
            raise


def _open(
    args: argparse.Namespace,
) -> tuple[MapChoice, LoadedModel, list[str], datasets.ImageDataset]:
    """The map choice, model, layer names and dataset the options name."""
    maps = MapChoice.parse(args.maps)
    loaded = load_model(args)
    layers = loaded.layer_list(args.layers)
    return maps, loaded, layers, datasets.open_dataset(args.data, loaded.preprocessing)


def _projection_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"rule": args.rule, "lrn": _lrn(args), "collisions": args.collisions}


def _lrn(args: argparse.Namespace) -> str:
    """``--lrn`` as given, else the rule's own: the gradient rule's LRN is its gradient."""
    return str(args.lrn or default_lrn(args.rule))


def _finish(
    args: argparse.Namespace,
    folder: OutputFolder,
    loaded: LoadedModel,
    layers: list[str],
    index: TopKIndex,
    projections: dict[tuple[str, int, int], ProjectedEntry],
    checkpoints: dict[str, Any],
) -> int:
    """Render the sheets and index, print where they went, write the manifest."""
    metadata = {
        **loaded.provenance(),
        "data": str(args.data),
        "layers": {layer: loaded.display_name(layer) for layer in layers},
        "rule": args.rule,
        "lrn": _lrn(args),
        "collisions": args.collisions,
    }
    result = render(
        index,
        projections,
        args.out,
        tile=args.tile,
        display=args.display,
        save_tiles=not args.no_tiles,
        metadata=metadata,
        display_names={layer: loaded.display_name(layer) for layer in layers},
    )
    print(f"scanned {index.num_images} images ({len(index.skipped)} skipped)")
    for name, why in index.skipped:
        print(f"  skipped {name}: {why}", file=sys.stderr)
    for layer, paths in result.pages.items():
        shown = loaded.display_name(layer)
        more = f" (and {len(paths) - 1} more pages)" if len(paths) > 1 else ""
        print(f"{shown}: {paths[0]}{more}; one picture per map in {args.out}/tiles/{shown}/")
    print(f"index: {result.index_file}")
    folder.write_manifest(
        {
            "command": "topk",
            **metadata,
            "k": args.k,
            "maps": index.maps,
            "seed": args.seed,
            "index": result.index_file.name,
            "display": args.display,
            "sheets": {layer: [p.name for p in paths] for layer, paths in result.pages.items()},
            **checkpoints,
            "skipped": [{"image": name, "error": why} for name, why in index.skipped],
        }
    )
    return 0
