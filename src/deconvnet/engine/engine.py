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
from deconvnet.engine.graph import Graph, Recorder
from deconvnet.engine.hooks import model_lock
from deconvnet.engine.layers import resolve_call
from deconvnet.engine.policies import RuleMode, refuse_functions
from deconvnet.engine.precision import (
    dtype_name,
    expected_display_exact,
    is_reduced,
    reverse_dtype,
)
from deconvnet.engine.projection import Projection
from deconvnet.engine.receptive import ReceptiveField, receptive_fields
from deconvnet.engine.rounding import Rounding
from deconvnet.engine.rules import ReversePolicy
from deconvnet.engine.selection import Seeds, Selection
from deconvnet.errors import InputError, LayerNotFoundError
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
            if graph is None or seeds.positions is None or seeds.positions.shape[-1] != 2:
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
            if graph is not None and seeds.positions is not None and seeds.positions.shape[-1] == 2:
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
        channels = seeds.channels.reshape(-1)
        positions = seeds.positions.reshape(batch * count, -1)
        values = seeds.values.reshape(-1)
        total = batch * count
        reduced = is_reduced(dtype, values.dtype)
        run = graph.cast(dtype) if reduced else graph
        # Every reverse step but a re-applied LRN is positively homogeneous in the seed:
        # in a reduced type the seeds run at magnitude 1 (no underflow of a small
        # activation in float16) and the result is scaled back in full precision.
        scaled = reduced and not self.policy.lrn_mode.reapplies
        run_values = (values.sign() if scaled else values).to(dtype)
        step = min(self.batch_size, windowed.seeds_per_call(graph, dtype.itemsize))
        parts, variances = [], []
        for start in range(0, total, step):
            stop = min(start + step, total)
            rounding = Rounding(dtype) if reduced else None
            with torch.no_grad():
                part = windowed.reverse_batch(
                    run,
                    image_index[start:stop],
                    channels[start:stop],
                    positions[start:stop],
                    run_values[start:stop],
                    self.policy,
                    rounding,
                ).to(values.dtype)
            if scaled:
                part *= values[start:stop].abs().view(-1, *[1] * (part.dim() - 1))
            parts.append(part)
            if rounding is not None:
                variance = rounding.projected
                variances.append(variance if variance is not None else part.new_zeros(len(part)))
            if progress is not None:
                progress(stop, total)
        images = torch.cat(parts)
        redone = None
        if reduced:
            unheld = _unheld(images, values, torch.cat(variances))
            self._redo(graph, images, unheld, image_index, channels, positions, values)
            redone = unheld.view(batch, count)
        return images.view(batch, count, *images.shape[1:]), redone

    def _redo(
        self,
        graph: Graph,
        images: Tensor,
        unheld: Tensor,
        image_index: Tensor,
        channels: Tensor,
        positions: Tensor,
        values: Tensor,
    ) -> None:
        """Redo the ``unheld`` projections in full precision, in place."""
        chosen = unheld.nonzero().view(-1)
        step = windowed.seeds_per_call(graph, values.element_size())
        for start in range(0, int(chosen.numel()), min(self.batch_size, step)):
            index = chosen[start : start + min(self.batch_size, step)]
            with torch.no_grad():
                images[index] = windowed.reverse_batch(
                    graph,
                    image_index[index],
                    channels[index],
                    positions[index],
                    values[index],
                    self.policy,
                )

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
        if output.dim() < 2 or output.shape[0] != x.shape[0]:
            raise InputError(
                f"layer {name!r} output {tuple(output.shape)} does not keep the input's batch "
                f"of {x.shape[0]}: give a batched input (B, C, H, W), got {tuple(x.shape)}"
            )
        return output


def _outside_torch_func(error: ForwardFailed) -> bool:
    """The forward failed only because ``torch.func`` cannot run an ``autograd.Function``
    of it (one without ``setup_context``)."""
    cause = error.__cause__
    return isinstance(cause, RuntimeError) and "setup_context" in str(cause)


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
