"""``deconvnet topk`` end to end on a tiny generated image folder (random-weight default model).

Oracle: the library functions called directly with the same options give the same index.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deconvnet import models, topk
from deconvnet.faces.cli import main
from deconvnet.inputs import datasets
from tests._fuzz import deadline
from tests._pictures import places

N_IMAGES = 10


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for number in range(N_IMAGES):
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        sub = root / ("odd" if number % 2 else "even")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(sub / f"{number:02d}.png")
    (root / "broken.png").write_bytes(b"not a png")
    return root


def test_topk_command_writes_sheets_and_index(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = [
        "topk", str(folder), "--model", "default", "--weights", "random",
        "--layers", "conv1,conv3", "--k", "4", "--maps", "3", "--out", str(out),
        "--batch-size", "4",
    ]  # fmt: skip
    torch.manual_seed(0)  # random init: the same weights for the CLI and the oracle below
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert f"scanned {N_IMAGES + 1} images (1 skipped)" in captured.out
    assert "broken.png" in captured.err
    assert (out / "topk_conv1.png").is_file() and (out / "topk_conv3.png").is_file()
    document = json.loads((out / "topk_index.json").read_text())
    assert document["metadata"]["layers"] == {"features.0": "conv1", "features.8": "conv3"}
    assert [s["image"] for s in document["skipped"]] == [str(folder / "broken.png")]
    assert len(document["entries"]) == 2 * 3 * 4
    manifest = json.loads((out / "manifest.json").read_text())
    images = len({entry["image"] for entry in document["entries"]})
    assert manifest["projections"] == manifest["reverse_passes"] == 2 * 3 * 4
    assert manifest["forward_images"] == images
    assert f"projected 24 activations: 24 reverse passes, {images} images" in captured.out
    # same numbers as the library with the same model weights and options
    torch.manual_seed(0)
    model = models.load("default", "random")
    data = datasets.open_dataset(folder, model.preprocessing)
    index = topk.scan(model, data, ["features.0", "features.8"], k=4, maps=3)
    expected = {(e.layer, e.channel, e.rank): e for e in index.state.entries()}
    for entry in document["entries"]:
        want = expected[(entry["layer"], entry["map"], entry["rank"])]
        assert entry["image"] == data.name(want.image_id)
        assert entry["position"] == list(want.position)
        assert entry["value"] == pytest.approx(want.value, rel=1e-5)
        assert (out / entry["tile_file"]).is_file()
    assert not list(out.rglob("*.tmp"))
    # resuming a finished scan reuses the checkpoint and gives the same index
    torch.manual_seed(0)
    assert main([*argv, "--resume"]) == 0
    again = json.loads((out / "topk_index.json").read_text())
    assert again["entries"] == document["entries"]


def test_topk_command_exit_codes(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["topk", str(folder), "--model", "default", "--weights", "random"]
    out = ["--out", str(tmp_path / "o")]
    assert main([*base, "--layers", "nope", *out]) == 1
    assert main([*base, "--layers", "conv1", "--maps", "some", *out]) == 1
    assert main([*base, "--layers", "conv1"]) == 2  # --out missing
    assert main([*base, "--layers", "conv1", "--k", "x", *out]) == 2
    assert main(["topk", str(tmp_path / "missing"), "--layers", "conv1", *out]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert errors and all(
        line.startswith(("deconvnet: error:", "usage:")) or "topk" in line for line in errors
    )


def test_bad_files_in_the_folder_are_skipped_and_listed_in_the_manifest(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A FIFO (never opened for a blocking read), a 1x1 image, a PNG cut before IEND and a
    non-UTF-8 name: the scan goes on and the manifest says why each one was skipped."""
    os.mkfifo(folder / "pipe.png")
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(folder / "dot.png")
    whole = (folder / "even" / "00.png").read_bytes()
    (folder / "cut.png").write_bytes(whole[:-16])
    with open(os.fsencode(folder) + b"/caf\xe9.png", "wb") as handle:
        handle.write((folder / "odd" / "01.png").read_bytes())
    out = tmp_path / "out"
    argv = [
        "topk", str(folder), "--model", "default", "--weights", "random", "--layers", "conv3",
        "--k", "2", "--maps", "2", "--out", str(out), "--workers", "0",
    ]  # fmt: skip
    with deadline(120.0):
        assert main(argv) == 0
    captured = capsys.readouterr()
    assert f"scanned {N_IMAGES + 5} images (4 skipped)" in captured.out
    manifest = json.loads((out / "manifest.json").read_text())
    reasons = {Path(s["image"]).name: s["error"] for s in manifest["skipped"]}
    assert set(reasons) == {"broken.png", "pipe.png", "dot.png", "cut.png"}
    assert "FIFO" in reasons["pipe.png"] and "truncated PNG" in reasons["cut.png"]
    assert "forward pass failed" in reasons["dot.png"]


def test_resume_after_a_same_size_swap_is_one_line_and_exit_1(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = [
        "topk", str(folder), "--model", "default", "--weights", "random", "--layers", "conv1",
        "--k", "3", "--maps", "2", "--out", str(out), "--workers", "0", "--seed", "1",
    ]  # fmt: skip
    torch.manual_seed(0)  # random init: the same weights for both runs
    assert main(argv) == 0
    ranked = json.loads((out / "topk_index.json").read_text())["entries"][0]["image"]
    victim = Path(ranked)
    before = victim.stat()
    pixels = np.asarray(Image.open(victim))
    Image.fromarray(255 - pixels).save(victim.with_suffix(".bmp"))  # a different photo ...
    swapped = victim.with_suffix(".bmp").read_bytes()
    victim.with_suffix(".bmp").unlink()
    data = swapped[: before.st_size].ljust(before.st_size, b"\0")  # ... of the same size
    victim.write_bytes(data)
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the same mtime
    capsys.readouterr()
    torch.manual_seed(0)
    assert main([*argv, "--resume"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(victim) in err and "changed since the scan" in err


def test_fig2_output_scales_pages_per_map_pictures_and_captions(
    folder: Path, tmp_path: Path
) -> None:
    """96 maps of conv2: contact sheets cut into pages within the pixel budget, one picture
    per map (tiles/<layer>/<map>.png) with each tile and its caption (value; image with its
    class folder), tiles of 128 px (issue 23, item 3)."""
    from deconvnet.figures.style import MUTED_TEXT, text_image
    from deconvnet.figures.topk import CAPTION_FONT_SIZE, SHEET_MAX_HEIGHT, SHEET_MAX_WIDTH

    out = tmp_path / "out"
    argv = [
        "topk", str(folder), "--model", "default", "--weights", "random", "--layers", "conv2",
        "--k", "2", "--maps", "all", "--workers", "0", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    document = json.loads((out / "topk_index.json").read_text())
    pages = document["sheet_pages"]["features.4"]
    assert pages == ["topk_conv2_page1.png", "topk_conv2_page2.png"]
    for name in pages:
        width, height = Image.open(out / name).size
        assert width <= SHEET_MAX_WIDTH and height <= SHEET_MAX_HEIGHT
    sheets = {name: np.asarray(Image.open(out / name).convert("RGB")) for name in pages}
    maps = {entry["map"] for entry in document["entries"]}
    assert maps == set(range(96))
    for entry in document["entries"]:
        tile = np.asarray(Image.open(out / entry["tile_file"]).convert("RGB"))
        assert max(tile.shape[:2]) == 128
        top, left, bottom, right = entry["sheet_projection_box"]
        np.testing.assert_array_equal(sheets[entry["sheet"]][top:bottom, left:right], tile)
        assert entry["map_file"] == f"tiles/conv2/{entry['map']}.png"
    first = next(e for e in document["entries"] if e["map"] == 0 and e["rank"] == 0)
    picture = np.asarray(Image.open(out / first["map_file"]).convert("RGB"))
    assert places(picture, np.asarray(Image.open(out / first["tile_file"]).convert("RGB")))
    assert places(picture, np.asarray(Image.open(out / first["patch_file"]).convert("RGB")))
    folder_and_name = "/".join(Path(first["image"]).parts[-2:])  # e.g. odd/03.png
    assert folder_and_name.split("/")[0] in {"odd", "even"}
    caption = text_image(folder_and_name, CAPTION_FONT_SIZE, colour=MUTED_TEXT)
    assert places(picture, caption)
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["files"]) >= {*pages, *(f"tiles/conv2/{m}.png" for m in range(96))}
