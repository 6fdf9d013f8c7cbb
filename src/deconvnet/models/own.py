"""Your own network as you have it: a factory in a file or package, a ``torch.export``
archive, or (only when asked) a pickled module.

``load_own("net.py:build")`` imports ``net.py`` and calls ``build()``;
``load_own("mypkg.nets:build")`` imports the package module. Both run your own code, as
``python net.py`` would. ``load_own("net.pt2")`` reads a ``torch.export.save`` archive
(no code runs). A full pickled model (``torch.save(model)``) can run arbitrary code while
it loads, so it is read only with ``unsafe_pickle=True``, with a warning.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deconvnet.errors import ModelNotFoundError, WeightsError, one_line
from deconvnet.models._download import sha256_of
from deconvnet.models.card import Provenance, attach, card_of
from deconvnet.models.exported import load_exported
from deconvnet.models.libraries import is_library_model
from deconvnet.models.state_dicts import apply_state_dict, read_state_dict

EXPORT_SUFFIX = ".pt2"
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl")
FACTORY_SEPARATOR = ":"
SOURCE_SUFFIX = ".py"
OWN_WEIGHTS = "own"
"""The card's weights for a model that brings its own (a factory's, an archive's)."""
ERROR_CHARS = 300
"""How much of an error raised by your code (or torch's reader) a message quotes."""


def is_own_model(spec: str) -> bool:
    """True for the forms :func:`load_own` reads (anything but a zoo name or a library's
    ``timm:NAME``/``torchvision:NAME``)."""
    if is_library_model(spec):
        return False
    return (
        FACTORY_SEPARATOR in spec or spec.endswith(EXPORT_SUFFIX) or spec.endswith(PICKLE_SUFFIXES)
    )


def load_own(
    spec: str,
    *,
    weights: str | os.PathLike[str] | None = None,
    unsafe_pickle: bool = False,
) -> nn.Module:
    """Build or read the model ``spec`` names; returned as built (mode untouched), with its
    :class:`~deconvnet.models.card.ModelCard`: what the model says about itself (its
    ``preprocessing``, ``categories`` and ``layer_aliases`` attributes), and as provenance
    ``spec`` and its weights.

    Parameters
    ----------
    spec
        ``path/to/file.py:factory``, ``package.module:factory`` (``factory()`` must return
        an ``nn.Module``), ``model.pt2`` (``torch.export.save``), or, with
        ``unsafe_pickle``, a ``torch.save(model)`` file.
    weights
        A ``.pth``/``.pt``/``.safetensors`` state dict loaded into the model (checked
        first, as :func:`~deconvnet.models.apply_state_dict` does); default: its own.

    Raises
    ------
    ModelNotFoundError
        The file, module or factory does not exist, or the factory fails or returns
        something that is not a module.
    WeightsError
        An archive that cannot be read; a pickle without ``unsafe_pickle``; weights that
        do not fit.
    """
    model = _build(spec, unsafe_pickle)
    if weights is not None:
        apply_state_dict(model, read_state_dict(Path(weights)), source=os.fspath(weights))
        provenance = Provenance.of_file(spec, weights)
    else:
        source = Path(spec.rpartition(FACTORY_SEPARATOR)[0] if FACTORY_SEPARATOR in spec else spec)
        digest = sha256_of(source) if source.is_file() else None
        provenance = Provenance(spec, OWN_WEIGHTS, digest)
    return attach(model, replace(card_of(model), provenance=provenance))


def _build(spec: str, unsafe_pickle: bool) -> nn.Module:
    if spec.endswith(EXPORT_SUFFIX):
        return load_exported(Path(spec))
    if spec.endswith(PICKLE_SUFFIXES):
        return _pickled(Path(spec), unsafe_pickle)
    source, separator, name = spec.rpartition(FACTORY_SEPARATOR)
    if not separator or not source or not name.isidentifier():
        raise ModelNotFoundError(
            f"cannot read model {spec!r}: give a zoo name, FILE.py:FACTORY, "
            f"package.module:FACTORY, a {EXPORT_SUFFIX} archive or (with unsafe_pickle) a "
            "pickled model"
        )
    factory = getattr(_module(source), name, None)
    if isinstance(factory, nn.Module):  # calling it would run its forward with no input
        raise ModelNotFoundError(
            f"{source}: {name!r} is a module instance; name the function or class that builds it"
        )
    if not callable(factory):
        raise ModelNotFoundError(f"{source} has no callable {name!r}")
    try:
        model = factory()
    except SystemExit as exc:  # sys.exit() in the user's code is a failure, not our exit
        raise ModelNotFoundError(f"{spec}: {name}() called exit({exc.code!r})") from exc
    except Exception as exc:  # the user's code may raise anything
        raise ModelNotFoundError(
            f"{spec}: {name}() failed: {one_line(exc, ERROR_CHARS)}"
        ) from exc
    return _checked(model, f"{spec}: {name}()")


def _module(source: str) -> Any:
    if source.endswith(SOURCE_SUFFIX):
        path = Path(source)
        if not path.is_file():
            raise ModelNotFoundError(f"model source {path} does not exist")
        module_name = f"deconvnet_own_model_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ModelNotFoundError(f"cannot import {path} as Python source")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses and pickling look modules up here
        try:
            spec.loader.exec_module(module)
        except SystemExit as exc:  # sys.exit() at import time is a failure, not our exit
            del sys.modules[module_name]
            raise ModelNotFoundError(f"importing {path} called exit({exc.code!r})") from exc
        except Exception as exc:  # the user's code may raise anything
            del sys.modules[module_name]
            raise ModelNotFoundError(
                f"importing {path} failed: {one_line(exc, ERROR_CHARS)}"
            ) from exc
        return module
    try:
        return importlib.import_module(source)
    except SystemExit as exc:
        raise ModelNotFoundError(f"importing {source!r} called exit({exc.code!r})") from exc
    except Exception as exc:  # ImportError, or anything the module's own code raises
        raise ModelNotFoundError(
            f"cannot import module {source!r}: {one_line(exc, ERROR_CHARS)}"
        ) from exc


def _pickled(path: Path, unsafe_pickle: bool) -> nn.Module:
    if not unsafe_pickle:
        raise WeightsError(
            f"{path} would be read as a pickled model, which can run any code while it loads; "
            "pass --unsafe-pickle (unsafe_pickle=True) if you trust it, or save a state dict, "
            f"a safetensors file or a {EXPORT_SUFFIX} archive instead"
        )
    if not path.is_file():
        raise ModelNotFoundError(f"pickled model {path} does not exist")
    warnings.warn(
        f"reading {path} with pickle (weights_only=False): this runs any code the file holds",
        stacklevel=3,
    )
    try:
        model = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # unpickling may raise anything
        raise WeightsError(f"cannot unpickle {path}: {one_line(exc, ERROR_CHARS)}") from exc
    return _checked(model, str(path))


def _checked(model: object, what: str) -> nn.Module:
    """``model`` when it is a module whose card attributes, where it sets them, have the right
    types (:func:`~deconvnet.models.card.card_of` refuses the others)."""
    if not isinstance(model, nn.Module):
        raise ModelNotFoundError(f"{what} gave a {type(model).__name__}, not a torch.nn.Module")
    card_of(model, what)
    return model
