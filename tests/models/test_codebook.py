"""The codebook + uint8 form: bit-exact round trips, and corrupt files refused clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from deconvnet.errors import WeightsError
from deconvnet.models import codebook, read_state_dict


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous().view(torch.int32)


def _quantised(shape: tuple[int, ...], codes: int, seed: int = 0) -> torch.Tensor:
    """A tensor drawing its values from ``codes`` random float32 values, many of them zero."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(codes, generator=generator)
    values[0] = 0.0
    picks = torch.randint(0, codes, shape, generator=generator)
    picks[torch.rand(shape, generator=generator) < 0.6] = 0
    return values[picks]


def test_round_trip_is_bit_exact_and_keeps_signed_zeros() -> None:
    weight = _quantised((64, 16, 3, 3), 255)
    weight.view(-1)[:5] = -0.0  # a distinct bit pattern that value comparisons would merge
    state = {"conv.weight": weight, "conv.bias": torch.randn(64)}
    stored = codebook.encode(state)
    assert stored["conv.weight.indices"].dtype == torch.uint8
    assert stored["conv.weight.indices"].shape == weight.shape
    assert stored["conv.weight.codebook"].numel() == _bits(weight).unique().numel()
    assert torch.equal(stored["conv.bias"], state["conv.bias"])  # all distinct: kept as is
    decoded = codebook.decode(stored, source="test")
    assert decoded.keys() == state.keys()
    for key, tensor in state.items():
        assert torch.equal(_bits(decoded[key]), _bits(tensor)), key


def test_a_tensor_with_too_many_values_stays_float32() -> None:
    dense = torch.randn(1000)
    stored = codebook.encode({"w": dense, "steps": torch.arange(3)})
    assert set(stored) == {"w", "steps"}
    assert torch.equal(stored["w"], dense)


def test_encoding_refuses_names_of_the_stored_form() -> None:
    with pytest.raises(WeightsError, match="collides"):
        codebook.encode({"w.indices": torch.zeros(3)})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.pop("w.codebook"), "has no w.codebook"),
        (lambda s: s.pop("w.indices"), "w.codebook has no .indices"),
        (lambda s: s.update({"w.indices": s["w.indices"].long()}), "must be uint8"),
        (lambda s: s.update({"w.codebook": s["w.codebook"].double()}), "1-D float32"),
        (lambda s: s.update({"w.codebook": s["w.codebook"][:3]}), "points past its 3-value"),
    ],
)
def test_inconsistent_pairs_raise_weights_errors(change, message: str) -> None:
    stored = codebook.encode({"w": _quantised((40, 40), 20)})
    change(stored)
    with pytest.raises(WeightsError, match=message):
        codebook.decode(stored, source="file.safetensors")


def test_read_state_dict_decodes_only_files_that_say_so(tmp_path: Path) -> None:
    weight = _quantised((32, 32), 16)
    stored = codebook.encode({"w": weight})
    marked, plain, alien = (tmp_path / f"{name}.safetensors" for name in "mpa")
    save_file(stored, str(marked), metadata={codebook.ENCODING_KEY: codebook.ENCODING})
    save_file(stored, str(plain), metadata={"format": "pt"})  # what other tools write
    save_file(stored, str(alien), metadata={codebook.ENCODING_KEY: "codebook-uint4"})
    assert torch.equal(read_state_dict(marked)["w"], weight)
    assert set(read_state_dict(plain)) == {"w.codebook", "w.indices"}
    with pytest.raises(WeightsError, match="stored as 'codebook-uint4'"):
        read_state_dict(alien)


def test_truncated_safetensors_file_is_a_weights_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.safetensors"
    save_file(codebook.encode({"w": _quantised((64, 64), 8)}), str(path))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(WeightsError, match=r"cannot read .* as safetensors"):
        read_state_dict(path)
