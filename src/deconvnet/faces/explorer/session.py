"""The explorer's work, without HTTP: images, their cached forward results, unit projections.

One :class:`Explorer` holds the model (fixed at start-up) and an LRU cache per image of the
preprocessed input and each layer's feature maps, so choosing a layer or clicking a map
after the first view of an image runs no new forward pass for the grid; a click runs the
engine's :meth:`~deconvnet.engine.engine.Deconvnet.project` for one single unit (its
windowed reverse pass on chain networks). The engine hooks the model during each call, so
calls are serialised by one lock: concurrent requests never see each other's hooks.
"""

from __future__ import annotations

import hashlib
import math
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deconvnet.engine.engine import Deconvnet
from deconvnet.engine.precision import FACES_PRECISION
from deconvnet.engine.receptive import LayerRow, ReceptiveField, layer_table, receptive_fields
from deconvnet.engine.rules import COMPARED_RULES
from deconvnet.engine.selection import Neuron
from deconvnet.errors import ImageError, InputError
from deconvnet.figures.files import png_bytes
from deconvnet.figures.render import feature_grid, scaled, show
from deconvnet.inputs.images import is_image_file
from deconvnet.inputs.prepared import prepare
from deconvnet.inputs.preprocessing import Preprocessing
from deconvnet.models.card import default_layer

RULES = COMPARED_RULES
"""The reverse rules the explorer offers (its toggle): the rule table's, side by side."""
CONTRASTS = ("layer", "map")
"""Grid contrast: one grey scale for the layer (strengths compare) or each map its own."""
VIEWS = ("whole", "field")
"""Projection PNG: the whole input, or the unit's receptive field enlarged."""
FIELD_SIDE = 256
"""Longer side in pixels of the enlarged receptive-field view."""
CACHED_IMAGES = 16
CACHED_PROJECTIONS = 256
IMAGE_ID_CHARS = 16
_MAP_RANK = 4


class NotFound(InputError):
    """An image, layer, map or position that does not exist (HTTP 404)."""


@dataclass(frozen=True)
class Layer:
    """A layer the explorer shows: 4-D output at the model's input size."""

    name: str
    label: str
    channels: int
    height: int
    width: int
    field: str


@dataclass
class _Image:
    name: str
    tensor: torch.Tensor
    rgb: np.ndarray
    maps: dict[str, torch.Tensor] = field(default_factory=dict)
    grids: dict[tuple[str, str], bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class UnitProjection:
    """One clicked unit: where it is, its value, its receptive field and the PNG."""

    layer: str
    channel: int
    position: tuple[int, int]
    value: float
    box: tuple[int, int, int, int]
    rule: str
    png: bytes
    field_png: bytes
    precision: str = "float32"


class Explorer:
    """A model and its image cache; every method raises :class:`InputError` on bad input."""

    def __init__(
        self,
        model: nn.Module,
        preprocessing: Preprocessing,
        *,
        name: str,
        aliases: Mapping[str, str] | None = None,
        images_dir: Path | None = None,
        precision: str = FACES_PRECISION,
    ) -> None:
        self.model = model
        self.precision = precision
        self.preprocessing = preprocessing
        self.name = name
        self.images_dir = images_dir
        self._lock = threading.Lock()
        self._images: OrderedDict[str, _Image] = OrderedDict()
        self._projections: OrderedDict[tuple[Any, ...], UnitProjection] = OrderedDict()
        self._fields: dict[tuple[int, ...], dict[str, ReceptiveField]] = {}
        param = next(model.parameters(), None)
        self.device = param.device if param is not None else torch.device("cpu")
        names = {target: alias for alias, target in (aliases or {}).items()}
        rows = layer_table(model, (1, 3, *preprocessing.input_size), device=self.device)
        modules = dict(model.named_modules())
        self.layers = {
            row.name: _layer(row, names.get(row.name, row.name))
            for row in rows
            if row.output_shape is not None
            and len(row.output_shape) == _MAP_RANK
            and row.rf is not None
            and not row.rf.is_global
            and not list(modules[row.name].children())  # containers repeat their last layer
        }
        if not self.layers:
            raise InputError("the model has no layer with feature maps (B, C, H, W)")

    @property
    def default_layer(self) -> str:
        """The model's default layer (its last convolution) among those shown, else the last
        layer with maps."""
        return default_layer(self.model, among=self.layers) or list(self.layers)[-1]

    def library(self) -> list[str]:
        """Image files of ``images_dir`` (names only, sorted)."""
        if self.images_dir is None:
            return []
        files = (p for p in self.images_dir.iterdir() if p.is_file())
        return sorted(p.name for p in files if is_image_file(p))

    def add_bytes(self, data: bytes, name: str) -> str:
        """Decode an uploaded file (with Pillow's decompression-bomb guard); its id."""
        image_id = hashlib.sha256(data).hexdigest()[:IMAGE_ID_CHARS]
        with self._lock:
            if image_id in self._images:
                self._images.move_to_end(image_id)
                return image_id
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "upload"
            path.write_bytes(data)
            try:
                return self._add(path, image_id, name)
            except ImageError as error:  # name the user's file, not the temporary one
                raise ImageError(str(error).replace(str(path), repr(name))) from error

    def add_file(self, path: Path) -> str:
        """Open an image of the library (the caller checked that it lies inside it)."""
        return self.add_bytes(path.read_bytes(), path.name)

    def _add(self, path: Path, image_id: str, name: str) -> str:
        prepared = prepare(path, self.preprocessing, self.device)
        with self._lock:
            self._images[image_id] = _Image(name=name, tensor=prepared.tensor, rgb=prepared.rgb)
            while len(self._images) > CACHED_IMAGES:
                self._images.popitem(last=False)
        return image_id

    def image(self, image_id: str) -> dict[str, Any]:
        found = self._image(image_id)
        height, width = found.rgb.shape[:2]
        return {"id": image_id, "name": found.name, "height": height, "width": width}

    def input_png(self, image_id: str) -> bytes:
        return png_bytes(self._image(image_id).rgb)

    def layer(self, layer: str) -> Layer:
        if layer not in self.layers:
            raise NotFound(f"no layer {layer!r}; the explorer shows {len(self.layers)} layers")
        return self.layers[layer]

    def grid(
        self, image_id: str, layer: str, contrast: str = "layer"
    ) -> tuple[dict[str, Any], bytes]:
        """The layer's maps for the image as one grid PNG, and its geometry for clicks."""
        if contrast not in CONTRASTS:
            raise InputError(f"contrast must be one of {', '.join(CONTRASTS)}, got {contrast!r}")
        self.layer(layer)
        found = self._image(image_id)
        with self._lock:
            if layer not in found.maps:
                with Deconvnet(self.model) as net:
                    found.maps[layer] = net.layer_output(found.tensor, layer)[0].cpu()
            maps = found.maps[layer]
            if (layer, contrast) not in found.grids:
                picture = feature_grid(
                    maps, padding=1, normalise="grid" if contrast == "layer" else "map"
                )
                found.grids[(layer, contrast)] = png_bytes(picture)
            png = found.grids[(layer, contrast)]
        channels, height, width = maps.shape
        maxima = maps.flatten(1).max(dim=1).values
        return {
            "layer": layer,
            "channels": channels,
            "height": height,
            "width": width,
            "columns": math.ceil(math.sqrt(channels)),
            "padding": 1,
            "maxima": [round(float(v), 4) for v in maxima],
        }, png

    def project(
        self, image_id: str, layer: str, channel: int, rule: str, position: tuple[int, int] | None
    ) -> UnitProjection:
        """Project one unit: ``position`` ``(y, x)`` in the map, default the map's maximum."""
        if rule not in RULES:
            raise InputError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
        info = self.layer(layer)
        found = self._image(image_id)
        grid, _ = self.grid(image_id, layer)
        if not 0 <= channel < grid["channels"]:
            raise NotFound(f"layer {info.label} has maps 0..{grid['channels'] - 1}, not {channel}")
        maps = found.maps[layer]
        if position is None:
            flat = int(maps[channel].flatten().argmax())
            position = (flat // maps.shape[2], flat % maps.shape[2])
        y, x = position
        if not (0 <= y < maps.shape[1] and 0 <= x < maps.shape[2]):
            size = f"{maps.shape[1]}x{maps.shape[2]}"
            raise NotFound(f"position ({y}, {x}) is outside the {size} map")
        key = (image_id, layer, channel, y, x, rule)
        with self._lock:
            if key in self._projections:
                self._projections.move_to_end(key)
                return self._projections[key]
            with Deconvnet(self.model, rule, precision=self.precision) as net:
                result = net.project(found.tensor, layer, Neuron(channel, y, x))
            shape = tuple(found.tensor.shape)
            if shape not in self._fields:
                self._fields[shape] = receptive_fields(self.model, shape, self.device)
        image_hw = (int(shape[2]), int(shape[3]))
        box = self._fields[shape][layer].box(y, x, image_hw)
        picture = show(
            result.images[0, 0].cpu(), "rgb", channel_order=self.preprocessing.channel_order
        )
        top, left, bottom, right = box
        enlarged = scaled(np.ascontiguousarray(picture[top:bottom, left:right]), FIELD_SIDE)
        unit = UnitProjection(
            layer,
            channel,
            (y, x),
            float(result.values[0, 0]),
            box,
            rule,
            png_bytes(picture),
            png_bytes(enlarged),
            result.precision_at(0, 0),
        )
        with self._lock:
            self._projections[key] = unit
            while len(self._projections) > CACHED_PROJECTIONS:
                self._projections.popitem(last=False)
        return unit

    def _image(self, image_id: str) -> _Image:
        with self._lock:
            if image_id not in self._images:
                raise NotFound(f"no image {image_id!r} (upload it or choose one again)")
            self._images.move_to_end(image_id)
            return self._images[image_id]


def _layer(row: LayerRow, label: str) -> Layer:
    assert row.output_shape is not None and row.rf is not None  # filtered by the caller
    _, channels, height, width = row.output_shape
    return Layer(
        name=row.name,
        label=label,
        channels=channels,
        height=height,
        width=width,
        field=f"{row.rf.size[0]}x{row.rf.size[1]}, stride {row.rf.stride[0]}",
    )
