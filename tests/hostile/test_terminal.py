"""Terminal-safe output: names from files (prototxt layers and blobs, parts, image file
names) with escape sequences, C1 controls and bidirectional overrides never reach the
terminal raw. Oracle: every character written is printable (``str.isprintable``) or a
newline or tab (or, on stderr, the carriage return progress bars redraw with)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from PIL import Image

from tests.hostile.conftest import WRONG, Tally, run_cli

CONTROLS = (
    "\x1b]0;pwned\x07",
    "\x1b[2J",
    "\x1b[31m",
    "\x9b2J",
    "\u202e",
    "\x07",
    "\x08",
    "\r",
    "\x7f",
    "\u2066",
    "\x1bP+q\x1b\\",
    "\x00",
)
GENERATED = 24


def names(count: int) -> list[str]:
    rng = random.Random(9)
    return [f"l{i}{rng.choice(CONTROLS)}x{rng.choice(CONTROLS)}" for i in range(count)]


def raw_characters(text: str, keep: str) -> list[str]:
    return sorted({ch for ch in text if not ch.isprintable() and ch not in keep})


def prototxt_string(text: str) -> str:
    """``text`` as a protobuf text-format string literal (control bytes escaped)."""
    out = []
    for byte in text.encode("utf-8"):
        out.append(chr(byte) if 0x20 <= byte < 0x7F and chr(byte) not in '"\\' else f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def check_output(tally: Tally, surface: str, what: str, out: str, err: str) -> None:
    with tally.case(surface, what) as mark:
        bad = raw_characters(out, "\n\t") + raw_characters(err, "\n\t\r")
        if bad:
            mark(WRONG, f"{what}: raw {[hex(ord(c)) for c in bad]}")


def test_layer_names_from_a_prototxt_are_escaped(
    tally: Tally, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for number, name in enumerate(names(GENERATED)):
        top = name[::-1]
        prototxt = tmp_path / f"net{number}.prototxt"
        prototxt.write_text(
            'name: "t"\ninput: "data"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
            f'layer {{ name: {prototxt_string(name)} type: "Convolution" bottom: "data" '
            f"top: {prototxt_string(top)} convolution_param {{ num_output: 2 kernel_size: 3 }} }}\n"
            f'layer {{ name: "r" type: "ReLU" bottom: {prototxt_string(top)} top: "r" }}\n'
        )
        code, out, err = run_cli(["layers", "--caffe", str(prototxt)], capsys)
        check_output(tally, "terminal: prototxt names", f"net {number} (exit {code})", out, err)
        bad = prototxt.with_suffix(".bad.prototxt")
        bad.write_text(f'name: "t"\nlayer {{ name: {prototxt_string(name)} type: "Nonsense" }}\n')
        code, out, err = run_cli(["layers", "--caffe", str(bad)], capsys)
        check_output(tally, "terminal: prototxt names", f"error {number} (exit {code})", out, err)
    assert tally.bad("terminal: prototxt names") == {}


@pytest.mark.filterwarnings("ignore:Glyph")  # the figure draws the names too
def test_part_names_from_a_parts_file_are_escaped(
    tally: Tally, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, grey in (("a.png", 30), ("b.png", 220)):
        Image.new("RGB", (32, 32), (grey, 90, 10)).save(tmp_path / name)
    parts = {part: [2, 2, 10, 10] for part in names(4)}
    (tmp_path / "parts.json").write_text(json.dumps({"a.png": parts, "b.png": parts}))
    argv = [
        "correspondence",
        str(tmp_path / "a.png"),
        str(tmp_path / "b.png"),
        "--parts",
        str(tmp_path / "parts.json"),
        "--layers",
        "conv1",
        "--trials",
        "1",
        "--no-photos",
        "--out",
        str(tmp_path / "out"),
    ]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    check_output(tally, "terminal: parts and images", "correspondence table", out, err)
    assert tally.bad("terminal: parts and images") == {}


def test_image_names_from_a_folder_are_escaped(
    tally: Tally, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(data / "good.png")
    for number, name in enumerate(names(4)):
        safe = name.replace("\x00", "").replace("/", "")
        (data / f"{safe}{number}.png").write_bytes(b"not an image")  # skipped, and named
    code, out, err = run_cli(
        [
            "topk",
            str(data),
            "--layers",
            "conv1",
            "--k",
            "1",
            "--maps",
            "1",
            "--workers",
            "0",
            "--out",
            str(tmp_path / "out"),
        ],
        capsys,
    )
    assert code == 0, err
    check_output(tally, "terminal: parts and images", "topk skipped list", out, err)
    assert tally.bad("terminal: parts and images") == {}
