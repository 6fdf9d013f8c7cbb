"""Fixtures of the model tests: torch's hub cache in a temporary folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture
def hub_dir(tmp_path: Path) -> Iterator[Path]:
    """Point torch's hub cache at a temporary folder for the test; its checkpoints folder."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        yield tmp_path / "hub" / "checkpoints"
    finally:
        torch.hub.set_dir(previous)
