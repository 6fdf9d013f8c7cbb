"""Every file name read from a file is untrusted: generated hostile names against the
containment check, the static site's tile copies, ``--overwrite``'s manifest and output
names made from prototxt layer names; ``--out`` equal to, inside or above the input.

Oracle for escapes: a snapshot of everything around the output folder (the scan, a
victim folder, the parent) taken before the case; any change outside ``--out`` is a write
outside. Oracle for the containment check: ``os.path.realpath`` of the joined name.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from deconvnet.faces.cli._output import prepare_output
from deconvnet.faces.site.build import build_site
from tests.hostile._cases import hostile_names
from tests.hostile.conftest import ESCAPE, WRONG, Tally, one_line_refusal, run_cli, snapshot

DEFAULT_NAMES, SLOW_NAMES = 300, 5_000
DEFAULT_SITES, SLOW_SITES = 60, 600
_PLAIN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*")


def lay_out_links(root: Path, outside: Path) -> None:
    """The links the names refer to: ``deep`` (inside, two levels down), ``link_in``,
    ``link_out`` (to a folder outside), ``loop`` (to itself); and files they reach."""
    (root / "d1" / "d2").mkdir(parents=True, exist_ok=True)
    (root / "tiles").mkdir(exist_ok=True)
    for name in ("x.png", "d1/x.png", "tiles/x.png"):
        (root / name).write_bytes(b"\x89PNG inside")
    (outside / "victim.png").write_bytes(b"victim")
    (root / "deep").symlink_to("d1/d2", target_is_directory=True)
    (root / "link_in").symlink_to("tiles", target_is_directory=True)
    (root / "link_out").symlink_to(outside, target_is_directory=True)
    (root / "loop").symlink_to("loop")


def check_names(tally: Tally, tmp_path: Path, count: int) -> None:
    from deconvnet.storage.paths import inside  # the helper this issue adds

    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    lay_out_links(root, outside)
    base = os.path.realpath(root)
    for name in hostile_names(count, seed=1):
        with tally.case("containment check", repr(name)) as mark:
            found = inside(root, name)
            real = os.path.realpath(os.path.join(root, name))
            if os.path.commonpath([base, str(found)]) != base:
                mark(ESCAPE, f"{name!r} -> {found}")
            elif str(found) != real:
                mark(WRONG, f"{name!r} -> {found}, realpath {real}")
        plain = bool(_PLAIN.fullmatch(name)) and ".." not in name.split("/")
        if plain and not name.startswith(("link_out", "loop")):
            with tally.case("containment check", repr(name)) as mark:
                inside(root, name)  # a plain name that stays inside must be accepted


def test_the_containment_check_on_generated_names(tally: Tally, tmp_path: Path) -> None:
    check_names(tally, tmp_path, DEFAULT_NAMES)
    assert tally.bad("containment check") == {}


@pytest.mark.slow
def test_the_containment_check_on_many_generated_names(tally: Tally, tmp_path: Path) -> None:
    check_names(tally, tmp_path, SLOW_NAMES)
    assert tally.bad("containment check") == {}


def hostile_scan(tiny_scan: Path, world: Path) -> tuple[Path, dict]:
    """A copy of the real scan in ``world/scan`` with the links laid out, and its index."""
    scan = world / "scan"
    shutil.copytree(tiny_scan, scan)
    (world / "outside").mkdir()
    lay_out_links(scan, world / "outside")
    return scan, json.loads((scan / "topk_index.json").read_text())


def check_sites(tally: Tally, tiny_scan: Path, tmp_path: Path, count: int) -> None:
    world = tmp_path / "world"
    scan, document = hostile_scan(tiny_scan, world)
    for number, name in enumerate(hostile_names(count, seed=2)):
        tampered = json.loads(json.dumps(document))
        tampered["entries"][number % len(tampered["entries"])]["tile_file"] = name
        if number % 3 == 0:
            tampered["entries"][0]["patch_file"] = name
        (scan / "topk_index.json").write_text(json.dumps(tampered))
        out = world / "sites" / "a" / f"site{number}"
        before = snapshot(world)
        with tally.case("site tile names", repr(name)) as mark:
            try:
                result = build_site(scan, out)
            finally:
                after = snapshot(world)
                changed = {
                    key
                    for key in set(before) | set(after)
                    if before.get(key) != after.get(key)
                    and not key.startswith(f"sites/a/{out.name}")
                } - {"topk_index.json", "scan/topk_index.json", "sites", "sites/a"}
                if changed:
                    mark(ESCAPE, f"{name!r} changed {sorted(changed)[:3]}")
            inside = os.path.realpath(out)
            for path in result.files:
                if os.path.commonpath([inside, os.path.realpath(path)]) != inside:
                    mark(ESCAPE, f"{name!r} wrote {path}")


def test_the_site_writes_only_inside_its_folder(
    tally: Tally, tiny_scan: Path, tmp_path: Path
) -> None:
    check_sites(tally, tiny_scan, tmp_path, DEFAULT_SITES)
    assert tally.bad("site tile names") == {}


@pytest.mark.slow
def test_the_site_writes_only_inside_its_folder_many(
    tally: Tally, tiny_scan: Path, tmp_path: Path
) -> None:
    check_sites(tally, tiny_scan, tmp_path, SLOW_SITES)
    assert tally.bad("site tile names") == {}


def test_manifest_names_never_delete_outside(tally: Tally, tmp_path: Path) -> None:
    for number, name in enumerate(hostile_names(DEFAULT_SITES, seed=3)):
        world = tmp_path / f"w{number}"
        folder = world / "out"
        folder.mkdir(parents=True)
        (world / "outside").mkdir()
        lay_out_links(folder, world / "outside")
        (folder / "a.png").write_bytes(b"a")
        (folder / "manifest.json").write_text(json.dumps({"files": ["a.png", name]}))
        before = {k: v for k, v in snapshot(world).items() if not k.startswith("out")}
        with tally.case("manifest names", repr(name)) as mark:
            try:
                prepare_output(folder, overwrite=True)
            finally:
                after = {k: v for k, v in snapshot(world).items() if not k.startswith("out")}
                if after != before:
                    mark(ESCAPE, f"{name!r} deleted outside: {sorted(set(before) - set(after))}")
    assert tally.bad("manifest names") == {}


@pytest.mark.parametrize("where", ["same", "inside", "above"])
def test_out_at_inside_or_above_the_scan_is_refused_untouched(
    tally: Tally, tiny_scan: Path, tmp_path: Path, where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    scan = tmp_path / "parent" / "scan"
    shutil.copytree(tiny_scan, scan)
    out = {"same": scan, "inside": scan / "site", "above": scan.parent}[where]
    before = snapshot(tmp_path)
    bad_before = tally.bad("site --out and SCAN_DIR")
    with tally.case("site --out and SCAN_DIR", where) as mark:
        code, _, err = run_cli(["site", str(scan), "--out", str(out), "--overwrite"], capsys)
        if not one_line_refusal(code, err) or snapshot(tmp_path) != before:
            mark(
                ESCAPE,
                f"--out {where}: exit {code}, {len(before) - len(snapshot(tmp_path))} "
                f"entries fewer: {err[-300:]}",
            )
    assert tally.bad("site --out and SCAN_DIR") == bad_before


def test_topk_out_inside_its_data_is_refused(
    tally: Tally, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.faces.conftest import make_photos

    data = make_photos(tmp_path / "data", count=2)
    with tally.case("topk --out and DATA", "inside") as mark:
        code, _, err = run_cli(
            ["topk", str(data), "--layers", "conv1", "--out", str(data / "o")], capsys
        )
        if not one_line_refusal(code, err) or (data / "o").exists():
            mark(ESCAPE, err[-300:])
    assert tally.bad("topk --out and DATA") == {}


def _outside_out(found: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """Everything but ``a/b/out`` and the times of its parents (which change as it is made)."""
    return {k: v for k, v in found.items() if not k.startswith("a/b/out") and k not in ("a", "a/b")}


EVIL_NET = """name: "evil"
input: "data"
input_shape {{ dim: 1 dim: 3 dim: 16 dim: 16 }}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "{top}"
        convolution_param {{ num_output: 2 kernel_size: 3 }} }}
layer {{ name: "relu" type: "ReLU" bottom: "{top}" top: "r" }}
"""


def test_output_names_made_from_prototxt_names_stay_inside(
    tally: Tally, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A blob named ``../../victim`` names the maps file; it must not climb out."""
    from tests.faces.conftest import make_photos

    image = make_photos(tmp_path / "in", count=1) / "photo_0.png"
    out = tmp_path / "a" / "b" / "out"
    out.parent.mkdir(parents=True)
    for number, top in enumerate(
        [
            "../../../victim",
            "../../../../../../victim",
            "a/../../x",
            "/victim",
            "\\x1b[2J../v",
            "..",
            ".",
        ]
    ):
        prototxt = tmp_path / f"evil{number}.prototxt"
        prototxt.write_text(EVIL_NET.format(top=top.replace("\\", "\\\\")))
        before = _outside_out(snapshot(tmp_path))
        with tally.case("output names from prototxt", repr(top)) as mark:
            argv = ["maps", str(image), "--caffe", str(prototxt), "--layer", "conv"]
            run_cli([*argv, "--out", str(out), "--overwrite"], capsys)
            after = _outside_out(snapshot(tmp_path))
            if after != before:
                mark(ESCAPE, f"{top!r}: {sorted(set(after) - set(before))}")
    assert tally.bad("output names from prototxt") == {}
