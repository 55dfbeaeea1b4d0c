"""plan_universal's plan written by the torch-free .pt writer loads as ds_to_universal's own files.

A quick check of the planner's output on the fixture ds_to_universal converted
(`tests/data/fixtures/uc_z2_bf16_ws2/global_step3_universal`): each planned `.pt`, written by
`write_pt` with every storage streamed by export's `tensor_entry`, loads with
`torch.load(weights_only=False)` (DeepSpeed installed for its objects) equal to DeepSpeed's file:
the same keys in order, the same non-tensor values and DeepSpeed objects, every tensor of the same
dtype, shape, stride, offset and bits over a storage of the same size. The full file-for-file
comparison over every save is tests/test_universal_deepspeed.py's.
"""

from __future__ import annotations

import os
import tempfile

import pytest

from ckptkeys import plan_universal
from ckptkeys._export._pt import PtStorage, write_pt
from ckptkeys._export._tensor_bytes import tensor_entry

from .conftest import ROOT

TYPE_CHECKING = False
if TYPE_CHECKING:
    import pathlib
    from typing import Any, BinaryIO

pytestmark = pytest.mark.deepspeed
os.environ.setdefault("DS_ACCELERATOR", "cpu")
torch = pytest.importorskip("torch")
pytest.importorskip("deepspeed")

UC = ROOT / "tests" / "data" / "fixtures" / "uc_z2_bf16_ws2"


def _write_storage(storage: PtStorage, out: BinaryIO) -> None:
    """The storage's bytes as tensor_entry streams them (through a file: it copies in the kernel)."""
    with tempfile.TemporaryFile() as staged:
        tensor_entry(storage.source, lambda _n: None).write(staged)
        staged.seek(0)
        out.write(staged.read())


def _same(mine: Any, theirs: Any, where: str) -> None:
    assert type(mine) is type(theirs), where
    if torch.is_tensor(theirs):
        assert (mine.dtype, mine.shape, mine.stride(), mine.storage_offset()) == (
            theirs.dtype, theirs.shape, theirs.stride(), theirs.storage_offset())  # fmt: skip
        assert bytes(mine.untyped_storage()) == bytes(theirs.untyped_storage()), where
    elif isinstance(theirs, dict):
        assert list(mine) == list(theirs), where
        for key in theirs:
            _same(mine[key], theirs[key], f"{where}[{key!r}]")
    elif isinstance(theirs, (list, tuple)):
        assert len(mine) == len(theirs), where
        for index, (a, b) in enumerate(zip(mine, theirs, strict=True)):
            _same(a, b, f"{where}[{index}]")
    elif type(theirs).__module__.startswith("deepspeed"):
        assert vars(mine) == vars(theirs) if hasattr(theirs, "__dict__") else mine == theirs, where
    else:
        assert mine == theirs, where


@pytest.mark.parametrize("inject", [False, True])
def test_written_plan_loads_as_ds_to_universals_files(inject: bool, tmp_path: pathlib.Path) -> None:
    plan = plan_universal(UC, inject_missing_state=inject)
    written = 0
    for file in plan.files:
        if file.copy_of is not None:
            continue
        target = tmp_path / file.name
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as out:
            write_pt(out, file.content, archive=target.stem, write_storage=_write_storage)
        theirs = torch.load(plan.output + "/" + file.name, weights_only=False)
        _same(torch.load(target, weights_only=False), theirs, file.name)
        written += 1
    assert written == 24
