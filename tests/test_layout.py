"""The package's rooms and the one direction its imports run, read from the source's AST.

storage -> inputs -> models -> caffe -> engine -> instruments -> figures -> faces: a module may
import its own room and the rooms before it, never one after. ``errors`` is below everything,
then ``storage`` (the one atomic file writer and the one containment check);
the facade (``deconvnet/__init__.py``, ``__main__.py``, ``topk.py``) may import every room
and no room imports the facade. Every ``import`` counts, including those inside functions,
so a lazy import cannot hide an arrow that runs back up.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import deconvnet

PACKAGE = Path(deconvnet.__file__).resolve().parent
ROOMS = (
    "errors",
    "storage",
    "inputs",
    "models",
    "caffe",
    "engine",
    "instruments",
    "figures",
    "faces",
)
FACADE = "facade"
FACADE_MODULES = ("__init__", "__main__", "topk")


def room_of(module: str) -> str:
    """The room of a dotted module name inside the package (``deconvnet.engine.rules``)."""
    parts = module.split(".")
    if parts[0] != "deconvnet":
        raise ValueError(f"{module} is not part of the package")
    if len(parts) == 1 or parts[1] in FACADE_MODULES:
        return FACADE
    if parts[1] not in ROOMS:
        raise ValueError(f"{module} lies in no room; the rooms are {ROOMS}")
    return parts[1]


def imported_modules(module: str, source: str, is_package: bool) -> list[tuple[int, str]]:
    """``(line, dotted module)`` of every package module that ``source`` imports, anywhere."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("deconvnet")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join([*anchor, *([base] if base else [])])
            if base != "deconvnet" and not base.startswith("deconvnet."):
                continue
            for alias in node.names:
                # ``from deconvnet import caffe`` names a room; ``... import Deconvnet`` the facade
                named = f"{base}.{alias.name}"
                found.append((node.lineno, named if _is_module(named) else base))
    return found


def _is_module(dotted: str) -> bool:
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def violations(module: str, source: str, is_package: bool = False) -> list[str]:
    """Every import of ``source`` that runs against the flow, as readable lines."""
    room = room_of(module)
    wrong = []
    for line, target in imported_modules(module, source, is_package):
        target_room = room_of(target)
        if room == FACADE:
            continue
        if target_room == FACADE:
            wrong.append(f"{module}:{line} imports the facade ({target})")
        elif ROOMS.index(target_room) > ROOMS.index(room):
            wrong.append(f"{module}:{line} ({room}) imports {target} ({target_room})")
    return wrong


def package_modules() -> list[tuple[str, Path]]:
    modules = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return modules


def test_every_import_runs_with_the_flow():
    wrong = []
    for module, path in package_modules():
        wrong += violations(module, path.read_text(), is_package=path.name == "__init__.py")
    assert wrong == []


def test_every_module_lives_in_a_room():
    top_files = {p.stem for p in PACKAGE.glob("*.py")}
    top_dirs = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert top_files == {"errors", *FACADE_MODULES}
    assert top_dirs == set(ROOMS) - {"errors"}
    for module, _ in package_modules():
        room_of(module)  # raises for a module outside every room


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("deconvnet.engine.engine", "from deconvnet.figures.projection import x"),
        ("deconvnet.engine.engine", "def f():\n    from deconvnet.figures import render"),
        ("deconvnet.instruments.sanity", "import deconvnet.faces.cli"),
        ("deconvnet.caffe.network", "from deconvnet.engine.rules import pool_switches"),
        ("deconvnet.inputs.images", "from deconvnet import Deconvnet"),
        ("deconvnet.figures.render", "from ..faces import cli"),
        ("deconvnet.storage.paths", "from deconvnet.inputs.reading import read_regular_file"),
    ],
)
def test_the_checker_sees_arrows_that_run_back_up(module, source):
    assert len(violations(module, source)) == 1


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("deconvnet.engine.engine", "from deconvnet.inputs.preprocessing import Preprocessing"),
        ("deconvnet.figures.topk", "from deconvnet.instruments.topk.scan import TopKIndex"),
        ("deconvnet.faces.cli", "from deconvnet import caffe, models"),
        ("deconvnet.inputs.documents", "from deconvnet.storage.paths import inside"),
        ("deconvnet.figures.render", "from . import style"),
        ("deconvnet", "from deconvnet.faces.cli import main"),
    ],
)
def test_the_checker_lets_the_flow_through(module, source):
    assert violations(module, source, is_package=module == "deconvnet") == []


def test_documented_import_paths_still_work():
    """The README's API: the facade, ``images``/``models``, the top-k trio, ``caffe.load``."""
    import deconvnet as dn
    from deconvnet import caffe, datasets, images, models, topk

    assert dn.Deconvnet.project and dn.TopMaps and dn.Projection
    assert callable(images.load_image) and callable(images.preprocess)
    assert callable(models.load) and callable(caffe.load)
    assert callable(datasets.open_dataset)
    assert callable(topk.scan) and callable(topk.project) and callable(topk.render)
