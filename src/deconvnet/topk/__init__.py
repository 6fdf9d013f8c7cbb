"""The paper's Fig. 2: the top-k activations of each feature map over a dataset, projected.

Three steps, each usable on its own::

    from deconvnet import datasets, topk
    data = datasets.open_dataset("photos/", model.preprocessing)
    index = topk.scan(model, data, layers=["features.4"], k=9, maps="random:16")
    projections = topk.project(index, model, data)
    topk.render(index, projections, "out/")

:func:`scan` makes one pass over the data in O(k x maps x layers) memory; each image
counts at most once per map, with its own strongest activation of that map (as in the
paper). States of disjoint shards merge with :meth:`TopKState.merge`. :func:`project`
projects each ranked activation separately with the engine, reading every image once.
:func:`render` writes one sheet per layer and a JSON index.
"""

from deconvnet.topk.project import ProjectedEntry, Units, project
from deconvnet.topk.render import RenderResult, render
from deconvnet.topk.scan import MapChoice, TopKIndex, scan
from deconvnet.topk.state import EMPTY_ID, Entry, LayerTopK, TopKState

__all__ = [
    "EMPTY_ID",
    "Entry",
    "LayerTopK",
    "MapChoice",
    "ProjectedEntry",
    "RenderResult",
    "TopKIndex",
    "TopKState",
    "Units",
    "project",
    "render",
    "scan",
]
