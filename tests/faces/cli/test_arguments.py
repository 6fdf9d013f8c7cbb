"""Arguments checked where they are read: ranges, ASCII digits, devices, class-name files.

Issue 11, point 9: each case was a traceback or a number the user did not mean.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import pytest
import torch

from deconvnet.errors import InputError, SelectionError
from deconvnet.faces.cli import build_parser, main
from deconvnet.faces.cli._classes import parse_label, read_categories
from deconvnet.faces.cli._numbers import int_in, real_number, whole_number
from deconvnet.faces.cli._select import parse_select
from deconvnet.instruments.topk.scan import MapChoice

TOPK = ["topk", "data", "--layers", "conv1", "--out", "out"]

BAD_NUMBERS = [
    (["project", "--out", "o"], "--batch-size", "0"),
    (["project", "--out", "o"], "--batch-size", "-3"),
    (TOPK, "--k", "99999999999999999999"),
    (TOPK, "--k", "0"),
    (TOPK, "--tile", "100000"),
    (TOPK, "--tile", "1"),
    (TOPK, "--batch-size", "0"),
    (TOPK, "--workers", "-1"),
    (TOPK, "--checkpoint-every", "0"),
    (TOPK, "--seed", "١٢"),
    (TOPK, "--seed", "3_0"),
    (["sanity", "--out", "o"], "--seed", "99999999999999999999"),
    (["occlude", "--out", "o"], "--size", "0"),
    (["occlude", "--out", "o"], "--stride", "100000"),
    (["occlude", "--out", "o"], "--batch-size", "0"),
    (["layers"], "--input-size", "0 32"),
    (["layers"], "--input-size", "32 99999"),
    (["project", "--out", "o"], "--scale", "0"),
]


@pytest.mark.parametrize(("command", "option", "value"), BAD_NUMBERS)
def test_numbers_out_of_range_are_usage_errors(
    command: list[str], option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*command, option, *value.split(" ")]) == 2
    err = capsys.readouterr().err
    assert f"argument {option}: must be a " in err and " number from " in err
    assert "Traceback" not in err


def _actions() -> list[tuple[str, argparse.Action]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [(name, action) for name, cmd in sub.choices.items() for action in cmd._actions]


def test_no_option_takes_a_bare_int_or_float() -> None:
    """Every numeric option goes through a ranged parser (``int()`` takes ``3_0`` and ``١٢``)."""
    bare = [(name, a.dest) for name, a in _actions() if a.type in (int, float)]
    assert bare == []


def test_ranged_parser_bounds_are_inclusive() -> None:
    parse = int_in(1, 9)
    assert parse("1") == 1 and parse("9") == 9
    for text in ["0", "10", "", "+1", "1.0", "٣", "1_0", "1e1", " 1"]:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)
    assert whole_number("0042") == 42
    assert real_number("-1.5e2") == -150.0 and real_number(".5") == 0.5
    for text in ["inf", "nan", "1e999", "١.٥", "1_0.0", "0x10"]:
        with pytest.raises(ValueError):
            real_number(text)


@pytest.mark.parametrize(
    "text",
    [
        "top:١٢",
        "top:3_0",
        "top:+3",
        "top: 3",
        "map:٣",
        "neuron:1,٢,3",
        "threshold:١.٥",
        "threshold:1_0",
        "threshold:inf",
        "top:99999999999999999999",
        "unit:2147483648",
    ],
)
def test_selection_numbers_are_ascii_digits(text: str) -> None:
    with pytest.raises(SelectionError):
        parse_select(text)


def test_selection_still_reads_plain_numbers() -> None:
    assert parse_select("top:12") == parse_select("TOP:12")
    assert parse_select("threshold:-1.5e2").threshold == -150.0  # type: ignore[attr-defined]
    assert parse_select("neuron:12,3,4").position == (3, 4)  # type: ignore[attr-defined]


def test_a_unicode_selection_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["project", "--select", "top:١٢", "--out", "o"]) == 2
    assert "cannot read --select 'top:١٢'" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["١٢", "random:3_0", "random:٣", ":5", "random:", "9" * 13])
def test_map_counts_are_ascii_digits(text: str) -> None:
    with pytest.raises(SelectionError):
        MapChoice.parse(text)


def test_map_counts_still_read_plain_numbers() -> None:
    assert MapChoice.parse("12").count == 12 and MapChoice.parse("12").kind == "first"
    assert MapChoice.parse("random:4").count == 4 and MapChoice.parse("Random:4").kind == "random"


def test_label_index_is_ascii_digits() -> None:
    assert parse_label("3", None, 10) == 3
    with pytest.raises(InputError, match=r"give a class index 0\.\.9"):
        parse_label("٣", None, 10)


UNAVAILABLE = ["mps", "meta", "xpu", "hpu", "privateuseone", "cpu:1", "cuda:99999999999999999999"]


@pytest.mark.parametrize("device", [*UNAVAILABLE, "nonsense", ""])
def test_devices_this_build_cannot_run_on(
    device: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["layers", "--device", device]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("deconvnet: error:")
    assert "cpu or cuda" in err or "CUDA" in err


def test_cuda_is_refused_in_one_line_when_absent(capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert main(["layers", "--device", "cuda"]) == 1
    assert "CUDA is not available" in capsys.readouterr().err


def test_cpu_device_still_works(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["layers", "--device", "cpu:0"]) == 0


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "NUL bytes"), (b"caf\xe9\nthe\xff", "not UTF-8")],
)
def test_a_binary_categories_file(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "classes.txt"
    path.write_bytes(content)
    with pytest.raises(InputError, match=reason) as caught:
        read_categories(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_a_binary_categories_file_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "classes.bin"
    path.write_bytes(bytes(range(256)))
    out = tmp_path / "out"
    assert main(["occlude", "--categories", str(path), "--size", "16", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("deconvnet: error: categories file") and len(err.splitlines()) == 1


FUZZ_CASES = 400
FUZZ_ALPHABET = "0123456789-+_.eE ١٢٣\u00a0\u2007xX\t"


def _numeric_options() -> list[tuple[list[str], argparse.Action]]:
    """(argv that reaches the option, action) for every option with a ranged ``type``."""
    prefix = {"topk": TOPK, "layers": ["layers"]}
    found = []
    for name, action in _actions():
        if action.option_strings and getattr(action.type, "__name__", "").startswith("int_"):
            found.append((prefix.get(name, [name, "--out", "o"]), action))
    return found


def test_fuzzed_numbers_parse_in_range_or_are_usage_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Random strings of digits, signs, separators and non-ASCII digits: each option either
    gets an in-range int equal to the ASCII digits given, or argparse refuses it (exit 2)."""
    rng = random.Random(11)
    parser = build_parser()
    options = _numeric_options()
    assert len(options) >= 12
    accepted = refused = 0
    for case in range(FUZZ_CASES):
        argv, action = options[case % len(options)]
        text = "".join(rng.choice(FUZZ_ALPHABET) for _ in range(rng.randrange(1, 25)))
        if case % 4 == 0:
            text = str(rng.randrange(-5, 10 ** rng.randrange(1, 6)))
        values = [text] * (action.nargs if isinstance(action.nargs, int) else 1)
        try:
            args = parser.parse_args([*argv, action.option_strings[0], *values])
        except SystemExit as stop:
            assert stop.code == 2
            refused += 1
            continue
        value = getattr(args, action.dest)
        got = value[0] if isinstance(value, list) else value
        assert text.isascii() and text.isdigit() and got == int(text), (text, got)
        accepted += 1
    capsys.readouterr()
    assert accepted > 20 and refused > 200  # both sides were exercised
