"""The ``deconvnet`` command: ``main(argv) -> exit code``.

Exit codes: 0 success, 1 bad input (one line on stderr, no traceback unless ``--debug``),
2 bad usage (argparse), 130 interrupted, 141 stdout closed early (``deconvnet models | head``:
no message, the shell's code for a reader that stopped, 128 + SIGPIPE). :func:`main` is the
one error boundary: our own errors, every ``OSError`` (the path and the reason) and running
out of memory become one line on stderr and exit 1, and so does a ``SystemExit`` that a
model's own code raises (a factory calling ``sys.exit(0)`` is not a success). What a
command prints passes through :func:`~._terminal.terminal_safe`: names from files cannot
send escape sequences to the terminal. Each sub-command lives in its own module with
``register(subparsers)``, which sets ``func(args) -> int`` on its parser. ``--debug`` is
accepted before and after the sub-command; ``--version`` prints the installed version.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import sys
from collections.abc import Sequence

import torch

from deconvnet.errors import DeconvnetError, one_line
from deconvnet.faces.cli._help import HelpFormatter
from deconvnet.faces.cli._terminal import terminal_safe

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141
"""128 + SIGPIPE: what a shell reports for a writer whose reader went away."""
DISTRIBUTION = "deconvnet"
UNKNOWN_VERSION = "0+unknown"
"""Shown by ``--version`` from a source tree that was never installed (no package metadata)."""
DEBUG_HELP = "show tracebacks on errors"
MEMORY_DETAIL_CHARS = 200
"""How much of an out-of-memory error's own text (CUDA's is long) the one line quotes."""
MAX_EXIT_CODE_CHARS = 80
"""How much of a foreign ``sys.exit(value)``'s value the error line shows."""

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
    with terminal_safe():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """The sub-command inside the error boundary (see the module)."""
    try:
        return int(args.func(args))
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except (DeconvnetError, OSError, MemoryError, torch.OutOfMemoryError) as error:
        if args.debug:
            raise
        print(f"deconvnet: error: {_message(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SystemExit as stop:  # our commands return codes; only foreign code exits
        if args.debug:
            raise
        code = " ".join(repr(stop.code).split())[:MAX_EXIT_CODE_CHARS]
        print(f"deconvnet: error: the model's own code called exit({code})", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("deconvnet: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _message(error: BaseException) -> str:
    """The error as one line; an OS error as ``path: reason`` (both paths for a rename)."""
    if isinstance(error, OSError) and error.strerror:
        paths = [str(os.fsdecode(name)) for name in (error.filename, error.filename2) if name]
        text = f"{' -> '.join(paths)}: {error.strerror}" if paths else error.strerror
    elif isinstance(error, MemoryError | torch.OutOfMemoryError):
        detail = one_line(str(error), MEMORY_DETAIL_CHARS)
        text = "out of memory" + (f" ({detail})" if detail else "")
    else:
        return one_line(error)
    return one_line(text)


def _silence_stdout() -> None:
    """Point stdout at the null device, so the interpreter's last flush cannot fail again.

    The recipe of Python's ``signal`` documentation for SIGPIPE; a stdout without a file
    descriptor (a test's capture) is left alone."""
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, descriptor)
    os.close(null)
