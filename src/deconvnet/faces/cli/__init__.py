"""The ``deconvnet`` command: ``main(argv) -> exit code``.

Exit codes: 0 success, 1 bad input (one line on stderr, no traceback unless ``--debug``),
2 bad usage (argparse). Each sub-command lives in its own module with
``register(subparsers)``, which sets ``func(args) -> int`` on its parser.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from deconvnet.errors import DeconvnetError

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_USAGE = 2

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
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in commands.ALL:
        module.register(sub)
    return parser


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
