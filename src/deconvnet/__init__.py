"""deconvnet: see what the layers of a CNN respond to (Zeiler & Fergus, arXiv 1311.2901).

>>> import deconvnet as dn
>>> with dn.Deconvnet(model, rule="zeiler") as net:             # doctest: +SKIP
...     res = net.project(x, layer="features.10", select=dn.TopMaps(9))
"""

from deconvnet.engine import Deconvnet, Projection, resolve_layer
from deconvnet.errors import (
    CaffeFormatError,
    DeconvnetError,
    ImageError,
    InputError,
    LayerNotFoundError,
    ModelNotFoundError,
    SelectionError,
    UnsupportedLayerError,
    WeightsError,
)
from deconvnet.preprocessing import Preprocessing
from deconvnet.selection import (
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
    "Unit",
    "UnsupportedLayerError",
    "WeightsError",
    "WholeMap",
    "resolve_layer",
]
