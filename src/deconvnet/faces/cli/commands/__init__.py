"""Sub-commands of ``deconvnet``, in the order ``--help`` lists them."""

from types import ModuleType

from deconvnet.faces.cli.commands import (
    compare,
    correspondence,
    dream,
    evolve,
    faithfulness,
    invariance,
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
    occlude,
    compare,
    sanity,
    faithfulness,
    dream,
    evolve,
    invariance,
    correspondence,
    site,
    serve,
    models,
]
