"""``deconvnet models``: table and JSON list every model and weight set as the zoo has them."""

from __future__ import annotations

import json

from deconvnet import models
from deconvnet.faces.cli import build_parser, main
from deconvnet.faces.cli._model import load_model
from deconvnet.models.squeezenet import DEEP_COMPRESSION_SHA256


def _table(capsys) -> list[list[str]]:
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["model", "weights", "input", "licence", "source", "description"]
    return [line.split("  ") for line in lines[1:]]


def _cells(row: list[str]) -> list[str]:
    return [cell.strip() for cell in row if cell.strip()]


def test_table_has_a_row_per_weight_set(capsys) -> None:
    rows = _table(capsys)
    expected = sum(max(1, len(models.info(name).weights)) for name in models.names())
    assert len(rows) == expected
    first_rows = [row[0].strip() for row in rows if row[0].strip()]
    assert first_rows == models.names()


def test_table_names_licence_size_and_source(capsys) -> None:
    rows = [_cells(row) for row in _table(capsys)]
    assert ["deep-compression", "227x227", "BSD-2-Clause", "embedded"] in rows
    squeezenet = next(row for row in rows if row[0] == "squeezenet1_0")
    assert squeezenet[1:5] == ["imagenet", "224x224", "BSD-3-Clause", "download"]
    default = next(row for row in rows if row[0] == "default")
    assert default[1:5] == ["cifar10 (default)", "32x32", "MIT", "embedded"]
    zfnet = next(row for row in rows if row[0] == "zfnet")
    assert zfnet[1:5] == ["none (random init)", "224x224", "-", "-"]
    assert not any("``" in cell for row in rows for cell in row)


def test_json_matches_the_registry(capsys) -> None:
    assert main(["models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["models"]
    assert [entry["name"] for entry in listed] == models.names()
    for entry in listed:
        spec = models.info(entry["name"])
        assert entry["input_size"] == list(spec.preprocessing.input_size)
        assert entry["default_weights"] == spec.default_weights
        assert [w["name"] for w in entry["weights"]] == [w.name for w in spec.weights]
        for record, weights in zip(entry["weights"], spec.weights, strict=True):
            assert record["licence"] == weights.licence
            assert record["embedded"] == (weights.url is None) == (record["url"] is None)
    squeezenet = next(entry for entry in listed if entry["name"] == "squeezenet1_0")
    embedded = {w["name"]: w["embedded"] for w in squeezenet["weights"]}
    assert embedded == {"imagenet": False, "deep-compression": True}
    deep = squeezenet["weights"][1]
    assert deep["input_size"] == [227, 227] and deep["sha256"] == DEEP_COMPRESSION_SHA256


def test_a_named_embedded_set_records_its_digest() -> None:
    args = build_parser().parse_args(
        ["layers", "--model", "squeezenet1_0", "--weights", "deep-compression"]
    )
    loaded = load_model(args)
    provenance = loaded.provenance()
    assert {k: provenance[k] for k in ("model", "weights", "weights_sha256")} == {
        "model": "squeezenet1_0",
        "weights": "deep-compression",
        "weights_sha256": DEEP_COMPRESSION_SHA256,
    }
    assert provenance["preprocessing"]["channel_order"] == "BGR"
    assert provenance["preprocessing_flags"] == {}
    random_init = load_model(build_parser().parse_args(["layers", "--model", "zfnet"]))
    assert random_init.provenance()["weights_sha256"] is None
