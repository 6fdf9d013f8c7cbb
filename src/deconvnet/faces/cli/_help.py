"""How every ``--help`` of the command line is laid out, and each sub-command's parser."""

from __future__ import annotations

import argparse
from collections.abc import Callable


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Each option's default at the end of its help; descriptions and examples as written.

    An option whose default is ``None`` says in its own help what ``None`` stands for
    ("default: the model's last conv"), so "(default: None)" is never printed.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def command_parser(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    name: str,
    summary: str,
    description: str,
    run: Callable[[argparse.Namespace], int],
    epilog: str | None = None,
) -> argparse.ArgumentParser:
    """The parser of sub-command ``name`` (``summary`` in the command list, ``description``
    and ``epilog`` in its own help), which runs ``run(args)``."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=summary, description=description, epilog=epilog, formatter_class=HelpFormatter
    )
    parser.set_defaults(func=run)
    return parser
