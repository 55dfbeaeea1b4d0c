"""read() agrees with torch.load(weights_only=False) on every test file (needs torch and DeepSpeed).

The same keys at every level and in the same order, equal scalars and strings, each tensor's
dtype, shape, stride, offset and Parameter-ness, and for every other object its class, its
constructor arguments (enums) and its state (``__dict__``).
"""

from __future__ import annotations

import enum
import os
import pathlib
from collections import OrderedDict
from typing import Any

import pytest

import ckptkeys
from ckptkeys import GlobalRef, Opaque, TensorInfo

from .conftest import DATA

pytestmark = pytest.mark.deepspeed

os.environ.setdefault("DS_ACCELERATOR", "cpu")
torch = pytest.importorskip("torch")
pytest.importorskip("deepspeed")

# Never tests/data/malicious: torch.load(weights_only=False) would run those payloads.
FILES = sorted(path for folder in ("fixtures", "torch", "broken") for path in (DATA / folder).glob("**/*.pt"))


def _same(ours: Any, theirs: Any, where: str) -> None:
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, TensorInfo), where
        assert f"torch.{ours.dtype}" == str(theirs.dtype), where
        assert ours.shape == tuple(theirs.shape), where
        assert ours.device == str(theirs.device), where
        if ours.storage is not None:
            assert ours.stride == theirs.stride(), where
            assert ours.storage_offset == theirs.storage_offset(), where
        assert ours.is_parameter == isinstance(theirs, torch.nn.Parameter), where
        assert ours.requires_grad == theirs.requires_grad, where
    elif isinstance(theirs, torch.Size):
        assert ours == tuple(theirs) and type(ours) is tuple, where
    elif isinstance(theirs, torch.dtype):
        assert isinstance(ours, GlobalRef) and f"{ours.module}.{ours.name}" == str(theirs), where
    elif isinstance(theirs, dict):
        assert type(ours) is type(theirs), where
        assert list(ours) == list(theirs), where
        for key in theirs:
            _same(ours[key], theirs[key], f"{where}/{key}")
        if type(theirs) is OrderedDict and hasattr(theirs, "_metadata"):
            assert vars(ours)["_metadata"] == theirs._metadata, where
    elif isinstance(theirs, (list, tuple)) and type(theirs) in (list, tuple):
        assert type(ours) is type(theirs) and len(ours) == len(theirs), where
        for index, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            _same(a, b, f"{where}[{index}]")
    elif isinstance(theirs, enum.Enum):  # before int: DeepSpeed's ZeroStageEnum is an int enum
        assert isinstance(ours, Opaque), where
        assert ours.qualname == f"{type(theirs).__module__}.{type(theirs).__qualname__}", where
        assert ours.args == (theirs.value,), where
    elif isinstance(theirs, (str, bytes, int, float, bool, type(None), set, frozenset, complex)):
        assert ours == theirs and type(ours) is type(theirs), where
    else:
        assert isinstance(ours, Opaque), (where, ours, theirs)
        cls = type(theirs)
        assert ours.qualname == f"{cls.__module__}.{cls.__qualname__}", where
        assert isinstance(ours.state, dict), where
        assert sorted(ours.state) == sorted(vars(theirs)), where
        for key, value in vars(theirs).items():
            _same(ours.state[key], value, f"{where}.{key}")


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(DATA)))
def test_read_agrees_with_torch_load(path: pathlib.Path) -> None:
    theirs = torch.load(path, weights_only=False, map_location="cpu")
    ours = ckptkeys.read(path)
    _same(ours.data, theirs, path.name)


def test_globals_are_what_weights_only_refuses() -> None:
    path = DATA / "fixtures" / "z1_fp16_ws2" / "global_step3" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    with pytest.raises(Exception, match="Unsupported global") as info:
        torch.load(path, weights_only=True)
    named = {ref.qualname for ref in ckptkeys.read(path).globals}
    refused = str(info.value).split("Unsupported global: GLOBAL ")[1].split(" ")[0]
    assert refused in named
