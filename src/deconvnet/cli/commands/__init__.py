"""Sub-commands of ``deconvnet``, in the order ``--help`` lists them."""

from types import ModuleType

from deconvnet.cli.commands import layers, maps, project

ALL: list[ModuleType] = [project, layers, maps]
