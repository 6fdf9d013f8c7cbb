"""Every JSON the tool reads back, tampered: ``topk_index.json`` and ``manifest.json`` (the
static site), ``manifest.json`` (``--overwrite``), ``parts.json`` (correspondence).

A variant must be refused in one line or accepted; an accepted one must be sound, by an
oracle written here independently of the schemas (:func:`index_is_sound`): otherwise the
tool showed something wrong without a word.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from deconvnet.faces.cli._output import prepare_output
from deconvnet.faces.site.build import build_site
from tests.hostile._cases import json_variants
from tests.hostile.conftest import (
    TRACEBACK,
    WRONG,
    Tally,
    one_line_refusal,
    run_cli,
)

DEFAULT_INDEX, SLOW_INDEX = 150, 2_000
DEFAULT_MANIFEST, SLOW_MANIFEST = 12, 300
DEFAULT_PARTS, SLOW_PARTS = 10, 200
FORMAT = "deconvnet-topk-index/1"


def _integer(value: object, low: int = 0) -> bool:
    return type(value) is int and low <= value < 2**53


def _number(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]


def index_is_sound(document: Any) -> bool:
    """What the site needs of an index to show every unit right (the oracle)."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        return False
    k, stats, entries = document.get("k"), document.get("stats"), document.get("entries")
    if not _integer(k, 1) or not isinstance(stats, dict) or not isinstance(entries, list):
        return False
    maps = set()
    for layer, records in stats.items():
        if not isinstance(records, list):
            return False
        for record in records:
            if not isinstance(record, dict) or not _integer(record.get("map")):
                return False
            if any(key not in record for key in ("images", "max", "mean", "fire_rate")):
                return False
            if record["images"] is not None and not _integer(record["images"]):
                return False
            rate = record.get("fire_rate")
            if rate is not None and not (_number(rate) and 0 <= rate <= 1):
                return False
            if any(
                record.get(key) is not None and not _number(record[key]) for key in ("max", "mean")
            ):
                return False
            maps.add((layer, record["map"]))
    seen = set()
    for entry in entries:
        if not isinstance(entry, dict):
            return False
        key = (entry.get("layer"), entry.get("map"), entry.get("rank"))
        position = entry.get("position")
        if not (
            isinstance(key[0], str)
            and _integer(key[1])
            and _integer(key[2])
            and key[2] < k
            and (key[0], key[1]) in maps
            and key not in seen
            and _number(entry.get("value"))
            and isinstance(entry.get("image"), str)
            and isinstance(entry.get("tile_file"), str)
            and isinstance(entry.get("patch_file"), str)
            and isinstance(position, list)
            and len(position) == 2
            and all(_integer(v) for v in position)
        ):
            return False
        seen.add(key)
    metadata = document.get("metadata", {})
    if not isinstance(metadata, dict) or not isinstance(metadata.get("layers", {}), dict):
        return False
    return all(isinstance(v, str) for v in metadata.get("layers", {}).values()) and len(
        maps
    ) == sum(len(r) for r in stats.values())


def check_index_variants(tally: Tally, tiny_scan: Path, tmp_path: Path, count: int) -> None:
    scan = tmp_path / "scan"
    shutil.copytree(tiny_scan, scan)
    document = json.loads((tiny_scan / "topk_index.json").read_text())
    assert index_is_sound(document)  # the oracle accepts what the tool writes
    for number, variant in enumerate(json_variants(document, count, seed=4)):
        (scan / "topk_index.json").write_bytes(variant)
        with tally.case("topk_index.json", f"variant {number}") as mark:
            build_site(scan, tmp_path / f"site{number}")
            try:
                parsed = json.loads(variant)
            except ValueError:
                parsed = None
            if not index_is_sound(parsed):
                mark(WRONG, f"variant {number} accepted: {variant[:300]!r}")


def test_tampered_indexes_are_refused_or_sound(
    tally: Tally, tiny_scan: Path, tmp_path: Path
) -> None:
    check_index_variants(tally, tiny_scan, tmp_path, DEFAULT_INDEX)
    assert tally.bad("topk_index.json") == {}


@pytest.mark.slow
def test_many_tampered_indexes_are_refused_or_sound(
    tally: Tally, tiny_scan: Path, tmp_path: Path
) -> None:
    check_index_variants(tally, tiny_scan, tmp_path, SLOW_INDEX)
    assert tally.bad("topk_index.json") == {}


def check_scan_manifests(
    tally: Tally, tiny_scan: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], count: int
) -> None:
    scan = tmp_path / "scan"
    shutil.copytree(tiny_scan, scan)
    document = json.loads((tiny_scan / "manifest.json").read_text())
    for number, variant in enumerate(json_variants(document, count, seed=5)):
        (scan / "manifest.json").write_bytes(variant)
        with tally.case("scan manifest.json (site)", f"variant {number}") as mark:
            code, _, err = run_cli(
                ["site", str(scan), "--out", str(tmp_path / f"s{number}")], capsys
            )
            if code != 0 and not one_line_refusal(code, err):
                mark(TRACEBACK, f"variant {number}: exit {code}: {err[-400:]}")


def test_tampered_scan_manifests_are_refused_or_used(
    tally: Tally, tiny_scan: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    check_scan_manifests(tally, tiny_scan, tmp_path, capsys, DEFAULT_MANIFEST)
    assert tally.bad("scan manifest.json (site)") == {}


@pytest.mark.slow
def test_many_tampered_scan_manifests(
    tally: Tally, tiny_scan: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    check_scan_manifests(tally, tiny_scan, tmp_path, capsys, SLOW_MANIFEST)
    assert tally.bad("scan manifest.json (site)") == {}


def test_tampered_output_manifests_never_delete_wrongly(tally: Tally, tmp_path: Path) -> None:
    """``--overwrite`` deletes what the manifest lists: a tampered list deletes nothing else."""
    document = {"command": "maps", "files": ["a.png", "sub/b.png"]}
    for number, variant in enumerate(json_variants(document, DEFAULT_INDEX, seed=6)):
        folder = tmp_path / f"out{number}"
        (folder / "sub").mkdir(parents=True)
        for name in ("a.png", "sub/b.png", "keep.txt"):
            (folder / name).write_bytes(b"x")
        (folder / "manifest.json").write_bytes(variant)
        with tally.case("output manifest.json (--overwrite)", f"variant {number}") as mark:
            try:
                prepare_output(folder, overwrite=True)
            finally:
                if not (folder / "keep.txt").exists():
                    mark(WRONG, f"variant {number} deleted a file it does not list")
    assert tally.bad("output manifest.json (--overwrite)") == {}


PARTS = {
    "a.png": {"eye": [2, 2, 10, 10], "object": [0, 0, 30, 30]},
    "b.png": {"eye": [4, 4, 12, 12], "object": [0, 0, 30, 30]},
}
BAD_BOXES = (
    [True, 2, 10, 10],
    [10, 2, 2, 10],
    [2, 2, 2**70, 10],
    [2.5, 2, 10, 10],
    ["2", 2, 10, 10],
    [2, 2, 10],
    [],
    None,
    [-(2**64), 0, 5, 5],
)


def parts_variants(count: int) -> list[bytes]:
    fixed = [
        json.dumps({"a.png": {"eye": box}, "b.png": PARTS["b.png"]}).encode() for box in BAD_BOXES
    ]
    return (fixed + json_variants(PARTS, count, seed=7))[:count]


def check_parts(
    tally: Tally, tmp_path: Path, capsys: pytest.CaptureFixture[str], count: int
) -> None:
    from PIL import Image

    for name, grey in (("a.png", 40), ("b.png", 200)):
        Image.new("RGB", (32, 32), (grey, grey, grey)).save(tmp_path / name)
    parts = tmp_path / "parts.json"
    for number, variant in enumerate(parts_variants(count)):
        parts.write_bytes(variant)
        with tally.case("parts.json", f"variant {number}") as mark:
            argv = [
                "correspondence",
                str(tmp_path / "a.png"),
                str(tmp_path / "b.png"),
                "--parts",
                str(parts),
                "--layers",
                "conv1",
                "--trials",
                "1",
                "--no-photos",
                "--out",
                str(tmp_path / f"c{number}"),
            ]
            code, _, err = run_cli(argv, capsys)
            if code != 0 and not one_line_refusal(code, err):
                mark(TRACEBACK, f"variant {number}: exit {code}: {err[-400:]}")
            if code == 0 and number < len(BAD_BOXES):
                mark(WRONG, f"box {BAD_BOXES[number]!r} was accepted")


def test_tampered_parts_files_are_refused_in_one_line(
    tally: Tally, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    check_parts(tally, tmp_path, capsys, DEFAULT_PARTS)
    assert tally.bad("parts.json") == {}


@pytest.mark.slow
def test_many_tampered_parts_files(
    tally: Tally, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    check_parts(tally, tmp_path, capsys, SLOW_PARTS)
    assert tally.bad("parts.json") == {}
