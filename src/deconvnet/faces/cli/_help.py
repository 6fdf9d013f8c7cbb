"""How every ``--help`` of the command line is laid out."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Each option's default at the end of its help; descriptions and examples as written.

    An option whose default is ``None`` says in its own help what ``None`` stands for
    ("default: the model's last conv"), so "(default: None)" is never printed.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)
