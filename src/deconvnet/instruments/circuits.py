"""Circuits: which maps of the layer below feed a unit, and which maps above it feeds.

The **contribution** of upstream map ``j`` to a unit is the sum, over the unit's receptive
field in map ``j``, of map ``j``'s activation times the reverse signal of the unit that
reaches it (by the chosen rule): :meth:`~deconvnet.engine.engine.Deconvnet.contributions`,
the engine's windowed reverse pass stopped at the upstream layer, batched over every seed.
For the gradient rule on a chain with no bias the contributions sum to the unit's
activation; the **rest** (activation minus their sum) holds the biases and whatever does
not pass through the upstream layer. The gradient rule is the default: the deconvnet's
``relu`` of the signal ignores the forward pass, so below a ReLU it also credits the
negative activations the ReLU switched off, and its contributions do not add up to the
activation (on the default model, conv4's units from conv3 under ``zeiler``: a rest about
six times the activation). A map's contributions are averaged over its top-k
images of a scan (each at the position the scan ranked), for every tracked map of a layer
at once (:func:`layer_circuits`). Its **upstream** links are the maps with the largest
mean contributions; its **downstream** links are the maps of the layer above whose input
it makes the largest share of, measured from their side
(:meth:`LayerCircuits.downstream_of`).
A **share** is a contribution divided by the sum of the absolute contributions into that
unit (signed; the absolute shares of a unit sum to 1).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from deconvnet.engine.engine import DEFAULT_BATCH_SIZE, Deconvnet
from deconvnet.engine.layers import resolve_layer
from deconvnet.engine.rules import GRADIENT_RULE
from deconvnet.engine.selection import MapMax, Neuron, Units
from deconvnet.errors import InputError, SelectionError
from deconvnet.inputs.datasets import ImageDataset
from deconvnet.inputs.images import preprocess
from deconvnet.instruments.topk.scan import TopKIndex, verified_image
from deconvnet.instruments.topk.state import Entry
from deconvnet.instruments.work import DEFAULT_MAX_WORK, check_work
from deconvnet.models import naming
from deconvnet.models.card import model_device

Progress = Callable[[int, int | None], None]
TOP = 5
"""Links listed per unit, upstream and downstream."""
IMAGES_PER_CALL = 8
"""Images whose ranked units share one engine call (each image's units are padded to the
group's most, so larger groups waste more reverse passes)."""


@dataclass(frozen=True)
class Link:
    """One map linked to a unit: its ``contribution`` and its ``share`` of the unit's input."""

    map: int
    contribution: float
    share: float


@dataclass(frozen=True)
class UnitCircuit:
    """What feeds a map and what it feeds (:meth:`to_dict` for a unit's JSON).

    Attributes
    ----------
    upstream : the maps of ``upstream_layer`` contributing most, strongest first.
    downstream : the maps of ``downstream_layer`` this map contributes most to.
    activation : the unit's mean activation over the images measured; ``rest`` the mean
        part that the upstream maps leave out; ``images`` how many images (None, None, 0
        without the layer below).
    """

    layer: str
    channel: int
    rule: str
    upstream_layer: str | None
    upstream: tuple[Link, ...]
    downstream_layer: str | None
    downstream: tuple[Link, ...]
    activation: float | None
    rest: float | None
    images: int

    def to_dict(self) -> dict[str, object]:
        """JSON-ready fields."""

        def links(found: tuple[Link, ...]) -> list[dict[str, float | int]]:
            return [
                {"map": link.map, "contribution": link.contribution, "share": link.share}
                for link in found
            ]

        return {
            "layer": self.layer,
            "map": self.channel,
            "rule": self.rule,
            "upstream_layer": self.upstream_layer,
            "upstream": links(self.upstream),
            "downstream_layer": self.downstream_layer,
            "downstream": links(self.downstream),
            "activation": self.activation,
            "rest": self.rest,
            "images": self.images,
        }


@dataclass(frozen=True, eq=False)
class LayerCircuits:
    """Mean contributions of every map of ``upstream`` to every measured map of ``layer``.

    Attributes
    ----------
    layer, upstream : the two layers as shown (alias, else dotted name).
    channels : LongTensor (M,) — the maps of ``layer`` measured (a scan's tracked maps).
    matrix : Tensor (M, C_up) float64 — mean contribution over each map's images.
    activations : Tensor (M,) float64 — mean activation of each map's units.
    images : LongTensor (M,) — the images averaged per map.
    """

    layer: str
    upstream: str
    rule: str
    channels: Tensor
    matrix: Tensor
    activations: Tensor
    images: Tensor

    def _row(self, channel: int) -> int:
        found = (self.channels == channel).nonzero()
        if found.numel() == 0:
            raise SelectionError(f"map {channel} of {self.layer} was not measured")
        return int(found[0, 0])

    @property
    def shares(self) -> Tensor:
        """(M, C_up): each contribution over the sum of the absolute ones into its unit."""
        total = self.matrix.abs().sum(dim=1, keepdim=True)
        return torch.where(total > 0, self.matrix / total.clamp(min=1e-300), 0.0)

    def upstream_of(self, channel: int, top: int = TOP) -> tuple[Link, ...]:
        """The ``top`` maps of :attr:`upstream` contributing most to map ``channel``."""
        row = self._row(channel)
        values, shares = self.matrix[row], self.shares[row]
        order = torch.argsort(values, descending=True, stable=True)[:top]
        return tuple(
            Link(int(j), float(values[j]), float(shares[j])) for j in order if values[j] > 0
        )

    def downstream_of(self, upstream_channel: int, top: int = TOP) -> tuple[Link, ...]:
        """The ``top`` maps of :attr:`layer` that map ``upstream_channel`` of
        :attr:`upstream` feeds most, measured from their side: ranked by its share of
        *their* input."""
        if not 0 <= upstream_channel < self.matrix.shape[1]:
            raise SelectionError(f"{self.upstream} has no map {upstream_channel}")
        values = self.matrix[:, upstream_channel]
        shares = self.shares[:, upstream_channel]
        order = torch.argsort(shares, descending=True, stable=True)[:top]
        return tuple(
            Link(int(self.channels[m]), float(values[m]), float(shares[m]))
            for m in order
            if values[m] > 0
        )

    def rest(self, channel: int) -> float:
        """Mean activation of map ``channel`` minus the sum of its mean contributions."""
        row = self._row(channel)
        return float(self.activations[row] - self.matrix[row].sum())


def unit_circuit(
    below: LayerCircuits | None,
    above: LayerCircuits | None,
    channel: int,
    top: int = TOP,
) -> UnitCircuit:
    """Map ``channel``'s circuit for its page: ``below`` measures its layer against the
    layer under it, ``above`` the layer over it against its layer (either may be None)."""
    if below is None and above is None:
        raise ValueError("unit_circuit needs the layer below or the layer above")
    if below is not None and above is not None and above.upstream != below.layer:
        raise ValueError(f"above measures {above.upstream}, not {below.layer}")
    layer = below.layer if below is not None else above.upstream  # type: ignore[union-attr]
    rule = below.rule if below is not None else above.rule  # type: ignore[union-attr]
    if below is not None:
        row = below._row(channel)
        activation, rest = float(below.activations[row]), below.rest(channel)
        images = int(below.images[row])
    else:
        activation, rest, images = None, None, 0
    return UnitCircuit(
        layer=layer,
        channel=channel,
        rule=rule,
        upstream_layer=below.upstream if below is not None else None,
        upstream=below.upstream_of(channel, top) if below is not None else (),
        downstream_layer=above.layer if above is not None else None,
        downstream=above.downstream_of(channel, top) if above is not None else (),
        activation=activation,
        rest=rest,
        images=images,
    )


def image_circuit(
    model: nn.Module,
    x: Tensor,
    layer: str | nn.Module,
    upstream: str | nn.Module,
    channel: int,
    position: tuple[int, int] | None = None,
    *,
    rule: str | None = GRADIENT_RULE,
    top: int = TOP,
) -> UnitCircuit:
    """The upstream links of one unit on one image (the explorer's clicked unit): map
    ``channel`` at ``position``, or at its strongest activation when None."""
    select = MapMax(channel) if position is None else Neuron(channel, *position)
    with Deconvnet(model, rule) as net:
        found = net.contributions(x[:1], layer, upstream, select)
    below = _circuits(
        model,
        found.layer,
        found.upstream,
        net.policy.rule,
        found.channels[0],
        found.contributions[0],
        found.values[0],
    )
    return unit_circuit(below, None, channel, top)


def layer_circuits(
    index: TopKIndex,
    model: nn.Module,
    dataset: ImageDataset,
    layer: str | nn.Module,
    upstream: str | nn.Module,
    *,
    rule: str | None = GRADIENT_RULE,
    k: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str | None = None,
    progress: Progress | None = None,
    max_work: int | None = DEFAULT_MAX_WORK,
) -> LayerCircuits:
    """Contributions of ``upstream``'s maps to every tracked map of ``layer``, averaged over
    each map's top ``k`` images of ``index`` (default all it kept), each at its ranked unit.

    One engine call per group of :data:`IMAGES_PER_CALL` images: one forward pass, and one
    windowed reverse pass batched over every ranked unit of those images.

    Raises
    ------
    InputError
        ``dataset`` is not the one scanned, ``layer`` was not scanned, an image's bytes
        changed since the scan, or the work exceeds ``max_work``.
    """
    name, _ = resolve_layer(model, layer)
    if name not in index.state.layers:
        raise InputError(f"layer {name!r} was not scanned (scanned: {', '.join(index.layers)})")
    if dataset.fingerprint() != index.fingerprint:
        raise InputError("the dataset differs from the one the top-k index was scanned from")
    tracked = index.state.layers[name].channels
    keep = index.state.k if k is None else k
    by_image: dict[int, list[Entry]] = defaultdict(list)
    for entry in index.state.entries():
        if entry.layer == name and entry.rank < keep:
            by_image[entry.image_id].append(entry)
    total = check_work(
        sum(len(found) for found in by_image.values()),
        max_work,
        what="the circuits",
        unit="reverse passes",
    )
    if progress is not None:
        progress(0, total)
    if device is None:
        device = model_device(model)
    rows = {int(c): row for row, c in enumerate(tracked.tolist())}
    sums: Tensor | None = None
    activations = torch.zeros(len(rows), dtype=torch.float64)
    counts = torch.zeros(len(rows), dtype=torch.long)
    done = 0
    ids = sorted(by_image)
    with Deconvnet(model, rule, batch_size=batch_size) as net:
        for start in range(0, len(ids), IMAGES_PER_CALL):
            groups: dict[tuple[int, ...], list[tuple[Tensor, list[Entry]]]] = defaultdict(list)
            for image_id in ids[start : start + IMAGES_PER_CALL]:
                raw = verified_image(
                    dataset, image_id, index.state.digests[image_id], "before the circuits"
                )
                x = preprocess(raw, dataset.preprocessing, device)
                groups[tuple(x.shape)].append((x, by_image[image_id]))
            for group in groups.values():
                values, found, entries = _measure(net, group, name, upstream)
                if sums is None:
                    sums = torch.zeros((len(rows), found.shape[1]), dtype=torch.float64)
                at = torch.tensor([rows[entry.channel] for entry in entries])
                sums.index_add_(0, at, found.cpu().to(torch.float64))
                activations.index_add_(0, at, values.cpu().to(torch.float64))
                counts.index_add_(0, at, torch.ones_like(at))
                done += len(entries)
                if progress is not None:
                    progress(done, total)
    if sums is None:
        raise InputError(f"the scan of {name!r} ranked no image")
    aliases = naming.aliases_of(model)
    up_name, _ = resolve_layer(model, upstream)
    per = counts.clamp(min=1).to(torch.float64)
    return LayerCircuits(
        layer=naming.display_name(aliases, name),
        upstream=naming.display_name(aliases, up_name),
        rule=net.policy.rule,
        channels=tracked.clone(),
        matrix=sums / per[:, None],
        activations=activations / per,
        images=counts,
    )


def _measure(
    net: Deconvnet,
    group: list[tuple[Tensor, list[Entry]]],
    layer: str,
    upstream: str | nn.Module,
) -> tuple[Tensor, Tensor, list[Entry]]:
    """One engine call for every ranked unit of the group's images (images with fewer
    entries repeat their first, and the repeats are dropped): the units' activations (N,),
    their contributions (N, C_up) and their entries."""
    count = max(len(entries) for _, entries in group)
    padded = [entries + [entries[0]] * (count - len(entries)) for _, entries in group]
    select = Units(
        channels=torch.tensor([[e.channel for e in row] for row in padded], dtype=torch.long),
        positions=torch.tensor([[e.position for e in row] for row in padded], dtype=torch.long),
    )
    found = net.contributions(torch.cat([x for x, _ in group]), layer, upstream, select)
    rows = [(b, slot) for b, (_, entries) in enumerate(group) for slot in range(len(entries))]
    images = torch.tensor([b for b, _ in rows])
    slots = torch.tensor([slot for _, slot in rows])
    entries = [entry for _, entries in group for entry in entries]
    return found.values[images, slots], found.contributions[images, slots], entries


def _circuits(
    model: nn.Module,
    layer: str,
    upstream: str,
    rule: str,
    channels: Tensor,
    contributions: Tensor,
    values: Tensor,
) -> LayerCircuits:
    """A :class:`LayerCircuits` of single measurements (one unit per map)."""
    aliases = naming.aliases_of(model)
    return LayerCircuits(
        layer=naming.display_name(aliases, layer),
        upstream=naming.display_name(aliases, upstream),
        rule=rule,
        channels=channels.detach().cpu().clone(),
        matrix=contributions.detach().cpu().to(torch.float64),
        activations=values.detach().cpu().to(torch.float64),
        images=torch.ones_like(channels.cpu()),
    )


def previous_layer(model: nn.Module, layers: Sequence[str], layer: str) -> str | None:
    """The layer of ``layers`` just below ``layer`` (in ``named_modules()`` order, which is
    the forward order of sequential models), leaving out ``layer``'s own blocks and parts;
    None when it is the first."""
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    name, _ = resolve_layer(model, layer)
    resolved = [resolve_layer(model, other)[0] for other in layers]
    below = [
        other
        for other in resolved
        if order[other] < order[name]
        and not name.startswith(other + ".")
        and not other.startswith(name + ".")
    ]
    return max(below, key=order.__getitem__) if below else None
