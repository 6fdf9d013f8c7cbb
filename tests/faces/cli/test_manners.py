"""CLI manners: --version, every option's default in its help, --debug on either side."""

from __future__ import annotations

import argparse
import importlib.metadata
import tomllib
from pathlib import Path

import pytest

from deconvnet.faces.cli import build_parser, main
from deconvnet.faces.cli.commands import project, topk

PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main([*argv, "--help"]) == 0
    return capsys.readouterr().out


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    expected = tomllib.loads(PYPROJECT.read_text())["project"]["version"]
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"deconvnet {expected}\n"


def test_version_of_a_source_tree_never_installed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == "deconvnet 0+unknown\n"


def _options_with_defaults() -> list[tuple[str, argparse.Action]]:
    """Every (command, action) whose help must say its default: not -h, not required."""
    found = []
    for command, parser in _subparsers().items():
        for action in parser._actions:
            if action.default is argparse.SUPPRESS or action.required:
                continue
            found.append((command, action))
    return found


@pytest.mark.parametrize(
    ("command", "action"),
    _options_with_defaults(),
    ids=lambda v: v if isinstance(v, str) else v.dest,
)
def test_every_option_says_its_default_once(command: str, action: argparse.Action) -> None:
    parser = _subparsers()[command]
    text = parser._get_formatter()._expand_help(action)  # what --help prints for it
    assert text.count("default:") == 1, (command, action.dest, text)
    assert "default: None" not in text and "`" not in text
    if action.default is not None:
        assert f"(default: {action.default})" in text


@pytest.mark.parametrize("command", ["", *_subparsers()])
def test_help_reads_well(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = _help([command] if command else [], capsys)
    assert "`" not in text and "None" not in text
    assert "--debug" in text


def test_examples_keep_their_layout(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(["project"], capsys)
    assert all(line in text.splitlines() for line in project.EXAMPLES.splitlines())


def test_checkpoint_every_says_its_unit(capsys: pytest.CaptureFixture[str]) -> None:
    text = " ".join(_help(["topk"], capsys).split())
    assert "--checkpoint-every BATCHES" in text
    assert (
        f"every this many batches of --batch-size images, and at the end (default: "
        f"{topk.DEFAULT_CHECKPOINT_EVERY})" in text
    )


@pytest.mark.parametrize(
    ("argv", "debug"),
    [
        (["project", "--out", "o"], False),
        (["--debug", "project", "--out", "o"], True),
        (["project", "--out", "o", "--debug"], True),
        (["--debug", "layers", "--debug"], True),
    ],
)
def test_debug_before_or_after_the_command(argv: list[str], debug: bool) -> None:
    assert build_parser().parse_args(argv).debug is debug


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback(tmp_path: Path, where: str) -> None:
    argv = ["project", str(tmp_path / "missing.png"), "--out", str(tmp_path / "o")]
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    with pytest.raises(FileNotFoundError):
        main(argv)


def test_without_debug_an_error_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["project", str(tmp_path / "missing.png"), "--out", str(tmp_path / "o")]) == 1
    assert capsys.readouterr().err.count("\n") == 1
