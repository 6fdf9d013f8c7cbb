"""Sub-commands of ``deconvnet``, in the order ``--help`` lists them."""

from types import ModuleType

from deconvnet.faces.cli.commands import (
    compare,
    layers,
    maps,
    models,
    occlude,
    project,
    sanity,
    serve,
    site,
    topk,
)

ALL: list[ModuleType] = [
    project,
    layers,
    maps,
    topk,
    site,
    serve,
    occlude,
    compare,
    sanity,
    models,
]
