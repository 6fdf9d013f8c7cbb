"""deconvnet: see what the layers of a CNN respond to (Zeiler & Fergus, arXiv 1311.2901).

>>> import deconvnet as dn
>>> with dn.Deconvnet(model, rule="zeiler") as net:             # doctest: +SKIP
...     res = net.project(x, layer="features.10", select=dn.TopMaps(9))

This module is the public facade. The package's rooms follow the data:
``inputs`` (pixels in) -> ``models`` and ``caffe`` (networks) -> ``engine`` (the reverse
pass) -> ``instruments`` (the paper's experiments, returning dataclasses) -> ``figures``
(every picture) -> ``faces`` (the command line); each imports only the rooms before it.
The facade may import them all, and it is where figures and engine meet: it gives the
engine's :class:`Projection` its Jupyter picture, so the engine never imports figures.
``from deconvnet import caffe, models, topk`` imports those on demand (``topk`` is the
facade's Fig. 2 namespace); ``images`` and ``datasets`` are bound here from ``inputs``.
"""

from deconvnet.engine.engine import Deconvnet
from deconvnet.engine.layers import resolve_layer
from deconvnet.engine.projection import Projection, register_views
from deconvnet.engine.selection import (
    MapMax,
    Mask,
    Neuron,
    Selection,
    Threshold,
    TopMaps,
    TopUnits,
    Unit,
    WholeMap,
)
from deconvnet.errors import (
    CaffeFormatError,
    DeconvnetError,
    ImageError,
    InputError,
    LayerNotFoundError,
    ModelNotFoundError,
    SelectionError,
    TrainingModeError,
    UnsupportedLayerError,
    WeightsError,
)
from deconvnet.figures.projection import ProjectionViews
from deconvnet.inputs import datasets, images
from deconvnet.inputs.preprocessing import Preprocessing

register_views(ProjectionViews())

__all__ = [
    "CaffeFormatError",
    "Deconvnet",
    "DeconvnetError",
    "ImageError",
    "InputError",
    "LayerNotFoundError",
    "MapMax",
    "Mask",
    "ModelNotFoundError",
    "Neuron",
    "Preprocessing",
    "Projection",
    "Selection",
    "SelectionError",
    "Threshold",
    "TopMaps",
    "TopUnits",
    "TrainingModeError",
    "Unit",
    "UnsupportedLayerError",
    "WeightsError",
    "WholeMap",
    "datasets",
    "images",
    "resolve_layer",
]
