"""The ``deconvnet`` command: ``main(argv) -> exit code``.

Exit codes: 0 success, 1 bad input (one line on stderr, no traceback unless ``--debug``),
2 bad usage (argparse). Each sub-command lives in its own module with
``register(subparsers)``, which sets ``func(args) -> int`` on its parser. ``--debug`` is
accepted before and after the sub-command; ``--version`` prints the installed version.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import sys
from collections.abc import Sequence

from deconvnet.errors import DeconvnetError
from deconvnet.faces.cli._help import HelpFormatter

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_USAGE = 2
DISTRIBUTION = "deconvnet"
UNKNOWN_VERSION = "0+unknown"
"""Shown by ``--version`` from a source tree that was never installed (no package metadata)."""
DEBUG_HELP = "show tracebacks on errors"

EXAMPLES = """examples:
  deconvnet project --out out/                      # embedded default model, bundled photo
  deconvnet project cat.jpg --model alexnet --weights imagenet --layer features.10 --out out/
  deconvnet layers --model zfnet
  deconvnet maps cat.jpg --layer conv1 --out out/
"""


def build_parser() -> argparse.ArgumentParser:
    """The full parser; sub-commands register themselves."""
    from deconvnet.faces.cli import commands

    parser = argparse.ArgumentParser(
        prog="deconvnet",
        description="See what the layers of a CNN respond to (Zeiler & Fergus deconvnet).",
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in commands.ALL:
        module.register(sub)
    for command in sub.choices.values():
        # SUPPRESS: a sub-command without --debug keeps what was given before it.
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP
        )
    return parser


def package_version() -> str:
    """The installed distribution's version, or ``UNKNOWN_VERSION`` when not installed."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return UNKNOWN_VERSION


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code instead of exiting (testable via ``main([...])``)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # argparse: --help (0) or bad usage (2)
        return int(stop.code) if isinstance(stop.code, int) else EXIT_USAGE
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING)
    try:
        return int(args.func(args))
    except (DeconvnetError, FileNotFoundError, IsADirectoryError, PermissionError) as error:
        if args.debug:
            raise
        print(f"deconvnet: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("deconvnet: interrupted", file=sys.stderr)
        return 130


def _one_line(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    if isinstance(error, OSError) and error.filename and str(error.filename) not in text:
        text = f"{text}: {error.filename}"
    return " ".join(text.split())
