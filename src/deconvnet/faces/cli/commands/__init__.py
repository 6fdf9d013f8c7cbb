"""Sub-commands of ``deconvnet``, in the order ``--help`` lists them."""

from types import ModuleType

from deconvnet.faces.cli.commands import (
    compare,
    correspondence,
    evolve,
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
)

ALL: list[ModuleType] = [
    project,
    layers,
    maps,
    topk,
    occlude,
    compare,
    sanity,
    evolve,
    train_default,
    invariance,
    correspondence,
    site,
    serve,
    mean_file,
    models,
]
