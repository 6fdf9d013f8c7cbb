"""The deconvnet: project chosen activations of a layer back to pixel space.

Zeiler & Fergus (2014, §2.1) attach a deconvnet to each layer: to examine one activation,
zero every other activation of the layer and pass the result down — unpool through the
max-pool switches recorded on the way up, rectify, filter with the transposed forward
filters — until pixel space is reached. Here the forward pass runs once (under a
:class:`~deconvnet.engine.policies.RuleMode` that rewires the nonlinearities), stops at the
layer, and the reverse pass runs for all ``K × B`` seeds at once with ``torch.func.vjp``
and ``vmap``: max-pool switches are autograd's saved indices, the transposed filters are
autograd's convolution transpose (no bias), and no parameter gradient is ever computed.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import torch
from torch import Tensor, nn

from deconvnet.engine import guard, windowed
from deconvnet.engine.capture import ForwardFailed, check_batch, forward_until, output_tensor
from deconvnet.engine.compat import preset
from deconvnet.engine.graph import Graph, Mark, Recorder
from deconvnet.engine.hooks import model_lock
from deconvnet.engine.layers import resolve_call, resolve_layer
from deconvnet.engine.policies import RuleMode, foreign_function, refuse_functions
from deconvnet.engine.precision import (
    FULL_PRECISION,
    dtype_name,
    expected_display_exact,
    is_reduced,
    reverse_dtype,
)
from deconvnet.engine.projection import Contributions, Projection, UnitProjections
from deconvnet.engine.receptive import ReceptiveField, receptive_fields
from deconvnet.engine.rounding import Rounding
from deconvnet.engine.rules import ReversePolicy
from deconvnet.engine.selection import Seeds, Selection, UnitList, Units
from deconvnet.engine.window import Window, crop, paste
from deconvnet.errors import InputError, LayerNotFoundError, SelectionError
from deconvnet.models.card import card_of

log = logging.getLogger(__name__)

T = TypeVar("T")
Pullback = Callable[[Tensor], tuple[Tensor]]
"""Reverse passes for a batch of seeds (K, B, ...) at once: their images (K, B, C, H, W)."""
_IMAGE_RANK = 4
DEFAULT_POLICY = ReversePolicy()
"""The deconvnet rule, LRN skipped, summed collisions: the paper, read literally."""

DEFAULT_BATCH_SIZE = 16
"""Reverse passes run together by default (K × B are split into chunks of this size).

Small chunks stay in a CPU's caches (256 CaffeNet conv5 projections: 1.36 s in chunks of 16
against 1.48 s in chunks of 64 on the 2-core development machine); on a GPU, raise it."""


class Deconvnet:
    """Project activations of any layer of ``model`` back to its input.

    Parameters
    ----------
    model : the network, in eval mode: a model whose BatchNorm or Dropout modules are in
        train mode is refused (a warning and :class:`~deconvnet.errors.TrainingModeError`;
        call ``model.eval()``). Never modified: buffers, mode flags, ``requires_grad`` and
        hooks are as they were after every call, whether it succeeds or raises, and the
        input tensor is copied before the forward pass (an in-place first op cannot
        change it).
    rule : ``"zeiler"`` (the deconvnet: ``relu`` of the signal), ``"guided"``,
        ``"gradient"`` (the plain gradient, ``torch.autograd.grad``), or ``"none"`` (no
        rectification, the old Caffe demo).
    lrn : ``"skip"`` (default for zeiler, guided and none: identity; the paper does not
        say), ``"gradient"`` (default for rule gradient, so that it is the plain gradient
        everywhere), or ``"reapply"`` (the old Caffe demo).
    collisions : ``"sum"`` (default: exact transpose of overlapping max pooling) or
        ``"overwrite"`` (the old Caffe InvPooling layer).
    activations : ``"strict"`` (default: under zeiler and guided, anything but the ReLU
        family — SiLU, GELU, a sigmoid gate, LayerNorm — is refused, naming the module) or
        ``"relu-like"`` (smooth rectifiers pass ``relu`` of the signal, gates and per-sample
        normalisations are constant factors; see the README's "Semantics, and why"). The
        gradient rule is exact either way.
    precision : the reverse pass's number type (:mod:`deconvnet.engine.precision`):
        ``"float32"`` (default: full precision, the forward's own dtype; exact),
        ``"bfloat16"``, ``"float16"``, or ``"auto"`` (bfloat16 where the device computes it
        natively). The forward pass — seeded units, values, masks, switches — is always
        the model's own. Reduced types run on the windowed path (single-unit seeds);
        joint selections, given ``switches`` and graphs with an op that has no windowed
        rule run in full precision, and :attr:`Projection.precision` says which ran. A
        reduced-precision projection that comes out non-finite, or zero from a non-zero
        seed (a range the type cannot hold), is computed again in full precision
        (:attr:`Projection.full_precision`).
    batch_size : how many reverse passes (of the ``K × B``) run together; bounds memory.
    compat : ``"caffe-deconvnet"`` reproduces the old Caffe demo exactly (sets rule
        ``none``, lrn ``reapply``, collisions ``overwrite``; see :mod:`deconvnet.engine.compat`).

    Threads: calls may come from several threads. Calls on one model take its
    :func:`~deconvnet.engine.hooks.model_lock` and run one at a time (hooks are attached to
    the model's modules, where every thread would see them); different models run in
    parallel.

    Non-finite numbers: a NaN or infinite input, or a layer whose output turns non-finite
    on the way up, is an :class:`~deconvnet.errors.InputError` naming the input or the first
    such layer, never a NaN picture.

    Examples
    --------
    >>> with Deconvnet(model) as net:                       # doctest: +SKIP
    ...     res = net.project(x, layer="features.10", select=TopMaps(9))
    >>> res.images.shape                                    # doctest: +SKIP
    torch.Size([1, 9, 3, 227, 227])
    """

    def __init__(
        self,
        model: nn.Module,
        rule: str | None = None,
        *,
        lrn: str | None = None,
        collisions: str | None = None,
        activations: str | None = None,
        precision: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        compat: str | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.compat = preset(compat) if compat is not None else None
        if self.compat is not None:
            if (rule, lrn, collisions) != (None, None, None):
                raise ValueError(f"compat={compat!r} fixes rule, lrn and collisions; give neither")
            rule, lrn, collisions = self.compat.rule, self.compat.lrn, self.compat.collisions
        self.policy = ReversePolicy.of(
            rule, lrn, collisions, activations=activations, precision=precision
        )
        self.batch_size = batch_size

    @classmethod
    def of(
        cls, model: nn.Module, policy: ReversePolicy, *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> Deconvnet:
        """The deconvnet of ``model`` with a policy already resolved (every field of it)."""
        net = cls(model, batch_size=batch_size)
        net.policy = policy
        return net

    def __enter__(self) -> Deconvnet:
        return self

    def __exit__(self, *exc: object) -> None:
        """Nothing to release: every hook is removed at the end of each call."""

    def layer_output(self, x: Tensor, layer: str | nn.Module) -> Tensor:
        """The layer's forward output for ``x`` (B, C, ...), without a reverse pass.

        ``layer`` as in :meth:`project`.
        """
        name, module, call = resolve_call(self.model, layer)
        guard.require_eval(self.model)
        x = self._check_input(x)
        with model_lock(self.model), guard.preserved(self.model), torch.no_grad():
            self._require_call(x, module, name, call)
            output = self._forward_to(x, name, module, call=call).detach()
            self._check_finite(output, x, name, module)
        return output

    def _require_call(self, x: Tensor, module: nn.Module, name: str, call: int | None) -> None:
        """A module called several times needs a call index; an index needs that call."""
        if call is None:
            guard.require_single_call(self.model, x, module, name)
            return
        calls = len(guard.call_sites(self.model, x, module))
        if call > calls:
            raise LayerNotFoundError(
                f"layer {name!r} is called {calls} time(s) in one forward pass; "
                f"there is no call #{call}"
            )

    def project(
        self,
        x: Tensor,
        layer: str | nn.Module,
        select: Selection,
        *,
        progress: Callable[[int, int | None], None] | None = None,
        switches: Mapping[str, Tensor] | None = None,
    ) -> Projection:
        """Project the selected activations of ``layer`` for each image of ``x``.

        Parameters
        ----------
        x : Tensor (B, C_in, H, W) — preprocessed input batch (floating point).
        layer : dotted module name (``model.named_modules()``), an alias from the model's
            card (``conv5``; Caffe blob names), or the module itself;
            its output is the layer. A module that the forward pass calls more than once
            (a BasicBlock's ``relu``) needs a call index, ``"layer1.0.relu#2"``; without
            one it is an error listing the calls.
        select : a :class:`~deconvnet.engine.selection.Selection` such as ``TopMaps(9)``.
        progress : optional ``(done, total)`` callback over the reverse passes.
        switches : optional argmax indices per max-pool module name, used instead of the
            forward pass's own (to reproduce another framework's tie-breaking exactly).

        Returns
        -------
        Projection with ``images`` of shape (B, K, C_in, H, W).

        Raises
        ------
        LayerNotFoundError, SelectionError, InputError, UnsupportedLayerError,
        TrainingModeError
        """
        if not isinstance(select, Selection):
            raise TypeError(f"select must be a Selection such as TopMaps(9), got {select!r}")
        name, module, call = resolve_call(self.model, layer)
        guard.require_eval(self.model)
        x = self._check_input(x)
        with model_lock(self.model), guard.preserved(self.model):
            return self._project(x, name, module, call, select, progress, switches)

    def _project(
        self,
        x: Tensor,
        name: str,
        module: nn.Module,
        call: int | None,
        select: Selection,
        progress: Callable[[int, int | None], None] | None,
        switches: Mapping[str, Tensor] | None,
    ) -> Projection:
        """:meth:`project` once the model's lock is held."""
        with torch.no_grad():
            self._require_call(x, module, name, call)
        # Single-unit seeds run on receptive-field windows of the graph that this same
        # forward pass records; anything else (or a graph with an op that has no windowed
        # rule) takes the general path's pullback from it.
        windowed_ok = switches is None and not select.joint and (call or 1) == 1
        known = _WINDOWED.setdefault(self.model, {})
        tree = tuple(id(sub) for sub in self.model.modules())  # a replaced module counts anew
        key = (name, tree, tuple(x.shape), x.dtype, x.device, self.policy)
        done = None
        if windowed_ok and known.get(key, False):
            done = self._project_windowed(x, name, module, select, progress)
            known[key] = done is not None
        if done is None:
            done = self._project_general(x, name, module, call, select, progress, switches)
            if windowed_ok:
                known[key] = done.windowed
        y, seeds, images, dtype, redone = done.y, done.seeds, done.images, done.dtype, done.redone
        layer_shape = tuple(y.shape[1:])
        if not _all_finite(images):
            raise InputError(
                f"the reverse pass from layer {name!r} gave NaN or infinite values (weights "
                "that overflow on the way down?)"
            )
        card = card_of(self.model)
        return Projection(
            images=images,
            channels=seeds.channels,
            positions=seeds.positions,
            values=seeds.values,
            layer=name if call is None else f"{name}{guard.CALL_INDEX_SEPARATOR}{call}",
            selection=select,
            policy=self.policy,
            precision=dtype_name(dtype),
            full_precision=redone,
            extents=seeds.extents(),
            layer_shape=layer_shape,
            inputs=x.detach(),
            preprocessing=card.preprocessing,
            categories=card.categories,
            layer_alias=card.alias_of(name),
            trace_field=_field_tracer(self.model, name, tuple(x.shape), x.device),
        )

    def _project_windowed(
        self,
        x: Tensor,
        name: str,
        module: nn.Module,
        select: Selection,
        progress: Callable[[int, int | None], None] | None,
    ) -> _Done | None:
        """The forward without autograd (its graph is recorded, nothing saved for a
        pullback) and the windowed reverse; None when the graph or the seeds turn out not
        to allow it (the caller then runs the general path, one forward more)."""
        recorder = Recorder(self.model, self.policy)
        with torch.no_grad():
            y = self._forward_to(x.clone(), name, module, recorder=recorder)
            self._check_finite(y, x, name, module)
            seeds = select.resolve(y)
            graph = recorder.graph()
            recorder.release()
            if graph is None or not seeds.single_units_on_a_plane:
                return None
            dtype = reverse_dtype(self.policy.precision, y.dtype, y.device)
            images, redone = self._reverse_windowed(graph, seeds, progress, dtype)
        return _Done(y, seeds, images, dtype, redone, windowed=True)

    def _project_general(
        self,
        x: Tensor,
        name: str,
        module: nn.Module,
        call: int | None,
        select: Selection,
        progress: Callable[[int, int | None], None] | None,
        switches: Mapping[str, Tensor] | None,
    ) -> _Done:
        """One forward under ``torch.func.vjp``, recording the graph when single-unit seeds
        may use it: the windowed reverse if they can, else the vmapped pullback."""
        windowed_ok = switches is None and not select.joint and (call or 1) == 1
        recorder = Recorder(self.model, self.policy) if windowed_ok else None
        with torch.enable_grad():
            try:
                y, pullback = cast(
                    "tuple[Tensor, Callable[[Tensor], tuple[Tensor]]]",
                    torch.func.vjp(
                        # a clone: an in-place first op must not edit the vjp's primal
                        lambda inp: self._forward_to(
                            inp.clone(), name, module, switches, call, recorder
                        ),
                        x,
                    ),
                )
                pull_many: Pullback = torch.func.vmap(pullback)
                del pullback
            except ForwardFailed as error:
                if not _outside_torch_func(error):
                    raise
                recorder = None
                y, pull_many = self._plain_autograd(x, name, module, switches, call)
            self._check_finite(y, x, name, module)
            seeds = select.resolve(y)
            graph = recorder.graph() if recorder is not None else None
            if recorder is not None:
                recorder.release()
            if graph is not None and seeds.single_units_on_a_plane:
                del pull_many  # frees the forward's saved tensors before the reverse passes
                dtype = reverse_dtype(self.policy.precision, y.dtype, y.device)
                images, redone = self._reverse_windowed(graph, seeds, progress, dtype)
                return _Done(y, seeds, images, dtype, redone, windowed=True)
            images = self._reverse(pull_many, y, seeds, progress)
        return _Done(y, seeds, images, y.dtype, None, windowed=False)

    def _plain_autograd(
        self,
        x: Tensor,
        name: str,
        module: nn.Module,
        switches: Mapping[str, Tensor] | None,
        call: int | None,
    ) -> tuple[Tensor, Pullback]:
        """The general path on ``torch.autograd`` alone, for a model whose forward uses an
        ``autograd.Function`` that ``torch.func`` cannot run (one without ``setup_context``:
        timm's memory-efficient activations, ``nn.CrossMapLRN2d``)."""
        primal = x.clone().requires_grad_(True)
        y = self._forward_to(primal.clone(), name, module, switches, call)

        def pull_many(seeds: Tensor) -> tuple[Tensor]:
            # one seed at a time: such functions' backwards rarely batch
            grads = [torch.autograd.grad(y, primal, seed, retain_graph=True)[0] for seed in seeds]
            return (torch.stack(grads),)

        return y.detach(), pull_many

    def contributions(
        self,
        x: Tensor,
        layer: str | nn.Module,
        upstream: str | nn.Module,
        select: Selection,
    ) -> Contributions:
        """How much each map of ``upstream`` gives each selected unit of ``layer``: the
        reverse signal of the unit (this rule) where it reaches ``upstream``'s output, times
        that output, summed over the map (over the unit's receptive-field window: the
        signal is zero outside it).

        The reverse pass is the one :meth:`project` runs — on receptive-field windows of
        the recorded graph, batched over the seeds — stopped at ``upstream``; the general
        autograd path when the graph has an op with no windowed rule. For the gradient
        rule on a chain with no bias (convolutions, ReLU, max pooling, concatenation),
        the contributions sum to the unit's activation (Euler's theorem for functions
        that are positively homogeneous of degree 1); :attr:`Contributions.rest` is what
        they leave out (biases, and what does not pass through ``upstream``).

        ``select`` must seed single units of a 2-D map (``MapMax``, ``Neuron``, ``TopMaps``
        or the scans' ``Units``); ``upstream`` must run before ``layer``.
        """
        if not isinstance(select, Selection):
            raise TypeError(f"select must be a Selection such as TopMaps(9), got {select!r}")
        name, module, call = resolve_call(self.model, layer)
        if call not in (None, 1):
            raise LayerNotFoundError(f"layer {name!r}: contributions take the first call only")
        up_name, up_module = resolve_layer(self.model, upstream)
        guard.require_eval(self.model)
        x = self._check_input(x)
        with model_lock(self.model), guard.preserved(self.model):
            with torch.no_grad():
                self._require_call(x, module, name, None)
                self._require_call(x, up_module, up_name, None)
            return self._contributions(x, (name, module), (up_name, up_module), select)

    def _contributions(
        self,
        x: Tensor,
        target: tuple[str, nn.Module],
        source: tuple[str, nn.Module],
        select: Selection,
    ) -> Contributions:
        """:meth:`contributions` once the model's lock is held."""
        recorder = Recorder(self.model, self.policy)

        def keep(layer_name: str, output: Any) -> tuple[int | None, Tensor]:
            tensor = output_tensor(layer_name, output)
            return recorder.value_of(tensor), tensor

        with torch.enable_grad():
            start = x.clone().requires_grad_(True)
            with RuleMode(self.policy, self.model), recorder:
                recorder.start(start)
                kept = forward_until(
                    self.model,
                    start,
                    dict([source, target]),
                    keep=keep,
                    until=target[0],
                    shield=True,  # the rest of the model never edits the kept output in place
                )
            if source[0] not in kept or source[0] == target[0]:
                raise InputError(
                    f"layer {source[0]!r} does not run before layer {target[0]!r}: "
                    "contributions come from a layer below"
                )
            (up_id, up), (_, y) = kept[source[0]], kept[target[0]]
            recorder.finish(y)
            self._check_finite(y, x, target[0], target[1])
            seeds = select.resolve(y.detach())
            if seeds.positions is None or not seeds.single_units_on_a_plane:
                raise SelectionError("contributions need single units of a 2-D map")
            graph = recorder.graph()
            recorder.release()
            # the signal of the unit itself (seeded with 1, not with its activation): the
            # sum of activation times signal is then the activation for the gradient rule
            ones = Seeds(seeds.channels, torch.ones_like(seeds.values), seeds.positions, None)
            if graph is not None and up_id is not None and up_id >= 0:
                del kept  # the forward's saved tensors are not needed by the windowed pass
                found = self._contributions_windowed(graph, up_id, up.detach(), ones)
            else:
                found = self._contributions_general(y, up, ones)
        return Contributions(
            layer=target[0],
            upstream=source[0],
            channels=seeds.channels,
            positions=seeds.positions,
            values=seeds.values,
            contributions=found,
            policy=self.policy,
        )

    def _contributions_windowed(self, graph: Graph, up_id: int, up: Tensor, seeds: Seeds) -> Tensor:
        """The windowed reverse passes stopped at ``up_id``, in chunks whose tensors stay
        reused blocks (:func:`windowed.seeds_per_call`), in the forward's full precision."""
        assert seeds.positions is not None  # checked by the caller
        batch, count = seeds.channels.shape
        image_index = torch.arange(batch, device=seeds.channels.device).repeat_interleave(count)
        channels = seeds.channels.reshape(-1)
        positions = seeds.positions.reshape(batch * count, -1)
        values = seeds.values.reshape(-1)
        total = batch * count
        step = min(self.batch_size, windowed.seeds_per_call(graph, values.element_size()))
        parts = []
        for start in range(0, total, step):
            chunk = slice(start, min(start + step, total))
            with torch.no_grad():
                window = windowed.reverse_windows(
                    graph,
                    image_index[chunk],
                    channels[chunk],
                    positions[chunk],
                    values[chunk],
                    self.policy,
                    stop=up_id,
                )
            seen = crop(up, image_index[chunk].cpu(), window.tops, window.lefts, window.size)
            parts.append((window.data * seen.to(window.data.dtype)).sum(dim=(-2, -1)))
        return torch.cat(parts).view(batch, count, -1)

    def _contributions_general(self, y: Tensor, up: Tensor, seeds: Seeds) -> Tensor:
        """Batched ``torch.autograd.grad`` of the seeds to ``up``, times ``up``."""
        count, batch = seeds.count, y.shape[0]
        chunk = max(1, self.batch_size // batch)
        parts = []
        for first in range(0, count, chunk):
            last = min(first + chunk, count)
            (signal,) = torch.autograd.grad(
                y,
                up,
                grad_outputs=seeds.materialize(y, first, last),
                retain_graph=last < count,
                is_grads_batched=True,
            )
            parts.append((signal * up.detach()).flatten(3).sum(dim=3))  # (k, B, C_up)
        return torch.cat(parts).transpose(0, 1).detach()

    def _reverse(
        self,
        pull_many: Pullback,
        y: Tensor,
        seeds: Seeds,
        progress: Callable[[int, int | None], None] | None,
    ) -> Tensor:
        count, batch = seeds.count, y.shape[0]
        chunk = max(1, self.batch_size // batch)
        parts = []
        for start in range(0, count, chunk):
            stop = min(start + chunk, count)
            (part,) = pull_many(seeds.materialize(y, start, stop))
            parts.append(part.detach())
            if progress is not None:
                progress(stop * batch, count * batch)
        return torch.cat(parts, dim=0).transpose(0, 1)

    def project_units(
        self,
        x: Tensor,
        units: Mapping[str, UnitList],
        *,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> dict[str, UnitProjections]:
        """Project single activations of several layers of one batch, each on its own.

        One forward pass serves every layer (it runs to the deepest one and records the
        graph once), and each unit gets exactly one reverse pass, on its receptive-field
        window, however many units each image has: nothing is padded to the image with
        the most. Equal to :meth:`project` with one
        :class:`~deconvnet.engine.selection.Neuron` per unit, up to float rounding (the
        batches differ). A layer the windowed reverse pass cannot follow (an op with no
        windowed rule, a ``#call`` index) takes :meth:`project`'s general path, one image
        at a time.

        Parameters
        ----------
        x : Tensor (B, C_in, H, W) — preprocessed input batch.
        units : layer (named as :meth:`project` takes it) -> its units.
        progress : optional ``(done, total)`` callback over the reverse passes.

        Returns
        -------
        One :class:`~deconvnet.engine.projection.UnitProjections` per layer of ``units``.

        Raises
        ------
        As :meth:`project`.
        """
        resolved = {layer: resolve_call(self.model, layer) for layer in units}
        guard.require_eval(self.model)
        x = self._check_input(x)
        total, done = sum(len(chosen) for chosen in units.values()), 0

        def report(count: int, _: int | None) -> None:
            if progress is not None:
                progress(done + count, total)

        results = {}
        with model_lock(self.model), guard.preserved(self.model):
            with torch.no_grad():
                for name, module, call in resolved.values():
                    self._require_call(x, module, name, call)
            plain = {name: module for name, module, call in resolved.values() if (call or 1) == 1}
            recorder = Recorder(self.model, self.policy)
            reached = self._forward_marked(x, plain, recorder) if plain else {}
            graphs = {name: recorder.graph(mark) for name, (mark, _) in reached.items()}
            recorder.release()
            for layer, chosen in units.items():
                name, module, call = resolved[layer]
                graph = graphs.get(name)
                if graph is None:
                    results[layer] = self._units_by_image(x, layer, chosen, report)
                else:
                    y = reached[name][1]
                    self._check_finite(y, x, name, module)
                    values = chosen.values(y)
                    dtype = reverse_dtype(self.policy.precision, y.dtype, y.device)
                    windows, redone = self._reverse_units(
                        graph,
                        chosen.images,
                        chosen.channels,
                        chosen.positions,
                        values,
                        report,
                        dtype,
                    )
                    results[layer] = UnitProjections(
                        layer, values, tuple(windows), len(chosen), dtype_name(dtype), redone
                    )
                done += len(chosen)
        return results

    def _forward_marked(
        self, x: Tensor, layers: dict[str, nn.Module], recorder: Recorder
    ) -> dict[str, tuple[Mark, Tensor]]:
        """One recorded forward pass under the rule mode, up to the last of ``layers``:
        each layer's mark and a copy of its output (:meth:`Recorder.mark`). A layer reached
        through a custom ``autograd.Function`` is refused under the rectifying rules and
        marked unrecorded under the gradient rule (the general path runs its backward)."""
        outputs: dict[str, Tensor] = {}

        def keep(name: str, output: Any) -> tuple[Mark, Tensor]:
            outputs[name] = output_tensor(name, output)
            return recorder.mark(outputs[name])

        # Derived tensors require grad, as under project's vjp: the recorder tells a tensor
        # derived in a way it does not see from a constant by that.
        leaf = x.detach().requires_grad_()
        start = leaf.clone()  # an in-place first op may not edit a leaf
        with (
            torch.enable_grad(),
            RuleMode(self.policy, self.model, None) as rules,
            recorder,
        ):
            recorder.start(start, rules.recall)
            reached = forward_until(self.model, start, layers, keep=keep)
        for name, (mark, output) in reached.items():
            refuse_functions(outputs[name], self.policy)
            _require_batch(output, x, name)
            if foreign_function(outputs[name]) is not None:
                # its backward is its author's, not the ops the recorder saw inside it
                reached[name] = (Mark(-1, mark.nodes), output)
        return reached

    def _units_by_image(
        self,
        x: Tensor,
        layer: str,
        chosen: UnitList,
        progress: Callable[[int, int | None], None],
    ) -> UnitProjections:
        """The general path for :meth:`project_units`: one :meth:`project` call per run of
        units of the same image (no padding either), each projection on the whole input."""
        name, module, call = resolve_call(self.model, layer)
        images = chosen.images.tolist()
        windows, values, founds, start = [], [], [], 0
        while start < len(images):
            stop = start + 1
            while stop < len(images) and images[stop] == images[start]:
                stop += 1
            image = int(images[start])
            select = Units(chosen.channels[start:stop], chosen.positions[start:stop])
            found = self._project(x[image : image + 1], name, module, call, select, None, None)
            nowhere = torch.zeros(stop - start, dtype=torch.long)
            windows.append(Window(found.images[0], nowhere, nowhere))
            values.append(found.values[0])
            founds.append(found)
            start = stop
            progress(stop, len(images))
        empty = x.new_zeros(0)
        precision, redone = _precisions(founds)
        return UnitProjections(
            layer,
            torch.cat(values) if values else empty,
            tuple(windows),
            start,
            precision,
            redone,
        )

    def _reverse_windowed(
        self,
        graph: Graph,
        seeds: Seeds,
        progress: Callable[[int, int | None], None] | None,
        dtype: torch.dtype,
    ) -> tuple[Tensor, Tensor | None]:
        """Single-unit seeds: reverse passes on receptive-field windows of the graph, in
        ``dtype``; with the seeds that a reduced type could not hold, redone in full
        precision (None when the pass ran in full precision)."""
        assert seeds.positions is not None  # checked by the caller
        batch, count = seeds.channels.shape
        image_index = torch.arange(batch, device=seeds.channels.device).repeat_interleave(count)
        windows, redone = self._reverse_units(
            graph,
            image_index,
            seeds.channels.reshape(-1),
            seeds.positions.reshape(batch * count, -1),
            seeds.values.reshape(-1),
            progress,
            dtype,
        )
        images = torch.cat([paste(window, graph.shapes[0][-2:]) for window in windows])
        images = images.view(batch, count, *images.shape[1:])
        return images, (redone.view(batch, count) if redone is not None else None)

    def _reverse_units(
        self,
        graph: Graph,
        image_index: Tensor,
        channels: Tensor,
        positions: Tensor,
        values: Tensor,
        progress: Callable[[int, int | None], None] | None,
        dtype: torch.dtype,
    ) -> tuple[list[Window], Tensor | None]:
        """One windowed reverse pass per seed (image, map, position, value), in ``dtype``,
        in runs of as many as keep each run's tensors small
        (:func:`windowed.seeds_per_call`); the seeds a reduced type could not hold are
        redone in full precision, and the second result says which (None when the pass
        ran in full precision)."""
        total = int(values.shape[0])
        reduced = is_reduced(dtype, values.dtype)
        run = graph.cast(dtype) if reduced else graph
        # Every reverse step but a re-applied LRN is positively homogeneous in the seed:
        # in a reduced type the seeds run at magnitude 1 (no underflow of a small
        # activation in float16) and the result is scaled back in full precision.
        scaled = reduced and not self.policy.lrn_mode.reapplies
        run_values = (values.sign() if scaled else values).to(dtype)
        step = min(self.batch_size, windowed.seeds_per_call(graph, dtype.itemsize))
        windows, unheld = [], []
        for start in range(0, total, step):
            stop = min(start + step, total)
            rounding = Rounding(dtype) if reduced else None
            with torch.no_grad():
                window = windowed.reverse_windows(
                    run,
                    image_index[start:stop],
                    channels[start:stop],
                    positions[start:stop],
                    run_values[start:stop],
                    self.policy,
                    rounding,
                )
            if rounding is not None:
                data = window.data.to(values.dtype)
                if scaled:
                    data *= values[start:stop].abs().view(-1, *[1] * (data.dim() - 1))
                window = window.with_data(data)
                variance = rounding.projected
                if variance is None:
                    variance = data.new_zeros(len(data), dtype=torch.float32)
                bad = _unheld(data, values[start:stop], variance)
                if bool(bad.any()):
                    seeds = slice(start, stop)
                    self._redo(graph, window, bad, seeds, image_index, channels, positions, values)
                unheld.append(bad)
            windows.append(window)
            if progress is not None:
                progress(stop, total)
        return windows, (torch.cat(unheld) if reduced else None)

    def _redo(
        self,
        graph: Graph,
        window: Window,
        unheld: Tensor,
        seeds: slice,
        image_index: Tensor,
        channels: Tensor,
        positions: Tensor,
        values: Tensor,
    ) -> None:
        """Redo the ``unheld`` projections of one run (the call's ``seeds``) in full
        precision, written into the run's ``window`` in place."""
        chosen = unheld.nonzero().view(-1)
        index = torch.arange(seeds.start, seeds.stop, device=chosen.device)[chosen]
        step = min(self.batch_size, windowed.seeds_per_call(graph, values.element_size()))
        height, width = window.size
        for start in range(0, int(chosen.numel()), step):
            part = index[start : start + step]
            with torch.no_grad():
                full = windowed.reverse_windows(
                    graph,
                    image_index[part],
                    channels[part],
                    positions[part],
                    values[part],
                    self.policy,
                )
            for j, n in enumerate(chosen[start : start + step].tolist()):
                top, left = int(window.tops[n]), int(window.lefts[n])
                window.data[n] = full.part(j, (top, left, top + height, left + width))

    def _check_input(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise InputError(f"input must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise InputError(f"input must be floating point, got dtype {x.dtype}")
        if x.dim() < 2 or x.shape[0] < 1 or x.numel() == 0:
            raise InputError(
                f"input must be a non-empty batch (B, C, ...), got shape {tuple(x.shape)}"
            )
        if not _all_finite(x):
            raise InputError(f"the input holds {_non_finite_count(x)}; give finite values")
        check_batch(self.model, x)
        param = next(self.model.parameters(), None)
        if param is not None and param.device != x.device:
            x = x.to(param.device)
        return x.detach().clone()  # a forward that edits its input in place edits this copy

    def _check_finite(self, output: Tensor, x: Tensor, name: str, module: nn.Module) -> None:
        """Refuse a layer output with NaN/Inf, naming the first layer whose output has them."""
        if _all_finite(output):
            return
        first = _first_non_finite_layer(self.model, x, module) or name
        raise InputError(
            f"layer {first!r} gives non-finite values ({_non_finite_count(output)} at "
            f"layer {name!r}) for this finite input: the weights or the input's scale overflow"
        )

    def _forward_to(
        self,
        x: Tensor,
        name: str,
        module: nn.Module,
        switches: Mapping[str, Tensor] | None = None,
        call: int | None = None,
        recorder: Recorder | None = None,
    ) -> Tensor:
        """Run the model under the rule mode until ``module`` has produced its output (of
        its ``call``-th call, default the first), recording the graph of ops on the way
        when given a ``recorder``."""
        with (
            RuleMode(self.policy, self.model, switches) as rules,
            recorder or contextlib.nullcontext(),
        ):
            if recorder is not None:
                recorder.start(x, rules.recall)
            output = forward_until(
                self.model, x, {name: module}, keep=output_tensor, call=call or 1
            )[name]
        refuse_functions(output, self.policy)
        if recorder is not None:
            recorder.finish(output)
        _require_batch(output, x, name)
        return output


def _outside_torch_func(error: ForwardFailed) -> bool:
    """The forward failed only because ``torch.func`` cannot run an ``autograd.Function``
    of it (one without ``setup_context``)."""
    cause = error.__cause__
    return isinstance(cause, RuntimeError) and "setup_context" in str(cause)


def _precisions(founds: list[Projection]) -> tuple[str, Tensor | None]:
    """The precision of one-image projections taken together (the reduced type, if any
    ran in one) and, per seed, whether it ran in full precision instead (None: none ran
    in a reduced type)."""
    reduced = [found for found in founds if found.full_precision is not None]
    if not reduced:
        return (founds[0].precision if founds else FULL_PRECISION), None
    precision = reduced[0].precision
    redone = [
        found.full_precision[0]
        if found.full_precision is not None
        else torch.full((found.values.shape[1],), found.precision != precision)
        for found in founds
    ]
    return precision, torch.cat(redone)


def _require_batch(output: Tensor, x: Tensor, name: str) -> None:
    if output.dim() < 2 or output.shape[0] != x.shape[0]:
        raise InputError(
            f"layer {name!r} output {tuple(output.shape)} does not keep the input's batch "
            f"of {x.shape[0]}: give a batched input (B, C, H, W), got {tuple(x.shape)}"
        )


_WINDOWED: weakref.WeakKeyDictionary[nn.Module, dict[tuple[Any, ...], bool]] = (
    weakref.WeakKeyDictionary()
)
"""Per model, whether a (layer, module tree, input shape, dtype, device, policy) took the
windowed path last time: if it did, the next call's forward runs without autograd (no
pullback to keep: DenseNet-121 to ``denseblock4`` 0.67 → 0.41 s on one core). The first
call runs under autograd, where an op the recorder cannot see (a custom autograd Function)
shows as a tensor that requires grad and keeps the layer off the windowed path; a graph
that surprises later runs the general path's forward."""


@dataclass(frozen=True)
class _Done:
    """A forward and its reverse passes: what :meth:`Deconvnet.project` reports."""

    y: Tensor
    seeds: Seeds
    images: Tensor
    dtype: torch.dtype
    redone: Tensor | None
    windowed: bool


def _unheld(images: Tensor, values: Tensor, variance: Tensor) -> Tensor:
    """Reduced-precision projections to redo in full precision: non-finite (an overflow),
    all zero from a non-zero seed (an underflow), or expected to fail the display check
    from their estimated rounding error (a cancellation the reduced type cannot carry)."""
    flat = images.flatten(1)
    high, low = flat.amax(dim=1), flat.amin(dim=1)  # NaN reaches both
    finite = torch.isfinite(high) & torch.isfinite(low)
    vanished = (high == 0) & (low == 0) & (values != 0)
    return ~finite | vanished | ~expected_display_exact(images, variance)


def _all_finite(values: Tensor) -> bool:
    """No NaN or infinity in ``values``: two reductions, no mask the size of the images."""
    return values.numel() == 0 or bool(
        torch.isfinite(values.amax()) & torch.isfinite(values.amin())
    )


def _non_finite_count(values: Tensor) -> str:
    nan = int(torch.isnan(values).sum())
    infinite = int(torch.isinf(values).sum())
    return f"{nan} NaN and {infinite} infinite values of {values.numel()}"


def _first_non_finite_layer(model: nn.Module, x: Tensor, target: nn.Module) -> str | None:
    """The first module (in the order outputs are made) whose output is not finite.

    A diagnostic forward pass, run only after a non-finite layer output was found; it stops
    at ``target``. ``None`` when no module output is non-finite before the target's (the
    values came from code in ``forward()`` itself)."""
    found: list[str] = []

    def check(name: str, output: Any) -> None:
        if not found and isinstance(output, Tensor) and not bool(torch.isfinite(output).all()):
            found.append(name)

    named = [(name, module) for name, module in model.named_modules() if name]
    until = next((name for name, module in named if module is target), None)
    with torch.no_grad(), contextlib.suppress(ForwardFailed, LayerNotFoundError):
        # the first pass ran up to the target; a diagnostic may not
        forward_until(model, x, named, keep=check, until=until)
    return found[0] if found else None


def _field_tracer(
    model: nn.Module, layer: str, shape: tuple[int, ...], device: torch.device
) -> Callable[[], ReceptiveField | None]:
    """Deferred: tracing fields costs a forward pass, and most callers never draw."""

    def trace() -> ReceptiveField | None:  # receptive_fields takes the model's lock
        if len(shape) != _IMAGE_RANK:
            return None
        try:
            return receptive_fields(model, shape, device=device).get(layer)
        except InputError:  # the full forward pass fails (a model usable only up to layer)
            return None

    return trace
