"""The imported net: Caffe's layers as named submodules, run in prototxt order over blobs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from deconvnet.errors import InputError


@dataclass(frozen=True)
class Step:
    """One Caffe layer in execution order: its module name, bottom and top blob names."""

    layer: str  # the Caffe layer name
    module: str  # the submodule name (the layer name with '.' -> '_')
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    kind: str = "plain"


class CaffeNet(nn.Module):
    """A Caffe deploy net as a torch module.

    Each Caffe layer is a submodule named after it (``net.get_submodule("conv5")``; a
    ``'.'`` in a Caffe name becomes ``'_'`` because torch reserves it for nesting).
    ``forward`` runs the layers in prototxt order over a dict of named blobs, honouring
    in-place tops (a ReLU whose top is its bottom replaces the blob), and returns the net's
    output blobs: the tops no later layer consumes, as in Caffe.

    Parameters
    ----------
    steps
        The layers in execution order.
    input_shapes
        Input blob name -> the shape declared in the prototxt (batch included).
    outputs
        Names of the output blobs.
    """

    def __init__(
        self,
        steps: list[Step],
        input_shapes: dict[str, tuple[int, ...]],
        outputs: list[str],
        name: str = "",
    ) -> None:
        super().__init__()
        self.steps = tuple(steps)
        self.input_shapes = dict(input_shapes)
        self.outputs = tuple(outputs)
        self.caffe_name = name
        self.layer_aliases: dict[str, str] = {}
        """Caffe blob names -> module names, set by the loader (``conv3`` -> ``relu3``)."""

    def _run(
        self, inputs: tuple[torch.Tensor, ...], record: dict[str, torch.Tensor] | None
    ) -> dict[str, torch.Tensor]:
        names = list(self.input_shapes)
        if len(inputs) != len(names):
            raise InputError(f"net takes {len(names)} input(s) {names}, got {len(inputs)}")
        blobs: dict[str, torch.Tensor] = {}
        for name, tensor in zip(names, inputs, strict=True):
            want = len(self.input_shapes[name])
            if not isinstance(tensor, torch.Tensor) or tensor.dim() != want:
                got = tensor.dim() if isinstance(tensor, torch.Tensor) else type(tensor).__name__
                raise InputError(f"input {name!r} must be a {want}-D tensor, got {got}")
            blobs[name] = tensor
            if record is not None:
                record[name] = tensor
        for step in self.steps:
            module = cast(nn.Module, self._modules[step.module])
            bottoms = [blobs[b] for b in step.bottoms]
            if step.kind == "split":
                tops = [module(bottoms[0])] * len(step.tops)
            elif step.kind == "pool_mask":
                tops = [module(bottoms[0]), _argmax_mask(module, bottoms[0])]
            else:
                tops = [module(*bottoms)]
            for index, (top, value) in enumerate(zip(step.tops, tops, strict=True)):
                blobs[top] = value
                if record is not None:
                    record[step.layer if index == 0 else f"{step.layer}:{top}"] = value
        return blobs

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Run the net on its input blob(s), in the prototxt's input order.

        Returns the output blob, or a tuple of them in Caffe's order when there are several.
        """
        blobs = self._run(inputs, None)
        results = tuple(blobs[name] for name in self.outputs)
        return results[0] if len(results) == 1 else results

    def forward_blobs(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every blob as each layer produced it, for checking against Caffe's blobs.

        Keys: input blob names; each layer's name for its first top (so the conv before an
        in-place ReLU keeps its pre-ReLU value under ``"conv1"`` and the ReLU's output is
        ``"relu1"``); ``"layer:top"`` for any further top (e.g. ``"pool1:pool1_mask"``).
        """
        record: dict[str, torch.Tensor] = {}
        self._run(inputs, record)
        return record

    def extra_repr(self) -> str:
        return f"name={self.caffe_name!r}, inputs={self.input_shapes}, outputs={list(self.outputs)}"


def _argmax_mask(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Caffe's pooling mask top: flat index ``h * W + w`` of each window's first maximum
    in raster order, as floats (torch's CPU max pooling keeps the first maximum too)."""
    indices: torch.Tensor
    if isinstance(module, nn.AdaptiveMaxPool2d):
        # torch's stub omits the ``None`` entries ``output_size`` may hold (kept at run time)
        _, indices = F.adaptive_max_pool2d(  # type: ignore[call-overload]
            x, module.output_size, return_indices=True
        )
    else:
        assert isinstance(module, nn.MaxPool2d)  # built that way; not user input
        _, indices = F.max_pool2d(
            x,
            module.kernel_size,
            module.stride,
            module.padding,
            module.dilation,
            ceil_mode=module.ceil_mode,
            return_indices=True,
        )
    return indices.to(x.dtype)
