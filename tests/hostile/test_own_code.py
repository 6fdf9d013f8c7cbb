"""Own model code inside the error boundary: a factory or module that exits, is
interrupted, is not callable or is a module instance, returns something else, or describes
itself with attributes of the wrong type; a forward pass that exits. Each must end with a
non-zero exit and exactly one line on stderr (exit 0 with no output was the old answer to
``sys.exit(0)``; a ``preprocessing`` of the wrong type was silently ignored)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hostile.conftest import WRONG, Tally, run_cli

FACTORIES = """
import sys
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x)


class Exits(Net):
    def forward(self, x):
        sys.exit(0)


def described(**card):
    net = Net()
    for name, value in card.items():
        setattr(net, name, value)
    return net


def exit_zero(): sys.exit(0)
def exit_text(): sys.exit("bye\\nsecond line")
def exit_none(): raise SystemExit
def interrupt(): raise KeyboardInterrupt
def returns_int(): return 3
def returns_none(): return None
def returns_class(): return Net
def preprocessing_dict(): return described(preprocessing={"mean": [0.5]})
def preprocessing_text(): return described(preprocessing="imagenet")
def preprocessing_number(): return described(preprocessing=3)
def categories_numbers(): return described(categories=[1, 2, 3])
def categories_text(): return described(categories="cat")
def aliases_list(): return described(layer_aliases=["conv"])
def aliases_numbers(): return described(layer_aliases={"c": 1})
def exits_in_forward(): return Exits()
instance = Net()
number = 5
"""
CASES = {
    "exit_zero": 1,
    "exit_text": 1,
    "exit_none": 1,
    "interrupt": 130,
    "returns_int": 1,
    "returns_none": 1,
    "returns_class": 1,
    "preprocessing_dict": 1,
    "preprocessing_text": 1,
    "preprocessing_number": 1,
    "categories_numbers": 1,
    "categories_text": 1,
    "aliases_list": 1,
    "aliases_numbers": 1,
    "instance": 1,
    "number": 1,
    "missing": 1,
}
"""Factory -> the exit code ``deconvnet layers --model net.py:FACTORY`` must end with."""


def check(tally: Tally, what: str, code: int, err: str, expected: int) -> None:
    with tally.case("own model code", what) as mark:
        lines = [line for line in err.splitlines() if line.strip()]
        if code != expected or len(lines) != 1 or not lines[0].startswith("deconvnet: "):
            mark(WRONG, f"{what}: exit {code} (want {expected}), stderr {err[-300:]!r}")


def test_own_code_that_misbehaves_is_one_line(
    tally: Tally, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "net.py"
    source.write_text(FACTORIES)
    for name, expected in CASES.items():
        code, _, err = run_cli(["layers", "--model", f"{source}:{name}"], capsys)
        check(tally, name, code, err, expected)
    (tmp_path / "exits_on_import.py").write_text("import sys\nsys.exit(0)\n")
    code, _, err = run_cli(["layers", "--model", f"{tmp_path / 'exits_on_import.py'}:f"], capsys)
    check(tally, "exit at import", code, err, 1)
    image = tmp_path / "photo.png"
    from PIL import Image

    Image.new("RGB", (16, 16)).save(image)
    argv = [
        "maps",
        str(image),
        "--model",
        f"{source}:exits_in_forward",
        "--layer",
        "conv",
        "--out",
        str(tmp_path / "out"),
    ]
    code, _, err = run_cli(argv, capsys)
    check(tally, "exit in forward", code, err, 1)
    assert tally.bad("own model code") == {}
