"""Typed errors: every one subclasses the builtin a caller would expect.

The CLI turns any :class:`DeconvnetError` into one line on stderr and exit code 1.
"""

from __future__ import annotations


class DeconvnetError(Exception):
    """Base of every error this package raises on purpose."""


class InputError(DeconvnetError, ValueError):
    """An input tensor of the wrong rank, dtype or size."""


class LayerNotFoundError(DeconvnetError, KeyError):
    """A layer name that is not a submodule of the model."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class LayerNotReachedError(LayerNotFoundError, InputError):
    """A layer of the model that the forward pass never ran (not used by ``forward()``)."""


class SelectionError(DeconvnetError, ValueError):
    """A selection that does not fit the layer (channel or position out of range)."""


class UnsupportedLayerError(DeconvnetError, TypeError):
    """A layer or operation that the chosen reverse rule has no definition for."""


class ImageError(DeconvnetError, ValueError):
    """An image file that cannot be decoded or is unusable (empty, too small, too large)."""


class ModelNotFoundError(DeconvnetError, ValueError):
    """A model name that is not in the zoo."""


class WeightsError(DeconvnetError, ValueError):
    """Weights that cannot be found, fetched, verified or matched to the model."""


class CaffeFormatError(DeconvnetError, ValueError):
    """A prototxt or caffemodel that is malformed or uses an unsupported layer."""


class TrainingModeError(InputError):
    """A model whose BatchNorm or Dropout modules are in train mode: call ``model.eval()``."""


class CheckpointError(InputError):
    """A top-k scan checkpoint that is corrupt, tampered with or from another scan."""


def one_line(error: BaseException | str, limit: int | None = None) -> str:
    """The text of ``error`` on one line: whitespace runs (newlines too) become one space,
    cut to ``limit`` characters with an ellipsis; an error without text gives its type name.

    Every message that quotes another error (a model's forward pass, a file that cannot be
    read) goes through here, so they all read alike on a terminal or in a JSON body.
    """
    text = " ".join(str(error).split())
    if not text and isinstance(error, BaseException):
        text = type(error).__name__
    if limit is not None and len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text
