"""The paper's Fig. 2 in one namespace: scan a dataset, project each top-k unit, draw sheets.

Three steps, each usable on its own::

    from deconvnet import datasets, topk
    data = datasets.open_dataset("photos/", model.preprocessing)
    index = topk.scan(model, data, layers=["features.4"], k=9, maps="random:16")
    projections = topk.project(index, model, data)
    topk.render(index, projections, "out/")

:func:`scan` and :func:`project` are the instrument (:mod:`deconvnet.instruments.topk`);
:func:`render` is its figure (:mod:`deconvnet.figures.topk`).
"""

from deconvnet.engine.selection import Units
from deconvnet.figures.topk import RenderResult, render
from deconvnet.instruments.topk.project import ProjectedEntry, Projections, project
from deconvnet.instruments.topk.scan import MapChoice, TopKIndex, scan
from deconvnet.instruments.topk.state import EMPTY_ID, Entry, LayerTopK, MapStats, TopKState

__all__ = [
    "EMPTY_ID",
    "Entry",
    "LayerTopK",
    "MapChoice",
    "MapStats",
    "ProjectedEntry",
    "Projections",
    "RenderResult",
    "TopKIndex",
    "TopKState",
    "Units",
    "project",
    "render",
    "scan",
]
