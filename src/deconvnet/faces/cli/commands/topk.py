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

from deconvnet.engine.receptive import layer_table
from deconvnet.faces.cli._bars import ProgressBar
from deconvnet.faces.cli._help import command_parser
from deconvnet.faces.cli._inputs import add_loader_arguments
from deconvnet.faces.cli._model import LoadedModel, add_model_arguments, load_model
from deconvnet.faces.cli._numbers import (
    MAX_CHECKPOINT_EVERY,
    MAX_K,
    MAX_SEED,
    MAX_TILE,
    int_in,
    real_in,
)
from deconvnet.faces.cli._output import (
    OutputFolder,
    add_output_arguments,
    prepare_output,
    writes_output,
)
from deconvnet.faces.cli._rules import add_rule_arguments, reverse_policy
from deconvnet.faces.cli._work import add_max_work_argument
from deconvnet.figures.render import DISPLAYS
from deconvnet.figures.topk import DEFAULT_TILE, render
from deconvnet.inputs import datasets
from deconvnet.inputs.labels import SCHEMES, Labels
from deconvnet.instruments.topk import distributed
from deconvnet.instruments.topk.distributed import Group, together
from deconvnet.instruments.topk.project import Projections, project
from deconvnet.instruments.topk.scan import (
    DEFAULT_CHECKPOINT_EVERY,
    MapChoice,
    TopKIndex,
    scan,
)
from deconvnet.instruments.work import check_work

CHECKPOINT_FILE = "topk_checkpoint.pt"
CHECKPOINTS = "topk_checkpoint*.pt"
"""The single-process checkpoint and the per-rank ones of a distributed scan."""
MAX_DIST_TIMEOUT_S = 7 * 24 * 3600
"""A week: longer than any wait for a healthy rank, yet finite so a dead one ends the job."""
DEFAULT_MAPS = "random:16"
SUMMARY = "top-k activations per feature map over a dataset, projected (paper Fig. 2)"


def register(subparsers: Any) -> None:
    """Add the ``topk`` parser."""
    parser = command_parser(subparsers, "topk", SUMMARY, __doc__, run)
    parser.add_argument("data", metavar="DATA", help="a folder of images or an .npz file")
    add_model_arguments(parser)
    parser.add_argument("--layers", required=True, help="comma-separated layers (aliases ok)")
    parser.add_argument("--k", type=int_in(1, MAX_K), default=9, help="images per map")
    parser.add_argument("--maps", default=DEFAULT_MAPS, help="all, N or random:N")
    parser.add_argument("--seed", type=int_in(0, MAX_SEED), default=0, help="seed for random:N")
    parser.add_argument(
        "--labels",
        choices=SCHEMES,
        default="auto",
        help="where the images' classes come from, for class selectivity: wnid (an ImageNet "
        "WordNet id nXXXXXXXX in every file name), folder (a folder per class), array (the "
        ".npz's y); auto: the first that fits every image, else none",
    )
    add_output_arguments(parser)
    parser.add_argument("--resume", action="store_true", help="continue OUT's checkpoint")
    add_loader_arguments(parser)
    parser.add_argument(
        "--checkpoint-every",
        type=int_in(1, MAX_CHECKPOINT_EVERY),
        default=DEFAULT_CHECKPOINT_EVERY,
        metavar="BATCHES",
        help="save the scan to OUT/topk_checkpoint.pt every this many batches of "
        "--batch-size images, and at the end",
    )
    add_rule_arguments(parser)
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
    add_max_work_argument(parser, "projections (k x maps x layers)")


def run(args: argparse.Namespace) -> int:
    """One process, or one rank of a torchrun job when ``WORLD_SIZE`` > 1."""
    group = Group.from_environment()
    if group is None:
        return _run_alone(args)
    return _run_rank(args, group)


@writes_output(resumable=CHECKPOINTS, apart_from=("data", "DATA"))
def _run_alone(args: argparse.Namespace, folder: OutputFolder) -> int:
    """Scan, project, render; print where the files went."""
    maps, loaded, layers, data = _open(args)
    with ProgressBar("scan", unit="img") as bar:
        index = scan(
            loaded.model,
            data,
            layers,
            checkpoint=f"{args.out}/{CHECKPOINT_FILE}",
            resume=args.resume,
            progress=bar,
            **_scan_options(args, maps, data),
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
                    checkpoint=args.out / CHECKPOINT_FILE,
                    resume=resume,
                    progress=bar,
                    **_scan_options(args, maps, data),
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
    data = datasets.open_dataset(args.data, loaded.preprocessing)
    check_work(
        projection_estimate(loaded, layers, maps, args.seed, min(args.k, len(data))),
        args.max_work,
        what="the projection stage",
        unit="projections",
    )
    return maps, loaded, layers, data


def projection_estimate(
    loaded: LoadedModel, layers: list[str], maps: MapChoice, seed: int, per_map: int
) -> int:
    """Projections the scan will ask for, known before it starts: ``per_map`` (k, or fewer
    images) for every tracked map of every layer (map counts from one forward pass)."""
    size = loaded.preprocessing.input_size
    shapes = {
        row.name: row.output_shape
        for row in layer_table(loaded.model, (1, 3, *size), device=loaded.device)
    }
    tracked = 0
    for layer in layers:
        shape = shapes.get(layer)
        if shape is not None and len(shape) > 1:
            tracked += len(maps.resolve(shape[1], layer, seed))
    return per_map * tracked


def _scan_options(
    args: argparse.Namespace, maps: MapChoice, data: datasets.ImageDataset
) -> dict[str, Any]:
    """The scan as the options ask for it, alone or on each rank."""
    labels: Labels | None = data.class_labels(args.labels)
    return {
        "labels": labels,
        "k": args.k,
        "maps": maps,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "checkpoint_every": args.checkpoint_every,
    }


def _projection_options(args: argparse.Namespace) -> dict[str, Any]:
    """The reverse pass, each default resolved (as the manifest records it)."""
    return {**reverse_policy(args).record(), "max_work": args.max_work}


def _finish(
    args: argparse.Namespace,
    folder: OutputFolder,
    loaded: LoadedModel,
    layers: list[str],
    index: TopKIndex,
    projections: Projections,
    checkpoints: dict[str, Any],
) -> int:
    """Render the sheets and index, print where they went, write the manifest."""
    metadata = {
        **loaded.provenance(),
        "data": str(args.data),
        "layers": {layer: loaded.display_name(layer) for layer in layers},
        **_projection_options(args),
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
        activations=reverse_policy(args).activations,
        class_names=None if index.labels is None else loaded.class_names(index.labels.classes),
    )
    print(f"scanned {index.num_images} images ({len(index.skipped)} skipped)")
    print(
        f"projected {len(projections)} activations: {projections.reverse_passes} reverse "
        f"passes, {projections.forward_images} images through a forward pass"
    )
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
            "labels": "none" if index.labels is None else index.labels.describe(),
            "index": result.index_file.name,
            "display": args.display,
            "sheets": {layer: [p.name for p in paths] for layer, paths in result.pages.items()},
            "projections": len(projections),
            "reverse_passes": projections.reverse_passes,
            "forward_images": projections.forward_images,
            **checkpoints,
            "skipped": [{"image": name, "error": why} for name, why in index.skipped],
        }
    )
    return 0
