"""Sub-commands of ``deconvnet``, in the order ``--help`` lists them."""

from types import ModuleType

from deconvnet.cli.commands import layers, maps, project, topk

ALL: list[ModuleType] = [project, layers, maps, topk]
