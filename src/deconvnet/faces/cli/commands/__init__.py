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
    mean_file,
    models,
    occlude,
    project,
    sanity,
    serve,
    site,
    topk,
    train_default,
    units,
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
    train_default,
    invariance,
    correspondence,
    site,
    units,
    serve,
    mean_file,
    models,
]
