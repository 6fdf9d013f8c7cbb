"""``deconvnet dream``: each unit's own ideal image, by optimisation (Olah et al. 2017)."""

from __future__ import annotations

import argparse

from deconvnet.faces.cli._bars import ProgressBar
from deconvnet.faces.cli._help import command_parser
from deconvnet.faces.cli._model import add_model_arguments, load_model
from deconvnet.faces.cli._numbers import MAX_SIDE, int_in, real_in
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
    scan_top1,
    tracked_maps,
)
from deconvnet.faces.cli._work import add_max_work_argument
from deconvnet.faces.cli.commands.site import check_weights
from deconvnet.faces.site.build import scan_manifest
from deconvnet.figures.dream import dream_figure, dream_record
from deconvnet.figures.files import save_png, write_json
from deconvnet.instruments import dream
from deconvnet.instruments.dream import OBJECTIVES, DreamSettings

RESULTS = "dream.json"
DEFAULT_MAPS = "8"
SUMMARY = "each unit's own ideal image, by optimisation (Olah et al. 2017)"
DESCRIPTION = """Optimise an image for each chosen map of a layer: the activation of the
map's centre unit (--objective neuron) or the map's mean (--objective channel), with a
decorrelated Fourier-space image, random jitter, scale and rotation at every step, and
Adam; seeded, deterministic on CPU. With --scan, each unit's final activation is compared
with its strongest activation over the scanned dataset, and an image that does not beat
it is flagged. Results are cached by (model digest, unit, settings), so asking again is
free. Writes one PNG per unit, a figure, dream.json (every trajectory) and manifest.json."""
EXAMPLES = """examples:
  deconvnet dream --layer conv2 --maps 0,1,2,3 --out out/dream
  deconvnet dream --model squeezenet1_0 --weights deep-compression --layer fire5 \\
      --scan scan/ --maps random:8 --out out/dream_fire5
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = command_parser(sub, "dream", SUMMARY, DESCRIPTION, run, EXAMPLES)
    add_model_arguments(parser)
    parser.add_argument(
        "--layer", default=None, help="layer name or alias (default: the model's last conv)"
    )
    add_unit_arguments(parser, default_maps=DEFAULT_MAPS)
    add_scan_arguments(parser, data=False)
    parser.add_argument(
        "--objective",
        choices=list(OBJECTIVES),
        default="neuron",
        help="; ".join(f"{k}: {v}" for k, v in OBJECTIVES.items()),
    )
    parser.add_argument(
        "--steps", type=int_in(1, dream.MAX_STEPS), default=dream.DEFAULT_STEPS, help="Adam steps"
    )
    parser.add_argument(
        "--lr",
        type=real_in(1e-6, 10),
        default=dream.DEFAULT_LEARNING_RATE,
        help="Adam's learning rate",
    )
    parser.add_argument(
        "--size",
        type=int_in(8, MAX_SIDE),
        default=None,
        help="image side in pixels (default: the model's input size)",
    )
    parser.add_argument(
        "--batch-size",
        type=int_in(1, 256),
        default=dream.DEFAULT_BATCH_SIZE,
        help="units optimised together",
    )
    add_cache_arguments(parser)
    add_max_work_argument(parser, "optimisation steps (units x --steps)")
    add_output_arguments(parser)


@writes_output()
def run(args: argparse.Namespace, folder: OutputFolder) -> int:
    loaded = load_model(args)
    layer = loaded.layer(args.layer)
    top1: dict[int, float] = {}
    tracked = None
    if args.scan is not None:
        index = read_scan_index(args.scan)
        check_weights(loaded, scan_manifest(args.scan))
        tracked = tracked_maps(index, layer)
        top1 = scan_top1(index, layer)
    size = (args.size, args.size) if args.size else None
    settings = DreamSettings(
        objective=args.objective, steps=args.steps, learning_rate=args.lr, seed=args.seed, size=size
    )
    count = map_count(loaded, layer, settings.size or loaded.preprocessing.input_size)
    maps = chosen_maps(args, layer, count, tracked, DEFAULT_MAPS)
    shown = loaded.display_name(layer)
    with ProgressBar(f"{shown}: optimising {len(maps)} images", unit="step") as bar:
        results = dream.dream(
            loaded.model,
            layer,
            maps,
            settings=settings,
            preprocessing=loaded.preprocessing,
            dataset_top1=top1,
            cache=result_cache(args),
            batch_size=args.batch_size,
            progress=bar,
            max_work=args.max_work,
        )
    stem = output_stem(shown)
    records = []
    for result in results:
        name = f"dream/{stem}_map{result.map}.png"
        save_png(result.image, args.out / name)
        records.append(dream_record(result, image_file=name))
    figure = f"dream_{stem}.png"
    save_png(dream_figure(results, display_name=shown), args.out / figure)
    beaten = [r for r in results if r.beats_dataset is not None]
    summary = {
        "units": len(results),
        "compared": len(beaten),
        "above_dataset_top1": sum(bool(r.beats_dataset) for r in beaten),
        "cached": sum(r.cached for r in results),
    }
    write_json(
        {"layer": layer, "layer_alias": shown, "summary": summary, "units": records},
        args.out / RESULTS,
    )
    folder.write_manifest(
        {
            "command": "dream",
            **loaded.provenance(),
            "layer": layer,
            "layer_alias": shown,
            "maps": maps,
            "settings": settings.record(),
            "scan": str(args.scan) if args.scan is not None else None,
            "summary": summary,
            "figure": figure,
            "results": RESULTS,
        }
    )
    for result in results:
        print(_line(shown, result))
    if beaten:
        print(f"{summary['above_dataset_top1']} of {len(beaten)} above the dataset's top-1")
    print(args.out / figure)
    return 0


def _line(shown: str, result: dream.DreamResult) -> str:
    text = f"{shown} map {result.map}: {result.compared:.4g}"
    if result.dataset_top1 is not None:
        verdict = "above" if result.beats_dataset else "NOT above"
        text += f" ({verdict} the dataset's top-1 {result.dataset_top1:.4g})"
    origin = "cached" if result.cached else f"{result.seconds:.1f} s"
    return f"{text}  [{origin}]"
