"""Universal plans made by hand over a tag's real storage records, for the writer's tests.

:func:`hand_plan` turns every storage record of a tag's ``.pt`` files into an
:class:`~ckptkeys._export._types.ExportTensor` covering it whole (its real byte span, read
from the zip as export reads it), deals them out to made-up parameters (``p0``, ``p1``, ...)
as ``zero/<param>/fp32.pt``, ``exp_avg.pt`` and ``step.pt``, adds a ``zero/optimizer_state.pt``
and byte copies of the model-states files: the shape of what ``plan_universal`` plans, without
depending on it, so the writer's staging, publishing, job arrays and refusals are tested on
their own. :func:`expected_values` says which source bytes each written tensor must hold.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import ckptkeys
from ckptkeys._export._pt import PtStorage, PtTensor
from ckptkeys._export._spans import record_spans
from ckptkeys._export._types import ExportTensor
from ckptkeys._universal._types import LATEST_UNIVERSAL, UNIVERSAL_SUFFIX, UniversalFile, UniversalPlan


def _tensors(tag: pathlib.Path) -> list[ExportTensor]:
    """One ExportTensor per storage record of every .pt file of ``tag``, covering it whole."""
    found = []
    for path in sorted(tag.glob("*.pt")):
        checkpoint = ckptkeys.read(path)
        spans = record_spans(checkpoint)
        for key, storage in sorted(checkpoint.storages.items(), key=lambda item: (len(item[0]), item[0])):
            found.append(
                ExportTensor(
                    name=f"{path.name}/{key}",
                    shape=(storage.numel,),
                    dtype=storage.dtype,
                    source_dtype=storage.dtype,
                    sources=(spans[key],),
                    origin="trainable",
                )
            )
    return found


def _bare(tensor: ExportTensor) -> PtTensor:
    return PtTensor(PtStorage(tensor.dtype, tensor.numel, tensor), tensor.shape)


def hand_plan(
    tag: pathlib.Path, output: pathlib.Path | None = None, *, params: int = 4, inject_missing_state: bool = False
) -> UniversalPlan:
    """A plan writing ``tag``'s storage records as ``params`` parameters' files, plus an optimizer
    state and copies of the model-states files; output ``<tag>_universal`` beside it by default."""
    out = output if output is not None else tag.parent / f"{tag.name}{UNIVERSAL_SUFFIX}"
    tensors = _tensors(tag)
    assert len(tensors) >= params, f"{tag}: {len(tensors)} storage records for {params} parameters"
    files: list[UniversalFile] = []
    for i in range(params):
        name = f"p{i}"
        mine = tensors[i::params]
        for state, tensor in zip(("fp32", "exp_avg", "exp_avg_sq"), mine, strict=False):
            content = {"param": _bare(tensor), "cat_dim": 0}
            files.append(UniversalFile(f"zero/{name}/{state}.pt", name, None, tensor.nbytes, content))
        files.append(UniversalFile(f"zero/{name}/step.pt", name, None, mine[-1].nbytes, _bare(mine[-1])))
    shared = _bare(tensors[0])  # one storage twice in one file: written once
    optimizer = {"ds_version": "0.19.8", "param_groups": [{"lr": 0.001, "params": list(range(params))}],
                 "shared": [shared, shared]}  # fmt: skip
    files.append(UniversalFile("zero/optimizer_state.pt", None, None, tensors[0].nbytes, optimizer))
    for path in sorted(tag.glob("*model_states.pt")):
        files.append(UniversalFile(path.name, None, str(path), path.stat().st_size))
    return UniversalPlan(
        checkpoint=str(tag),
        tag=tag.name,
        output=str(out),
        latest=str(out.parent / LATEST_UNIVERSAL),
        layout="zero-1/2",
        zero_stage=2,
        files=tuple(files),
        inject_missing_state=inject_missing_state,
    )


def source_bytes(tensor: ExportTensor) -> bytes:
    """The bytes the writer must stream for ``tensor`` (no cast in these plans)."""
    data = b""
    for span in tensor.sources:
        with open(span.path, "rb") as stream:
            stream.seek(span.offset)
            data += stream.read(span.length)
    return data


def expected_values(plan: UniversalPlan) -> dict[str, Any]:
    """Each written file's content with every tensor replaced by its bytes: what torch.load must give."""

    def values(obj: Any) -> Any:
        if isinstance(obj, PtTensor):
            return (obj.storage.dtype, list(obj.shape), source_bytes(obj.storage.source))
        if isinstance(obj, dict):
            return {key: values(value) for key, value in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [values(item) for item in obj]
        return obj

    return {f.name: values(f.content) for f in plan.files if f.copy_of is None}


def loaded_values(path: str | os.PathLike[str]) -> Any:
    """A written file loaded with torch, every tensor as (dtype, shape, bytes): needs torch."""
    import torch

    def values(obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            raw = obj.contiguous().view(torch.uint8) if obj.numel() else obj.new_empty(0, dtype=torch.uint8)
            return (str(obj.dtype).removeprefix("torch."), list(obj.shape), bytes(raw.numpy().tobytes()))
        if isinstance(obj, dict):
            return {key: values(value) for key, value in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [values(item) for item in obj]
        return obj

    return values(torch.load(path, weights_only=True))
