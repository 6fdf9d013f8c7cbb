"""Every long job has a bound and an estimate: generated work sizes against the ceilings,
the issue's runaway cases on the command line, and a FIFO in place of every file read.

Oracle for the ceilings: the counts written out here (images x amounts; positions of the
occluder grid; images x (1 + parts + trials)); a run is refused exactly when its count is
over ``max_work``, and the first progress report gives that count as the total.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from tests.faces.conftest import make_photos
from tests.hostile.conftest import HANG, WRONG, Tally, one_line_refusal, run_cli

REFUSE_SECONDS = 10.0
"""A refusal of a runaway job must come within this (it comes before the work)."""
GENERATED, SLOW_GENERATED = 12, 300
LIMIT = 50


def tiny_classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 5),
    ).eval()


def positions(side: int, size: int, stride: int) -> int:
    along = len(range(0, side - size + 1, stride))
    return along * along


Progress = Callable[[int, int | None], None]


def record(reports: list[tuple[int, int | None]]) -> Progress:
    return lambda done, total: reports.append((done, total))


def check_generated_sizes(tally: Tally, count: int) -> None:
    from deconvnet.instruments.correspondence import correspondence
    from deconvnet.instruments.invariance import invariance
    from deconvnet.instruments.occlusion import Occluder, occlude

    model, rng = tiny_classifier(), random.Random(8)
    for number in range(count):
        images = rng.randint(2, 4)
        xs = [torch.rand(1, 3, 12, 12) for _ in range(images)]
        amounts = [float(a) for a in range(rng.randint(1, 30))]
        side, size, stride = 12, rng.randint(1, 6), rng.randint(1, 4)
        parts, trials = rng.randint(1, 8), rng.randint(1, 8)
        boxes = [{f"p{i}": (1, 1, 4, 4) for i in range(parts)} for _ in range(images)]
        occluder = Occluder(size, stride, fill=0.0)
        jobs: list[tuple[str, int, Callable[[Progress], object]]] = [
            (
                "invariance",
                images * len(amounts),
                partial(invariance, model, xs, "translate", amounts, ["0"]),
            ),
            (
                "occlusion",
                positions(side, size, stride),
                partial(occlude, model, xs[0], "0", occluder),
            ),
            (
                "correspondence",
                images * (1 + parts + trials),
                partial(correspondence, model, xs, boxes, ["0"], size=3, trials=trials),
            ),
        ]
        for name, expected, run in jobs:
            reports: list[tuple[int, int | None]] = []
            with tally.case("work ceilings", f"{name} #{number}") as mark:
                try:
                    run(progress=record(reports), max_work=LIMIT)
                    ran = True
                except Exception as error:
                    if type(error).__name__ != "WorkLimitError":
                        raise
                    ran = False
                if ran != (expected <= LIMIT):
                    mark(WRONG, f"{name}: {expected} units {'ran' if ran else 'refused'}")
                elif ran and reports[0] != (0, expected):
                    mark(WRONG, f"{name}: first progress {reports[0]}, work {expected}")


def test_generated_work_sizes_meet_the_ceiling(tally: Tally) -> None:
    check_generated_sizes(tally, GENERATED)
    assert tally.bad("work ceilings") == {}


@pytest.mark.slow
def test_many_generated_work_sizes(tally: Tally) -> None:
    check_generated_sizes(tally, SLOW_GENERATED)
    assert tally.bad("work ceilings") == {}


def runaway(tally: Tally, what: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with tally.case("runaway jobs", what) as mark:
        start = time.monotonic()
        code, _, err = run_cli(argv, capsys)
        took = time.monotonic() - start
        if not one_line_refusal(code, err) or "--max-work" not in err:
            mark(WRONG, f"{what}: exit {code} after {took:.1f} s: {err[-300:]}")
        elif took > REFUSE_SECONDS:
            mark(HANG, f"{what}: refused only after {took:.1f} s")


def test_the_issues_runaway_jobs_are_refused_at_once(
    tally: Tally, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = tmp_path / "big.png"
    Image.new("RGB", (1024, 1024), (120, 80, 40)).save(photo)
    parts = tmp_path / "parts.json"
    boxes = {f"part {i}": [1, 1, 9, 9] for i in range(10_000)}
    names = [f"{n}.png" for n in range(10)]
    parts.write_text(json.dumps({name: boxes for name in names}))
    for name in names:
        Image.new("RGB", (64, 64)).save(tmp_path / name)
    data = make_photos(tmp_path / "data", count=3)
    out = str(tmp_path / "out")
    cases = {
        "invariance --range 0:360:0.001": [
            "invariance",
            str(photo),
            "--transform",
            "rotate",
            "--range",
            "0:360:0.001",
            "--out",
            out,
        ],
        "invariance --range 0:1e18:1e-9": [
            "invariance",
            str(photo),
            "--transform",
            "rotate",
            "--range",
            "0:1e18:1e-9",
            "--out",
            out,
        ],
        "occlude --stride 1 --native-size": [
            "occlude",
            str(photo),
            "--stride",
            "1",
            "--size",
            "2",
            "--native-size",
            "--out",
            out,
        ],
        "parts.json with 10,000 parts": [
            "correspondence",
            *(str(tmp_path / n) for n in names),
            "--parts",
            str(parts),
            "--out",
            out,
        ],
        "topk projections over --max-work": [
            "topk",
            str(data),
            "--layers",
            "conv1,conv2",
            "--maps",
            "all",
            "--max-work",
            "100",
            "--out",
            out,
        ],
    }
    for what, argv in cases.items():
        runaway(tally, what, argv, capsys)
        assert not os.path.exists(out) or not os.listdir(out)
    assert tally.bad("runaway jobs") == {}


FIFO_CASES = {
    "--parts": ["correspondence", "IMG", "IMG2", "--parts", "FIFO", "--out", "OUT"],
    "--categories": ["occlude", "IMG", "--categories", "FIFO", "--out", "OUT"],
    "--mean-file": ["maps", "IMG", "--mean-file", "FIFO", "--out", "OUT"],
    "IMAGE": ["maps", "FIFO", "--out", "OUT"],
    "--weights": ["layers", "--weights", "FIFO"],
    "--caffe": ["layers", "--caffe", "FIFO"],
    "topk_index.json": ["site", "SCAN", "--out", "OUT"],
    "manifest.json": ["site", "SCAN2", "--out", "OUT"],
    "--out manifest.json": ["maps", "IMG", "--out", "OUTFIFO", "--overwrite"],
}
"""Every file the tool reads, given as a FIFO: refused at once, never waited on."""


@pytest.mark.parametrize("where", list(FIFO_CASES))
def test_a_fifo_is_refused_wherever_a_file_is_read(
    tally: Tally, tiny_scan: Path, tmp_path: Path, where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    image = make_photos(tmp_path / "in", count=2)
    scan, scan2 = tmp_path / "scan", tmp_path / "scan2"
    for folder in (scan, scan2):
        shutil.copytree(tiny_scan, folder)
    (scan / "topk_index.json").unlink()
    os.mkfifo(scan / "topk_index.json")
    (scan2 / "manifest.json").unlink()
    os.mkfifo(scan2 / "manifest.json")
    (tmp_path / "outfifo").mkdir()
    (tmp_path / "outfifo" / "x.png").write_bytes(b"x")
    os.mkfifo(tmp_path / "outfifo" / "manifest.json")
    names = {
        "FIFO": str(fifo),
        "IMG": str(image / "photo_0.png"),
        "IMG2": str(image / "photo_1.png"),
        "OUT": str(tmp_path / "out"),
        "SCAN": str(scan),
        "SCAN2": str(scan2),
        "OUTFIFO": str(tmp_path / "outfifo"),
    }
    argv = [names.get(part, part) for part in FIFO_CASES[where]]
    bad_before = tally.bad("FIFO reads")
    with tally.case("FIFO reads", where) as mark:
        code, _, err = run_cli(argv, capsys)
        if not one_line_refusal(code, err):
            mark(WRONG, f"{where}: exit {code}: {err[-300:]}")
    assert tally.bad("FIFO reads") == bad_before
