"""Atomic PNG and JSON writing (deconvnet.figures.files): round trips, failures keep old files,
modes follow the umask (0o666 & ~umask, what ``open()`` gives)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deconvnet.errors import InputError
from deconvnet.figures.files import PngWriter, save_png, write_json

RNG = np.random.default_rng(1)


def test_save_png_round_trip_creates_parents_and_leaves_no_temp(tmp_path: Path) -> None:
    image = RNG.integers(0, 256, size=(7, 9, 3), dtype=np.uint8)
    path = save_png(image, tmp_path / "a" / "b" / "out.png")
    np.testing.assert_array_equal(np.asarray(Image.open(path)), image)
    grey = RNG.integers(0, 256, size=(7, 9), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(save_png(grey, path))), grey)
    assert os.listdir(path.parent) == ["out.png"]
    with pytest.raises(InputError):
        save_png(image.astype(np.float32), path)


def test_save_png_failure_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_png(np.zeros((2, 2), np.uint8), tmp_path / "keep.png")
    before = path.read_bytes()

    def broken_save(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        fp.write(b"partial")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_png(np.ones((2, 2), np.uint8), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["keep.png"]


def test_png_writer_writes_every_file_as_save_png_does(tmp_path: Path) -> None:
    images = [RNG.integers(0, 256, size=(5 + n % 4, 6, 3), dtype=np.uint8) for n in range(40)]
    with PngWriter() as writer:
        for n, image in enumerate(images):
            assert writer.save(image, tmp_path / "w" / f"{n}.png") == tmp_path / "w" / f"{n}.png"
            save_png(image, tmp_path / "s" / f"{n}.png")
        with pytest.raises(InputError):  # refused at once, not in a worker
            writer.save(images[0].astype(np.float32), tmp_path / "w" / "bad.png")
    for n in range(len(images)):
        assert (tmp_path / "w" / f"{n}.png").read_bytes() == (
            tmp_path / "s" / f"{n}.png"
        ).read_bytes()
    assert len(os.listdir(tmp_path / "w")) == len(images)  # no temporary file left


def test_png_writer_raises_a_failed_write_and_waits_for_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Image.Image.save

    def failing(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        if self.size == (3, 3):
            raise OSError("disk full")
        original(self, fp, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image.Image, "save", failing)
    monkeypatch.setattr(PngWriter, "QUEUED", 4)
    with pytest.raises(OSError, match="disk full"), PngWriter() as writer:
        writer.save(np.zeros((3, 3), np.uint8), tmp_path / "bad.png")
        for n in range(10):
            writer.save(np.zeros((2, 2), np.uint8), tmp_path / f"{n}.png")
    assert not (tmp_path / "bad.png").exists()
    names = os.listdir(tmp_path)
    assert all(name.endswith(".png") and not name.startswith(".") for name in names)


def test_write_json_converts_scalars_and_sorts_keys(tmp_path: Path) -> None:
    record = {
        "value": np.float32(1.5),
        "channel": torch.tensor(7),
        "position": (np.int64(3), 4),
        "box": np.array([1, 2, 3, 4]),
        "nested": {"b": torch.tensor([0.25, 0.5]), "a": tmp_path / "x.png"},
    }
    path = write_json(record, tmp_path / "sub" / "run.json")
    text = path.read_text()
    assert text.endswith("\n") and text.index('"box"') < text.index('"value"')
    assert json.loads(text) == {
        "value": 1.5,
        "channel": 7,
        "position": [3, 4],
        "box": [1, 2, 3, 4],
        "nested": {"a": str(tmp_path / "x.png"), "b": [0.25, 0.5]},
    }
    assert write_json(json.loads(text), path).read_text() == text  # stable
    with pytest.raises(InputError, match="JSON"):
        write_json({"bad": float("nan")}, tmp_path / "nan.json")
    assert not (tmp_path / "nan.json").exists()


UMASKS = pytest.mark.parametrize(
    ("umask", "expected"), [(0o022, 0o644), (0o027, 0o640)], ids=["umask 0022", "umask 0027"]
)


@UMASKS
def test_png_and_json_files_get_the_umask_mode(
    tmp_path: Path, set_umask: Callable[[int], int], umask: int, expected: int
) -> None:
    set_umask(umask)
    png = save_png(np.zeros((2, 3), np.uint8), tmp_path / "a.png")
    document = write_json({"a": 1}, tmp_path / "a.json")
    assert [stat.S_IMODE(p.stat().st_mode) for p in (png, document)] == [expected, expected]


def test_a_palette_png_keeps_a_charts_colours(tmp_path: Path) -> None:
    from PIL import Image

    chart = np.full((40, 60, 3), 255, dtype=np.uint8)
    chart[10:12, :] = (31, 119, 180)  # a line in a rule's colour
    chart[20:30, 5:25] = (255, 127, 14)
    path = save_png(chart, tmp_path / "chart.png", palette=True)
    with Image.open(path) as image:
        assert image.mode == "P"
        assert np.array_equal(np.asarray(image.convert("RGB")), chart)
