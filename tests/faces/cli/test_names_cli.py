"""The command line names layers, classes and options one way (issue 23, item 6): a wrong
layer gets a short "did you mean", a class is named by synonym, prefix or WordNet id, and
``--display`` takes the same displays in ``project`` and ``topk``.

Oracle for the classes: Caffe's ``synset_words.txt`` order (index 281 is n02123045
"tabby, tabby cat")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deconvnet.faces.cli import main
from deconvnet.faces.cli._classes import parse_label
from deconvnet.models._meta import IMAGENET_CATEGORIES, IMAGENET_WNIDS

TABBY = 281


def test_the_cli_says_it_in_one_short_line(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    argv = ["project", "--model", "squeezenet1_0", "--weights", "deep-compression"]
    assert main([*argv, "--layer", "fire55", "--out", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and len(error) < 250
    assert "did you mean fire5" in error


@pytest.mark.parametrize(
    "text",
    ["281", "tabby cat", "Tabby", "tabby, tabby cat", "n02123045", "tabb"],
)
def test_a_class_is_named_by_index_name_synonym_wnid_or_unique_start(text: str) -> None:
    assert IMAGENET_WNIDS[TABBY] == "n02123045"
    assert parse_label(text, IMAGENET_CATEGORIES, 1000) == TABBY


def test_topk_takes_the_displays_project_takes(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for number in range(3):
        pixels = np.random.default_rng(number).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{number}.png")
    argv = ["topk", str(folder), "--layers", "conv1", "--maps", "2", "--k", "2", "--workers", "0"]
    for display in ("rgb", "signed", "heat", "overlay"):
        assert main([*argv, "--display", display, "--out", str(tmp_path / display)]) == 0
        assert main(["project", "--display", display, "--out", str(tmp_path / f"p{display}")]) == 0
