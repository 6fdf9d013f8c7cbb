"""Fig. 2 sheets: tiles where the index says, atomic files, the old sheet kept on failure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deconvnet import topk
from tests import _datasets, _nets


def test_render_writes_sheets_tiles_and_index_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    array_data = _datasets.tie_images(tmp_path)
    net = _nets.float_net()
    index = topk.scan(net, array_data, ["0", "3"], k=3, maps=[1, 4])
    projections = topk.project(index, net, array_data)
    out = tmp_path / "out"
    result = topk.render(index, projections, out, tile=16, metadata={"model": "float_net"})
    document = json.loads(result.index_file.read_text())
    assert document["metadata"] == {"model": "float_net"}
    assert len(document["entries"]) == len(projections) == 2 * 2 * 3
    first = document["entries"][0]
    key = (first["layer"], first["map"], first["rank"])
    assert first["value"] == projections[key].entry.value
    assert first["crop_box"] == list(projections[key].crop_box)
    assert first["image"] == array_data.name(first["image_id"])
    sheet = np.asarray(Image.open(result.sheets["3"]))
    for entry in document["entries"]:
        tile = np.asarray(Image.open(out / entry["patch_file"]))
        top, left, bottom, right = entry["sheet_patch_box"]
        if entry["layer"] == "3":
            np.testing.assert_array_equal(sheet[top:bottom, left:right], tile)
    assert not list(out.rglob("*.tmp"))
    before = result.sheets["0"].read_bytes()

    def broken_save(self, handle, *args, **kwargs) -> None:
        handle.write(b"half a png")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        topk.render(index, projections, out, tile=20)
    assert result.sheets["0"].read_bytes() == before
    assert not list(out.rglob("*.tmp"))
