"""Two universal tags are the same, file for file, as DeepSpeed's loader sees them (needs torch).

``assert_same_universal(ours, theirs)`` takes two universal tag folders (``.../<tag>_universal``)
and asserts: the same tree of folders and file names; the model-states copies byte for byte;
every other ``.pt`` the same zip records (names and order: ``data.pkl``, ``data/N``, ...) and,
loaded with ``torch.load(weights_only=False)``, the same object: the same types, dict keys in
the same order, non-tensor values equal (floats by their bits, so NaN and -0.0 count),
DeepSpeed's objects (``LossScaler``, ``ZeroStageEnum``, ``SubparamShape``) by type and state,
tensors by dtype, shape, stride, storage offset, ``requires_grad``, the bytes of their whole
storage (not ``allclose``) and which tensors share a storage; a file theirs loads with
``weights_only=True`` ours must load so too. ``latest_universal`` beside each folder, where
theirs has one, holds the same text. The first difference raises ``AssertionError`` naming the
file and the path of keys to it. Used by tests/test_universal_deepspeed.py, which also proves
that it fails on a changed bit, a missing file, an extra key and another dtype.
"""

from __future__ import annotations

import dataclasses
import enum
import pathlib
import struct
import zipfile
from typing import Any

import torch

__all__ = ["assert_same_object", "assert_same_universal", "load_pt"]

LATEST_UNIVERSAL = "latest_universal"


def _tree(folder: pathlib.Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() + ("/" if p.is_dir() else "") for p in folder.rglob("*"))


def load_pt(path: pathlib.Path, *, weights_only: bool = False) -> Any:
    """``torch.load`` as DeepSpeed's loader calls it (on the CPU)."""
    return torch.load(path, map_location="cpu", weights_only=weights_only)


def _loads_weights_only(path: pathlib.Path) -> bool:
    try:
        load_pt(path, weights_only=True)
    except Exception:  # the weights-only unpickler refuses a global: UnpicklingError (and friends)
        return False
    return True


def _float_bits(value: float) -> bytes:
    return struct.pack("<d", value)


class _Storages:
    """Storages in first-seen order on each side, so sharing is compared, not just values."""

    def __init__(self) -> None:
        self.ours: dict[tuple[int, int], int] = {}
        self.theirs: dict[tuple[int, int], int] = {}

    @staticmethod
    def _index(seen: dict[tuple[int, int], int], tensor: Any) -> int:
        storage = tensor.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        return seen.setdefault(key, len(seen))

    def same(self, ours: Any, theirs: Any) -> bool:
        return self._index(self.ours, ours) == self._index(self.theirs, theirs)


def _as_bytes(storage: Any) -> Any:
    return torch.empty(0, dtype=torch.uint8).set_(storage)


def _same_tensor(ours: Any, theirs: Any, where: str, storages: _Storages) -> None:
    assert ours.dtype == theirs.dtype, f"{where}: dtype {ours.dtype} != {theirs.dtype}"
    assert tuple(ours.shape) == tuple(theirs.shape), f"{where}: shape {tuple(ours.shape)} != {tuple(theirs.shape)}"
    assert ours.stride() == theirs.stride(), f"{where}: stride {ours.stride()} != {theirs.stride()}"
    assert ours.storage_offset() == theirs.storage_offset(), f"{where}: storage offset differs"
    assert ours.requires_grad == theirs.requires_grad, f"{where}: requires_grad differs"
    assert type(ours) is type(theirs), f"{where}: {type(ours).__name__} != {type(theirs).__name__}"
    mine, other = ours.untyped_storage(), theirs.untyped_storage()
    assert mine.nbytes() == other.nbytes(), f"{where}: storage of {mine.nbytes()} bytes != {other.nbytes()}"
    # Bits, not values (NaN-safe), through a uint8 view: bytes(storage) goes element by element.
    assert torch.equal(_as_bytes(mine), _as_bytes(other)), f"{where}: the bytes differ"
    assert storages.same(ours, theirs), f"{where}: the storage is shared differently"


def _same(ours: Any, theirs: Any, where: str, storages: _Storages) -> None:
    assert type(ours) is type(theirs), f"{where}: {type(ours).__qualname__} != {type(theirs).__qualname__}"
    if isinstance(theirs, torch.Tensor):
        _same_tensor(ours, theirs, where, storages)
    elif isinstance(theirs, dict):
        assert list(ours) == list(theirs), f"{where}: keys {list(ours)} != {list(theirs)}"
        for key, value in theirs.items():
            _same(ours[key], value, f"{where}[{key!r}]", storages)
    elif isinstance(theirs, (list, tuple)):  # torch.Size and named tuples too (their type checked above)
        assert len(ours) == len(theirs), f"{where}: {len(ours)} items != {len(theirs)}"
        for index, (mine, other) in enumerate(zip(ours, theirs)):
            _same(mine, other, f"{where}[{index}]", storages)
    elif isinstance(theirs, float):
        assert _float_bits(ours) == _float_bits(theirs), f"{where}: {ours!r} != {theirs!r}"
    elif isinstance(theirs, enum.Enum):  # ZeroStageEnum
        assert (ours.name, ours.value) == (theirs.name, theirs.value), f"{where}: {ours!r} != {theirs!r}"
    elif isinstance(theirs, (str, bytes, int, bool, type(None), torch.dtype, torch.device)):
        assert ours == theirs, f"{where}: {ours!r} != {theirs!r}"
    elif dataclasses.is_dataclass(theirs) and not hasattr(theirs, "__dict__"):  # a slotted dataclass
        for item in dataclasses.fields(theirs):
            _same(getattr(ours, item.name), getattr(theirs, item.name), f"{where}.{item.name}", storages)
    elif hasattr(theirs, "__dict__"):  # LossScaler, SubparamShape: what BUILD set
        _same(vars(ours), vars(theirs), f"{where}.__dict__", storages)
    else:
        raise AssertionError(f"{where}: no comparison for {type(theirs).__qualname__}")


def assert_same_object(ours: Any, theirs: Any, where: str) -> None:
    """Two loaded objects the same, as above (``where`` names the first difference)."""
    _same(ours, theirs, where, _Storages())


def assert_same_file(ours: pathlib.Path, theirs: pathlib.Path) -> None:
    """One written ``.pt``: records, object, weights-only loading."""
    with zipfile.ZipFile(ours) as mine, zipfile.ZipFile(theirs) as other:
        assert mine.namelist() == other.namelist(), f"{ours}: records {mine.namelist()} != {other.namelist()}"
    _same(load_pt(ours), load_pt(theirs), str(ours), _Storages())
    if _loads_weights_only(theirs):
        assert _loads_weights_only(ours), f"{ours}: torch.load(weights_only=True) refuses it; it takes {theirs}"


def assert_same_universal(ours: pathlib.Path, theirs: pathlib.Path) -> None:
    """``ours`` and ``theirs`` (universal tag folders) are the same for DeepSpeed, file for file."""
    tree = _tree(theirs)
    assert _tree(ours) == tree, f"{ours}: tree {_tree(ours)} != {tree}"
    assert any(name.endswith(".pt") for name in tree), f"{theirs}: no .pt file to compare"
    for name in tree:
        if name.endswith("/"):
            continue
        if "/" not in name and name.endswith("model_states.pt"):  # copied as they were
            assert (ours / name).read_bytes() == (theirs / name).read_bytes(), f"{ours / name}: not a byte copy"
        else:
            assert_same_file(ours / name, theirs / name)
    latest = theirs.parent / LATEST_UNIVERSAL
    if latest.exists():
        mine = ours.parent / LATEST_UNIVERSAL
        assert mine.is_file(), f"{mine}: missing"
        assert mine.read_bytes() == latest.read_bytes(), f"{mine}: {mine.read_bytes()!r} != {latest.read_bytes()!r}"
