"""Datasets for scans (deconvnet.datasets).

Oracles: file lists built by hand, ``images.preprocess`` applied directly, NumPy transposes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deconvnet.errors import InputError
from deconvnet.inputs.datasets import (
    ArrayDataset,
    ImageFolder,
    Item,
    collate_by_size,
    open_dataset,
)
from deconvnet.inputs.images import MAX_NATIVE_SIDE, fit_native_size, load_image, preprocess
from deconvnet.inputs.preprocessing import Preprocessing
from tests._fuzz import deadline

SPEC = Preprocessing(input_size=(8, 8), resize_rule="none", mean=(0.5, 0.4, 0.3))
RNG = np.random.default_rng(3)


def _save(path: Path, size: tuple[int, int] = (8, 8)) -> np.ndarray:
    pixels = RNG.integers(0, 256, (*size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    _save(tmp_path / "b.png")
    _save(tmp_path / "a" / "z.bmp")
    _save(tmp_path / "a" / "c.PNG")
    _save(tmp_path / ".hidden" / "x.png")
    _save(tmp_path / ".dot.png")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    return tmp_path


def test_folder_lists_images_recursively_sorted_without_hidden(folder: Path) -> None:
    data = ImageFolder(folder, SPEC)
    assert data.paths == ("a/c.PNG", "a/z.bmp", "b.png", "broken.jpg")
    assert len(data) == 4
    assert data.name(2) == str(folder / "b.png")


def test_folder_items_are_preprocessed_and_corrupt_files_carry_an_error(folder: Path) -> None:
    data = ImageFolder(folder, SPEC)
    item = data[2]
    expected = preprocess(load_image(folder / "b.png"), SPEC)[0]
    assert item.error is None and item.image is not None
    torch.testing.assert_close(item.image, expected, rtol=0, atol=0)
    broken = data[3]
    assert broken.image is None and broken.error is not None and "broken.jpg" in broken.error


def test_fingerprint_follows_the_file_list(folder: Path) -> None:
    before = ImageFolder(folder, SPEC).fingerprint()
    assert ImageFolder(folder, SPEC).fingerprint() == before
    _save(folder / "new.png")
    assert ImageFolder(folder, SPEC).fingerprint() != before


def test_array_file_channels_last_and_first_agree(tmp_path: Path) -> None:
    images = RNG.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "last.npz", x=images, y=np.arange(5))
    np.savez(tmp_path / "first.npz", x=images.transpose(0, 3, 1, 2))
    last = open_dataset(tmp_path / "last.npz", SPEC)
    first = open_dataset(tmp_path / "first.npz", SPEC)
    assert isinstance(last, ArrayDataset) and len(last) == 5
    np.testing.assert_array_equal(last.labels, np.arange(5))
    for index in range(5):
        np.testing.assert_array_equal(first.raw_image(index), images[index])
        torch.testing.assert_close(last[index].image, preprocess(images[index], SPEC)[0])
    assert first.fingerprint() == last.fingerprint()
    assert last.name(3).endswith("last.npz[3]")


@pytest.mark.parametrize(
    "arrays",
    [{"y": np.zeros(3)}, {"x": np.zeros((2, 8, 8, 3))}, {"x": np.zeros((2, 8, 8, 4), np.uint8)}],
)
def test_bad_array_files_are_input_errors(tmp_path: Path, arrays: dict) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputError):
        open_dataset(tmp_path / "bad.npz", SPEC)


def test_open_dataset_rejects_missing_and_other_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        open_dataset(tmp_path / "missing", SPEC)
    (tmp_path / "data.csv").write_text("1,2")
    with pytest.raises(InputError, match="npz"):
        open_dataset(tmp_path / "data.csv", SPEC)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files"):
        open_dataset(tmp_path / "empty", SPEC)


def test_collate_groups_by_size_and_keeps_failures() -> None:
    items = [
        Item(0, torch.zeros(3, 4, 4)),
        Item(1, torch.ones(3, 5, 4)),
        Item(2, None, "bad"),
        Item(3, torch.full((3, 4, 4), 2.0)),
    ]
    batch = collate_by_size(items)
    assert batch.size == 4
    assert batch.failed == ((2, "bad"),)
    assert [ids.tolist() for ids, _ in batch.groups] == [[0, 3], [1]]
    torch.testing.assert_close(batch.groups[0][1][1], torch.full((3, 4, 4), 2.0))
    assert batch.groups[1][1].shape == (1, 3, 5, 4)


# ---------------------------------------------------------------- robust reading


def test_items_carry_the_sha256_of_the_file_bytes(folder: Path) -> None:
    data = ImageFolder(folder, SPEC)
    assert data[2].digest == hashlib.sha256((folder / "b.png").read_bytes()).digest()
    assert data[3].digest is None  # broken.jpg: read, but no pixels, so no ranked digest
    images = RNG.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    np.savez(folder.parent / "rows.npz", x=images)
    rows = ArrayDataset(folder.parent / "rows.npz", SPEC)
    expected = hashlib.sha256(b"(8, 8, 3)\n" + images[1].tobytes()).digest()
    assert rows[1].digest == expected


def test_same_size_swap_changes_the_listing_fingerprint(folder: Path) -> None:
    """Uncompressed BMPs of one size have one file size: a true same-size photo swap."""
    before = ImageFolder(folder, SPEC).fingerprint()
    path = folder / "a" / "z.bmp"
    size, old = path.stat().st_size, path.read_bytes()
    _save(path)
    assert path.stat().st_size == size and path.read_bytes() != old
    assert ImageFolder(folder, SPEC).fingerprint() != before


def test_a_fifo_in_the_folder_is_skipped_at_once(folder: Path) -> None:
    os.mkfifo(folder / "pipe.png")
    data = ImageFolder(folder, SPEC)
    index = data.paths.index("pipe.png")
    with deadline(5.0):
        item = data[index]
        data.fingerprint()
    assert item.image is None and item.error is not None and "FIFO" in item.error


def test_non_utf8_file_names_are_listed_hashed_and_read(tmp_path: Path) -> None:
    pixels = RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    name = os.fsencode(tmp_path) + b"/caf\xe9.png"  # Latin-1, not UTF-8
    Image.fromarray(pixels).save(tmp_path / "plain.png")
    with open(name, "wb") as handle:
        handle.write((tmp_path / "plain.png").read_bytes())
    data = ImageFolder(tmp_path, SPEC)
    assert len(data) == 2 and data.fingerprint()
    odd = next(i for i, path in enumerate(data.paths) if path != "plain.png")
    torch.testing.assert_close(data[odd].image, preprocess(pixels, SPEC)[0], rtol=0, atol=0)
    assert os.fsencode(data.name(odd)) == name


def test_large_native_images_are_downscaled_as_project_inputs_are(tmp_path: Path) -> None:
    pixels = RNG.integers(0, 256, (40, 1500, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    data = ImageFolder(tmp_path, SPEC)
    expected = fit_native_size(pixels, SPEC)[0]
    assert expected.shape[1] == MAX_NATIVE_SIDE
    torch.testing.assert_close(data[0].image, preprocess(expected, SPEC)[0], rtol=0, atol=0)
