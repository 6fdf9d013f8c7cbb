"""The README's coverage table: which of today's CNNs the deconvnet projects, exactly.

One model of every timm CNN family the coverage issue lists, built with random weights
(``timm.create_model(name, pretrained=False)``, seeded; no download), in float64 on one
small input. For each activation policy (``strict``, ``relu-like``) and rule (zeiler,
guided, gradient) it projects the strongest unit of the model's deepest convolution with a
spatial map, and sorts the outcome:

- ``exact``: the projection equals the independent oracle of ``tests/_oracle.py`` (custom
  autograd Functions patched over torch's functionals, plain autograd; for the gradient
  rule autograd itself) within 1e-10 of its largest value;
- ``refused``: :class:`~deconvnet.errors.UnsupportedLayerError`, with its reason;
- ``WRONG``: a projection that differs from the oracle (a silent wrong result);
- ``CRASH``: any other error.

It needs the second virtualenv (timm and torchvision; see the README's Development
section) and this checkout's sources::

    PYTHONPATH=src /work/venv-tv/bin/python scripts/coverage.py --readme README.md

``--readme`` rewrites the table between the README's ``coverage`` markers; ``--json``
keeps every outcome with its message (after each model; a rerun with the same file checks
only the models missing from it); ``--jobs N`` checks N families at once. It prints one
line per model as it goes.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/_oracle.py

import deconvnet as dn  # noqa: E402
from tests import _oracle  # noqa: E402

FAMILIES: dict[str, str] = {
    "resnet": "resnet18",
    "resnetd": "resnet18d",
    "seresnet": "seresnet18",
    "resnext": "resnext50_32x4d",
    "res2net": "res2net50_14w_8s",
    "resnest": "resnest14d",
    "densenet": "densenet121",
    "dla": "dla34",
    "dpn": "dpn48b",
    "regnetx": "regnetx_002",
    "regnety": "regnety_002",
    "regnetz": "regnetz_005",
    "efficientnet": "efficientnet_b0",
    "efficientnetv2": "efficientnetv2_rw_t",
    "mobilenetv2": "mobilenetv2_050",
    "mobilenetv3": "mobilenetv3_small_050",
    "mnasnet": "mnasnet_small",
    "ghostnet": "ghostnet_050",
    "rexnet": "rexnet_100",
    "convnext": "convnext_atto",
    "cspnet": "cspdarknet53",
    "hrnet": "hrnet_w18_small",
    "vgg": "vgg11",
    "repvgg": "repvgg_a0",
    "selecsls": "selecsls42b",
    "xception": "xception41",
    "inception": "inception_v3",
    "nfnet": "nfnet_l0",
}
"""Each family the issue lists, and the (small) model that stands for it."""
SIZES = {"inception_v3": 96}
"""Input sides other than the default (Inception v3's stem needs at least 75 pixels)."""
HEAVY = frozenset(
    {"resnext", "res2net", "densenet", "dpn", "cspnet", "hrnet", "xception", "inception", "nfnet"}
)
"""The largest models, checked last."""
DEFAULT_SIZE = 64
POLICIES = ("strict", "relu-like")
RULES = ("zeiler", "guided", "gradient")
TOL = 1e-10
MARKERS = ("<!-- coverage:start -->", "<!-- coverage:end -->")


@dataclass
class Outcome:
    status: str  # exact | refused | WRONG | CRASH
    message: str = ""
    error: float | None = None  # largest difference from the oracle, relative
    seconds: float = 0.0  # the projection's own time (the oracle's left out)


@dataclass
class ModelRow:
    family: str
    model: str
    parameters: int
    layer: str
    size: int
    seconds: float = 0.0
    outcomes: dict[str, Outcome] = field(default_factory=dict)


def deepest_map_layer(model: nn.Module, x: Tensor) -> str:
    """The last convolution the forward pass calls whose output is a map (H, W > 1): a
    squeeze-excitation's 1×1 convolutions are left out."""
    calls: list[str] = []
    handles = [
        module.register_forward_hook(
            lambda m, i, o, name=name: calls.append(name) if o.shape[-2:].numel() > 1 else None
        )
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d)
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return calls[-1]


def check(model: nn.Module, x: Tensor, layer: str, policy: str, rule: str) -> Outcome:
    start = time.perf_counter()
    try:
        with dn.Deconvnet(model, rule, activations=policy) as net:
            result = net.project(x, layer=layer, select=dn.TopMaps(1))
    except dn.UnsupportedLayerError as error:
        return Outcome("refused", str(error), seconds=time.perf_counter() - start)
    except Exception as error:  # every other failure is a crash, reported as such
        return Outcome("CRASH", f"{type(error).__name__}: {error}")
    seconds = time.perf_counter() - start
    expected, values = _oracle.project(
        model, x, layer, result.channels[:, 0], result.positions[:, 0], rule
    )
    scale = float(expected.abs().max())
    got = float(result.images[:, 0].abs().max())
    error = float((result.images[:, 0] - expected).abs().max()) / max(scale, 1e-300)
    same_seed = bool(torch.allclose(result.values[:, 0], values, rtol=1e-9, atol=0))
    if scale == 0 and got == 0 and same_seed:  # both blank: equal, and said so
        return Outcome("exact", "blank (the oracle's too)", 0.0, seconds)
    if scale == 0 or not same_seed or error > TOL:
        return Outcome("WRONG", f"oracle max {scale:.3g}, seed equal: {same_seed}", error, seconds)
    return Outcome("exact", "", error, seconds)


def run_family(family: str, name: str) -> ModelRow:
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).double().eval()
    size = SIZES.get(name, DEFAULT_SIZE)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, size, size, generator=generator, dtype=torch.float64)
    row = ModelRow(
        family, name, sum(p.numel() for p in model.parameters()), deepest_map_layer(model, x), size
    )
    start = time.perf_counter()
    for policy in POLICIES:
        for rule in RULES:
            row.outcomes[f"{policy}/{rule}"] = check(model, x, row.layer, policy, rule)
    row.seconds = time.perf_counter() - start
    return row


def reason(message: str) -> str:
    """The op and module a refusal names, short."""
    found = re.search(r"no definition for (\S+)( in module (\S+) \((\w+)\))?", message)
    if found is None:
        return message[:80]
    op, module_type = found.group(1), found.group(4)
    return f"{op} ({module_type})" if module_type else op


def _read_rows(path: Path | None) -> list[ModelRow]:
    """The models a previous run of this script already checked (its own ``--json``)."""
    if path is None or not path.is_file():
        return []
    rows = []
    for record in json.loads(path.read_text()):
        outcomes = {key: Outcome(**value) for key, value in record.pop("outcomes").items()}
        rows.append(ModelRow(**record, outcomes=outcomes))
    return rows


def table(rows: list[ModelRow]) -> str:
    """The markdown table and its summary, as the README shows them."""
    symbol = {"exact": "✓", "refused": "refused", "WRONG": "**WRONG**", "CRASH": "**CRASH**"}
    lines = [
        "| family | model (random weights) | layer | strict: zeiler / guided / gradient "
        "| relu-like: zeiler / guided / gradient | strict refuses at |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = []
        for policy in POLICIES:
            cells.append(" / ".join(symbol[row.outcomes[f"{policy}/{r}"].status] for r in RULES))
        refused = {reason(o.message) for o in row.outcomes.values() if o.status == "refused"}
        lines.append(
            f"| {row.family} | `{row.model}` ({row.parameters / 1e6:.1f} M) | `{row.layer}` "
            f"| {cells[0]} | {cells[1]} | {', '.join(sorted(refused)) or '–'} |"
        )
    every = [o for row in rows for o in row.outcomes.values()]
    full = sum(all(row.outcomes[f"relu-like/{r}"].status == "exact" for r in RULES) for row in rows)
    strict = sum(all(row.outcomes[f"strict/{r}"].status == "exact" for r in RULES) for row in rows)
    largest = max((o.error for o in every if o.error is not None), default=0.0)
    minutes = sum(row.seconds for row in rows) / 60
    summary = (
        f"\n{full} of {len(rows)} families ({100 * full / len(rows):.0f} %) project under all "
        f"three rules with `--activations relu-like`, {strict} with `strict`; "
        f"{sum(o.status == 'exact' for o in every)} projections exact, "
        f"{sum(o.status == 'refused' for o in every)} refused, "
        f"{sum(o.status == 'WRONG' for o in every)} wrong, "
        f"{sum(o.status == 'CRASH' for o in every)} crashes; largest difference from the "
        f"oracle {largest:.1e} of the projection's largest value (float64). "
        f"`scripts/coverage.py`, timm {_timm_version()}, torch {torch.__version__}, "
        f"{DEFAULT_SIZE}×{DEFAULT_SIZE} input (Inception v3 96×96), {minutes:.1f} min of "
        f"checks summed over the models on a shared {platform.machine()} CPU.\n"
    )
    return "\n".join(lines) + "\n" + summary


def _timm_version() -> str:
    import timm

    return str(timm.__version__)


def write_readme(path: Path, text: str) -> None:
    document = path.read_text(encoding="utf-8")
    start, end = document.index(MARKERS[0]), document.index(MARKERS[1])
    body = f"{MARKERS[0]}\n{text}{MARKERS[1]}"
    path.write_text(document[:start] + body + document[end + len(MARKERS[1]) :], encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readme", type=Path, help="rewrite the table in this README")
    parser.add_argument(
        "--json", type=Path, help="every outcome, kept after each model; models in it are not rerun"
    )
    parser.add_argument("--only", help="comma-separated families (default: all)")
    parser.add_argument(
        "--jobs", type=int, default=1, help="families checked at once, one process each"
    )
    args = parser.parse_args()
    families = args.only.split(",") if args.only else list(FAMILIES)
    found = {row.family: row for row in _read_rows(args.json) if row.family in families}
    waiting = sorted((f for f in families if f not in found), key=lambda f: f in HEAVY)
    with ProcessPoolExecutor(max(1, args.jobs)) as pool:
        running = [pool.submit(run_family, family, FAMILIES[family]) for family in waiting]
        for done in as_completed(running):
            row = done.result()
            found[row.family] = row
            statuses = " ".join(f"{k}:{o.status}" for k, o in row.outcomes.items())
            print(f"{row.family:15s} {row.model:22s} {row.seconds:6.1f}s {statuses}", flush=True)
            if args.json is not None:  # kept after each model: a stopped run resumes
                rows = [found[f] for f in families if f in found]
                args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    rows = [found[family] for family in families]
    text = table(rows)
    print(text)
    if args.readme is not None:
        write_readme(args.readme, text)
    bad = [o for row in rows for o in row.outcomes.values() if o.status in ("WRONG", "CRASH")]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
