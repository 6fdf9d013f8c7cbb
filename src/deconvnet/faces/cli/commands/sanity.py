"""``deconvnet sanity``: cascading model randomisation (Adebayo et al. 2018)."""

from __future__ import annotations

import argparse

from deconvnet.faces.cli._bars import ProgressBar
from deconvnet.faces.cli._help import command_parser
from deconvnet.faces.cli._inputs import add_full_frame_argument
from deconvnet.faces.cli._numbers import MAX_SEED, int_in
from deconvnet.faces.cli._output import OutputFolder, add_output_arguments, writes_output
from deconvnet.faces.cli._rules import add_rule_arguments, reverse_policy
from deconvnet.faces.cli._select import add_image_target_arguments, image_target
from deconvnet.figures.files import save_png
from deconvnet.figures.sanity import sanity_figure
from deconvnet.instruments import sanity

FIGURE = "sanity.png"
DEFAULT_SELECT = "top:1"
EXAMPLES = """examples:
  deconvnet sanity --layer conv3 --select map:12 --out out/
  deconvnet sanity cat.jpg --caffe deploy.prototxt net.caffemodel --layer conv5 --out out/
"""
SUMMARY = "cascading randomisation: does the projection depend on the weights?"
DESCRIPTION = """Re-initialise the layers the projected layer depends on, from the top
down, one more each step, and compare each projection with the trained one
(Spearman rank correlation, SSIM). Layers above it, or on branches that do not
feed it, are left trained and listed. Prints the table; writes the figure and
manifest."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = command_parser(sub, "sanity", SUMMARY, DESCRIPTION, run, EXAMPLES)
    add_image_target_arguments(parser, DEFAULT_SELECT)
    add_rule_arguments(parser, lrn_and_collisions=False)
    parser.add_argument(
        "--seed", type=int_in(0, MAX_SEED), default=sanity.DEFAULT_SEED, help="random seed"
    )
    add_full_frame_argument(parser)
    add_output_arguments(parser)


@writes_output()
def run(args: argparse.Namespace, folder: OutputFolder) -> int:
    policy = reverse_policy(args)
    loaded, layer, selection, image = image_target(args, DEFAULT_SELECT)
    with ProgressBar(f"{image.path.name}: randomising", unit="layer") as bar:
        result = sanity.cascading_randomisation(
            loaded.model,
            image.tensor,
            layer,
            selection,
            rule=policy.rule,
            activations=policy.activations,
            precision=policy.precision,
            seed=args.seed,
            progress=bar,
        )
    names = {
        n: loaded.display_name(n) for n in (layer, *result.rows[-1].randomised, *result.skipped)
    }
    figure = sanity_figure(
        result,
        image.rgb,
        full_frame=args.full_frame,
        channel_order=loaded.preprocessing.channel_order,
        names=names,
    )
    save_png(figure, args.out / FIGURE)
    manifest = {
        "command": "sanity",
        "image": str(image.path),
        "input_size": list(image.tensor.shape[2:]),
        **loaded.provenance(),
        "layer": layer,
        "layer_alias": loaded.display_name(layer),
        "selection": selection.describe(),
        "seeds": list(result.seeds),
        "rule": policy.rule,
        "activations": policy.activations,
        "precision": policy.precision,
        "precisions": [list(step) for step in result.precisions],
        "seed": args.seed,
        "metrics": "spearman and ssim of |projection| summed over channels, divided by max; "
        "spearman_signed of the channel sum; inside each seed's receptive-field box; "
        "means over the seeds that fire in the trained model and after the step",
        "randomised": list(result.rows[-1].randomised),
        "skipped": list(result.skipped),
        "skipped_reason": f"{layer} does not depend on them (above it, or a branch that "
        "does not feed it): randomising them cannot change its projection",
        "boxes": [None if box is None else list(box) for box in result.boxes],
        "full_frame": args.full_frame,
        "rows": [_manifest_row(row) for row in result.rows],
        "figure": FIGURE,
    }
    folder.write_manifest(manifest)
    print(format_table(result, names))
    print(args.out / FIGURE)
    return 0


def format_table(result: sanity.SanityResult, names: dict[str, str]) -> str:
    """The rows as the table printed on stdout (the manifest holds the same rows).

    A step where no seed fires reads ``unit inactive`` across both metric columns.
    """
    header = ("step", "randomised", "down to", "spearman", "ssim")
    cells: list[tuple[str, ...]] = []
    for row in result.rows:
        last = names.get(row.randomised[-1], row.randomised[-1]) if row.randomised else "-"
        head = (str(row.step), str(len(row.randomised)), last)
        if row.spearman is None and row.ssim is None:
            cells.append((*head, row.status))
        else:
            notes = [] if row.status == sanity.STATUS_OK else [row.status]
            notes += [f"same as step {row.step - 1}"] if row.same_as_previous else []
            note = f"  ({'; '.join(notes)})" if notes else ""
            cells.append((*head, _cell(row.spearman), _cell(row.ssim) + note))
    table = [header, *cells]
    widths = [max(len(line[i]) for line in table if len(line) > i + 1) for i in range(4)]
    text = []
    for line in table:
        step, count, last = line[:3]
        start = f"{step:>{widths[0]}}  {count:>{widths[1]}}  {last:<{widths[2]}}  "
        if len(line) == len(header):
            text.append(f"{start}{line[3]:>{widths[3]}}  {line[4]}".rstrip())
        else:
            text.append(start + line[3])
    if result.skipped:
        layer = names.get(result.layer, result.layer)
        skipped = ", ".join(names.get(n, n) for n in result.skipped)
        text.append(f"left trained ({layer} does not depend on them): {skipped}")
    return "\n".join(text)


def _manifest_row(row: sanity.SanityRow) -> dict[str, object]:
    return {
        "step": row.step,
        "layers_randomised": len(row.randomised),
        "randomised_down_to": row.randomised[-1] if row.randomised else None,
        "spearman": row.spearman,
        "ssim": row.ssim,
        "spearman_signed": row.spearman_signed,
        "status": row.status,
        "same_as_previous": row.same_as_previous,
        "per_seed": [
            {"active": score.active, "spearman": score.spearman, "ssim": score.ssim}
            for score in row.scores
        ],
    }


def _cell(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"
