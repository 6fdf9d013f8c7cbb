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
from deconvnet.engine.projection import Projection
from deconvnet.engine.receptive import LayerRow, ReceptiveField, layer_table, receptive_fields
from deconvnet.engine.rules import COMPARED_RULES, ReversePolicy
from deconvnet.engine.selection import Neuron
from deconvnet.errors import InputError
from deconvnet.figures.files import png_bytes
from deconvnet.figures.render import feature_grid, scaled, show
from deconvnet.inputs import images
from deconvnet.inputs.budget import decode_within
from deconvnet.inputs.images import is_image_file, read_image_file
from deconvnet.inputs.preprocessing import Preprocessing
from deconvnet.instruments.circuits import UnitCircuit, image_circuit
from deconvnet.instruments.signal import explain_blanks
from deconvnet.models import naming
from deconvnet.models.card import default_layer, model_device

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
ERROR_NAME = "upload"
"""How errors name an image (never by a name a request sent)."""
DEFAULT_DECODE_BUDGET = 256 << 20
"""Bytes one image's decode may cost (about 22 megapixels; larger JPEGs decode downscaled)."""
_MAP_RANK = 4


class NotFound(InputError):
    """An image, layer, map or position that does not exist (HTTP 404)."""


@dataclass(frozen=True)
class Layer:
    """A layer the explorer shows: 4-D output at the model's input size.

    ``name`` is how it is shown and addressed (its alias, else its dotted name: see
    :func:`deconvnet.models.naming.display_name`), ``module`` the dotted module name,
    ``group`` the block it belongs to (``fire2``) or ``None``; ``classes`` is true when its
    maps are the model's classes (SqueezeNet's ``conv10``)."""

    name: str
    module: str
    group: str | None
    channels: int
    height: int
    width: int
    field: str
    classes: bool = False


@dataclass
class _Image:
    name: str
    tensor: torch.Tensor
    rgb: np.ndarray
    maps: dict[str, torch.Tensor] = field(default_factory=dict)
    grids: dict[tuple[str, str], bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class UnitProjection:
    """One clicked unit: where it is, its value, its receptive field and the PNG;
    ``class_name`` for a class map, ``note`` when there is nothing to see (an inactive unit,
    a projection that is all zeros)."""

    layer: str
    channel: int
    position: tuple[int, int]
    value: float
    box: tuple[int, int, int, int]
    rule: str
    png: bytes
    field_png: bytes
    precision: str = "float32"
    class_name: str | None = None
    note: str | None = None


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
        decode_budget: int = DEFAULT_DECODE_BUDGET,
        activations: str | None = None,
        precision: str = FACES_PRECISION,
    ) -> None:
        self.model = model
        self.decode_budget = decode_budget
        self.activations = ReversePolicy.of(activations=activations).activations
        self.precision = precision
        self.preprocessing = preprocessing
        self.name = name
        self.images_dir = images_dir
        self._lock = threading.Lock()
        self._images: OrderedDict[str, _Image] = OrderedDict()
        self._projections: OrderedDict[tuple[Any, ...], UnitProjection] = OrderedDict()
        self._fields: dict[tuple[int, ...], dict[str, ReceptiveField]] = {}
        self.device = model_device(model)
        self.aliases = dict(aliases if aliases is not None else naming.aliases_of(model))
        self.categories = naming.categories_of(model)
        rows = layer_table(model, (1, 3, *preprocessing.input_size), device=self.device)
        modules = dict(model.named_modules())
        aliased = set(self.aliases.values())
        self.layers = {
            layer.name: layer
            for layer in (
                self._layer(row)
                for row in rows
                if row.output_shape is not None
                and len(row.output_shape) == _MAP_RANK
                and row.rf is not None
                and not row.rf.is_global
                # a container repeats its last layer, unless it is a named block (fire2)
                and (not list(modules[row.name].children()) or row.name in aliased)
            )
        }
        if not self.layers:
            raise InputError("the model has no layer with feature maps (B, C, H, W)")
        self._modules = {layer.module: layer for layer in self.layers.values()}

    @property
    def default_layer(self) -> str:
        """The model's default layer (the last convolution, after its rectifier), else
        the last layer with maps."""
        name = default_layer(self.model, among=self._modules)
        return self._modules[name].name if name is not None else list(self.layers)[-1]

    def _layer(self, row: LayerRow) -> Layer:
        assert row.output_shape is not None and row.rf is not None  # filtered by the caller
        _, channels, height, width = row.output_shape
        return Layer(
            name=naming.display_name(self.aliases, row.name),
            module=row.name,
            group=naming.block_of(self.model, row.name),
            channels=channels,
            height=height,
            width=width,
            field=f"{row.rf.size[0]}x{row.rf.size[1]}, stride {row.rf.stride[0]}",
            classes=naming.class_layer(self.model, row.name, channels),
        )

    def library(self) -> list[str]:
        """Image files of ``images_dir`` (names only, sorted)."""
        if self.images_dir is None:
            return []
        files = (p for p in self.images_dir.iterdir() if p.is_file())
        return sorted(p.name for p in files if is_image_file(p))

    def add_bytes(self, data: bytes, name: str) -> str:
        """Decode an uploaded file (Pillow's decompression-bomb guard, and at most
        ``decode_budget`` bytes of decoding: :func:`~deconvnet.inputs.budget.decode_within`);
        its id."""
        image_id = hashlib.sha256(data).hexdigest()[:IMAGE_ID_CHARS]
        with self._lock:
            if image_id in self._images:
                self._images.move_to_end(image_id)
                return image_id
        rgb = decode_within(data, ERROR_NAME, budget=self.decode_budget)
        rgb, _ = images.fit_native_size(rgb, self.preprocessing)
        tensor = images.preprocess(rgb, self.preprocessing, device=self.device)
        shown = images.resized_rgb(rgb, self.preprocessing)
        del rgb  # the decoded photo: only the network's input is kept
        with self._lock:
            self._images[image_id] = _Image(name=name, tensor=tensor, rgb=shown)
            while len(self._images) > CACHED_IMAGES:
                self._images.popitem(last=False)
        return image_id

    def add_file(self, path: Path) -> str:
        """Open an image of the library (the caller checked that it lies inside it)."""
        return self.add_bytes(read_image_file(path), path.name)

    def image(self, image_id: str) -> dict[str, Any]:
        found = self._image(image_id)
        height, width = found.rgb.shape[:2]
        return {"id": image_id, "name": found.name, "height": height, "width": width}

    def input_png(self, image_id: str) -> bytes:
        return png_bytes(self._image(image_id).rgb)

    def layer(self, layer: str) -> Layer:
        """The layer named ``layer``: its shown name, its dotted name or any alias."""
        found = self.layers.get(layer) or self._modules.get(self.aliases.get(layer, layer))
        if found is None:
            # suggestions come from the explorer's own names: nothing of the request is echoed
            suggestion = naming.did_you_mean(layer, list(self.layers))
            raise NotFound(f"no such layer{suggestion} ({len(self.layers)} explorer layers)")
        return found

    def class_names(self, layer: Layer) -> list[str] | None:
        """Short class names of the maps of a class layer, else ``None``."""
        if not layer.classes or self.categories is None:
            return None
        return [naming.short_class_name(name) for name in self.categories]

    def grid(
        self, image_id: str, layer: str, contrast: str = "layer"
    ) -> tuple[dict[str, Any], bytes]:
        """The layer's maps for the image as one grid PNG, and its geometry for clicks."""
        if contrast not in CONTRASTS:
            raise InputError(f"contrast must be one of {', '.join(CONTRASTS)}")
        info = self.layer(layer)
        module = info.module
        found = self._image(image_id)
        with self._lock:
            if module not in found.maps:
                with Deconvnet(self.model) as net:
                    found.maps[module] = net.layer_output(found.tensor, module)[0].cpu()
            maps = found.maps[module]
            if (module, contrast) not in found.grids:
                picture = feature_grid(
                    maps, padding=1, normalise="grid" if contrast == "layer" else "map"
                )
                found.grids[(module, contrast)] = png_bytes(picture)
            png = found.grids[(module, contrast)]
        channels, height, width = maps.shape
        maxima = maps.flatten(1).max(dim=1).values
        return {
            "layer": info.name,
            "channels": channels,
            "height": height,
            "width": width,
            "columns": math.ceil(math.sqrt(channels)),
            "padding": 1,
            "maxima": [round(float(v), 4) for v in maxima],
            "classes": self.class_names(info),
        }, png

    def project(
        self, image_id: str, layer: str, channel: int, rule: str, position: tuple[int, int] | None
    ) -> UnitProjection:
        """Project one unit: ``position`` ``(y, x)`` in the map, default the map's maximum."""
        if rule not in RULES:
            raise InputError(f"rule must be one of {', '.join(RULES)}")
        info = self.layer(layer)
        layer = info.module
        found = self._image(image_id)
        grid, _ = self.grid(image_id, layer)
        if not 0 <= channel < grid["channels"]:
            raise NotFound(f"layer {info.name} has maps 0..{grid['channels'] - 1}, not {channel}")
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
            with Deconvnet(
                self.model, rule, activations=self.activations, precision=self.precision
            ) as net:
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
        value = float(result.values[0, 0])
        classes = self.class_names(info)
        unit = UnitProjection(
            info.name,
            channel,
            (y, x),
            value,
            box,
            rule,
            png_bytes(picture),
            png_bytes(enlarged),
            result.precision_at(0, 0),
            class_name=classes[channel] if classes else None,
            note=self._note(value, result),
        )
        with self._lock:
            self._projections[key] = unit
            while len(self._projections) > CACHED_PROJECTIONS:
                self._projections.popitem(last=False)
        return unit

    def circuit(
        self,
        image_id: str,
        layer: str,
        channel: int,
        rule: str,
        position: tuple[int, int],
        upstream: str,
    ) -> UnitCircuit:
        """The maps of ``upstream`` feeding one unit on this image, as a unit page lists
        them over the scan's top-k (:func:`~deconvnet.instruments.circuits.image_circuit`)."""
        found = self._image(image_id)
        with self._lock:
            return image_circuit(
                self.model,
                found.tensor,
                self.layer(layer).module,
                upstream,
                channel,
                position,
                rule=rule,
            )

    def _note(self, value: float, result: Projection) -> str | None:
        """What to say when a click shows nothing: a unit at zero did not fire (there is
        nothing to project), and a blank projection says where its signal died."""
        if value == 0:
            return "inactive: this unit did not fire (its value is 0): nothing to project"
        blanks = explain_blanks(self.model, result)
        return f"blank: {blanks.reason(rule_option='')}" if blanks is not None else None

    def _image(self, image_id: str) -> _Image:
        with self._lock:
            if image_id not in self._images:
                raise NotFound("no such image (upload it or choose one again)")
            self._images.move_to_end(image_id)
            return self._images[image_id]
