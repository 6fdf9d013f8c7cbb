"""Class labels read from a dataset's listing: WordNet ids in file names, a folder per
class, an .npz's y; all images or none, and an explicit scheme that does not fit is one
clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deconvnet.errors import InputError
from deconvnet.inputs.datasets import open_dataset
from deconvnet.inputs.labels import Labels, array_labels, folder_labels
from tests import _datasets

IMAGENET_NAMES = ["n01440764_tench.JPEG", "n02123045_tabby.JPEG", "n01440764_1234.JPEG"]


def test_wordnet_ids_in_every_file_name_are_the_labels() -> None:
    labels = folder_labels(IMAGENET_NAMES, "auto")
    assert labels == Labels("wnid", ("n01440764", "n02123045"), (0, 1, 0))


def test_a_folder_per_class_gives_the_folder_names() -> None:
    paths = ["cat/1.jpg", "dog/2.jpg", "cat/3.jpg"]
    assert folder_labels(paths, "auto") == Labels("folder", ("cat", "dog"), (0, 1, 0))
    assert folder_labels(paths, "none") is None


def test_a_partial_or_flat_listing_has_no_labels_unless_asked() -> None:
    assert folder_labels(["n01440764_a.jpg", "b.jpg"], "auto") is None  # one without an id
    assert folder_labels(["a.jpg", "b.jpg"], "auto") is None  # flat, no ids
    assert folder_labels(["cat/a.jpg", "cat/b/c.jpg"], "auto") is None  # not one level
    assert folder_labels(["cat/a.jpg", "cat/b.jpg"], "auto") is None  # one folder only
    with pytest.raises(InputError, match=r"b\.jpg.*has no WordNet id"):
        folder_labels(["n01440764_a.jpg", "b.jpg"], "wnid")
    with pytest.raises(InputError, match="a folder per class"):
        folder_labels(["a.jpg"], "folder")
    with pytest.raises(InputError, match=r"needs an \.npz"):
        folder_labels(["a/b.jpg"], "array")
    with pytest.raises(InputError, match="labels must be one of"):
        folder_labels(["a/b.jpg"], "colour")


def test_an_array_y_is_sorted_as_numbers() -> None:
    labels = array_labels(np.array([10, 2, 2, 1]), 4, "auto")
    assert labels == Labels("array", ("1", "2", "10"), (2, 1, 1, 0))
    assert array_labels(None, 4, "auto") is None
    with pytest.raises(InputError, match="one integer per image"):
        array_labels(np.array([0.5, 1.0]), 2, "auto")
    with pytest.raises(InputError, match="one integer per image"):
        array_labels(np.array([1, 2, 3]), 2, "auto")
    with pytest.raises(InputError, match="has no 'y'"):
        array_labels(None, 2, "array")


def test_datasets_read_their_labels(tmp_path: Path) -> None:
    for name in ("cat", "dog"):
        (tmp_path / "folder" / name).mkdir(parents=True)
    images = _datasets.binary_images()[:4]
    for number, image in enumerate(images):
        Image.fromarray(image).save(
            tmp_path / "folder" / ("cat", "dog")[number % 2] / f"{number}.png"
        )
    folder = open_dataset(tmp_path / "folder", _datasets.TIE_SPEC)
    labels = folder.class_labels()
    assert labels is not None and labels.classes == ("cat", "dog")
    assert [labels.classes[labels.of_image[i]] for i in range(len(folder))] == [
        folder.name(i).split("/")[-2] for i in range(len(folder))
    ]
    np.savez(tmp_path / "a.npz", x=images, y=np.array([3, 1, 3, 1]))
    array = open_dataset(tmp_path / "a.npz", _datasets.TIE_SPEC)
    assert array.class_labels() == Labels("array", ("1", "3"), (1, 0, 1, 0))
    assert array.class_labels("none") is None
