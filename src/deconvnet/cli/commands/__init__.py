"""Sub-commands of ``deconvnet``, in the order ``--help`` lists them."""

from types import ModuleType

ALL: list[ModuleType] = []
