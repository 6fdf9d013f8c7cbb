"""deconvnet: see what the layers of a CNN respond to (Zeiler & Fergus, arXiv 1311.2901)."""

from deconvnet.errors import (
    DeconvnetError,
    InputError,
    LayerNotFoundError,
    SelectionError,
    UnsupportedLayerError,
)
from deconvnet.preprocessing import Preprocessing

__all__ = [
    "DeconvnetError",
    "InputError",
    "LayerNotFoundError",
    "Preprocessing",
    "SelectionError",
    "UnsupportedLayerError",
]
