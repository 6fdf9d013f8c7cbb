"""Weights files that torch would load with a traceback, a warning or a silent cast
(issue 11, point 8): each is refused in one line before anything is copied or allocated."""

from __future__ import annotations

import io
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import deconvnet.models as zoo
from deconvnet.errors import WeightsError
from deconvnet.faces.cli import main
from deconvnet.models import state_dicts

MODEL = "default"  # the embedded CIFAR-10 net: 0.3 M parameters, no download
KEY = "features.0.weight"


def _state() -> dict[str, torch.Tensor]:
    return zoo.load(MODEL, weights="random", seed=0).state_dict()


def _saved(path: Path, state: dict[object, object]) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation notes for quantized/sparse
        torch.save(state, path)
    return path


def _quantized(t: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.quantize_per_tensor(t, 0.1, 0, torch.qint8)


def _with_nan(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[7] = float("nan")
    return t


BAD_TENSORS: list[tuple[str, Callable[[torch.Tensor], torch.Tensor], str]] = [
    ("meta", lambda t: torch.empty(t.shape, device="meta"), "is a meta tensor"),
    ("sparse", lambda t: t.to_sparse(), "is sparse_coo (sparse), not dense"),
    ("quantized", _quantized, "is quantized"),
    ("complex", lambda t: t.to(torch.complex64), "is complex (torch.complex64)"),
    ("bool", lambda t: t > 0, "is torch.bool, the model holds torch.float32 (no silent cast)"),
    ("int64", lambda t: t.long(), "is torch.int64, the model holds torch.float32"),
    ("nan", _with_nan, "holds NaN or infinite values"),
    ("inf", lambda t: t / 0, "holds NaN or infinite values"),
]


@pytest.mark.parametrize(("kind", "change", "reason"), BAD_TENSORS, ids=lambda v: str(v)[:9])
def test_unusable_tensors_are_refused(
    tmp_path: Path, kind: str, change: Callable[[torch.Tensor], torch.Tensor], reason: str
) -> None:
    state: dict[object, object] = dict(_state())
    state[KEY] = change(state[KEY])  # type: ignore[arg-type]
    path = _saved(tmp_path / f"{kind}.pth", state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.load's own notes on old storage types
        warnings.filterwarnings("error", "Casting complex")  # complex used to load with this
        with pytest.raises(WeightsError) as caught:
            zoo.load(MODEL, weights=path)
    message = str(caught.value)
    assert f"unusable tensors [{KEY} {reason}" in message and "\n" not in message


def test_a_failed_apply_leaves_the_model_as_it_was() -> None:
    model = zoo.load(MODEL, weights="random", seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = _state()
    state["classifier.1.bias"] = state["classifier.1.bias"].long()
    with pytest.raises(WeightsError):
        zoo.apply_state_dict(model, state, source="test")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_float_into_an_integer_buffer_is_refused() -> None:
    model = nn.BatchNorm2d(3)
    state = model.state_dict()
    state["num_batches_tracked"] = torch.tensor(2.5)
    with pytest.raises(WeightsError, match=r"num_batches_tracked is torch.float32, the model"):
        zoo.apply_state_dict(model, state, source="bn.pth")


def test_integer_keys_are_named_not_a_type_error(tmp_path: Path) -> None:
    values = list(_state().values())
    path = _saved(tmp_path / "numbered.pth", dict(enumerate(values)))
    with pytest.raises(WeightsError) as caught:
        zoo.load(MODEL, weights=path)
    message = str(caught.value)
    assert "unexpected keys [0 (a int, not a name), 1 (a int, not a name)" in message
    assert f"missing keys [{KEY}" in message


def test_wrong_keys_are_one_line_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state: dict[object, object] = {f"renamed.{k}": v for k, v in _state().items()}
    path = _saved(tmp_path / "renamed.pth", state)
    assert main(["layers", "--weights", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("deconvnet: error: ") and len(err.splitlines()) == 1
    assert "Error(s) in loading state_dict" not in err and "missing keys" in err


def _bomb(path: Path, unpacked: int) -> Path:
    """A valid torch zip whose data member deflates ``unpacked`` zero bytes (~1000:1)."""
    buffer = io.BytesIO()
    _saved(buffer, _state())  # type: ignore[arg-type]
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as source:
        members = [(info, source.read(info)) for info in source.infolist()]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as bomb:
        for info, data in members:
            bomb.writestr(info, data)
        chunk = bytes(1 << 20)
        with bomb.open("archive/data/bomb", "w", force_zip64=True) as member:
            for _ in range(unpacked >> 20):
                member.write(chunk)
    return path


def test_a_zip_bomb_is_refused_before_torch_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _bomb(tmp_path / "bomb.pth", 64 << 20)
    budget = state_dicts.archive_budget(zoo.load(MODEL, weights="random"))
    assert path.stat().st_size < 2 << 20 < budget < 64 << 20  # small file, over the budget

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load was reached")

    monkeypatch.setattr(state_dicts.torch, "load", must_not_run)
    with pytest.raises(WeightsError, match=r"would unpack to 6[0-9]{7} bytes, over the"):
        zoo.load(MODEL, weights=path)


def test_the_budget_lets_real_files_through(tmp_path: Path) -> None:
    """A checkpoint with an optimiser's state (3x the weights) is within 4x + 16 MiB."""
    state = _state()
    moments = {f"{k}.{m}": v.clone() for k, v in state.items() for m in ("exp_avg", "exp_sq")}
    path = _saved(tmp_path / "ckpt.pth", {"state_dict": state, **moments})
    loaded = zoo.load(MODEL, weights=path)
    assert all(torch.equal(state[k], v) for k, v in loaded.state_dict().items())


def test_the_old_pickle_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "old.pth"
    torch.save(_state(), path, _use_new_zipfile_serialization=False)
    with pytest.raises(WeightsError, match=r"not a zip archive .*re-save old files"):
        zoo.load(MODEL, weights=path)
