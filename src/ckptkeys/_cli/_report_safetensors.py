"""The report's entries for safetensors files and weights folders: the JSON fields, and the key trees."""

from __future__ import annotations

import os

from .._check._weights_folders import WeightsFolderReport
from .._read._reader import Checkpoint
from .._read._safetensors import SafetensorsFile

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Final

__all__ = ["safetensors_entry", "safetensors_tree", "weights_document"]

# Lines of a tree before "... N more", as the key trees of torch files.
_SHOWN: Final = 50


def _by_dtype(file: SafetensorsFile) -> dict[str, dict[str, int]]:
    totals: dict[str, dict[str, int]] = {}
    for tensor in file.tensors:
        entry = totals.setdefault(tensor.dtype, {"count": 0, "numel": 0, "bytes": 0})
        entry["count"] += 1
        entry["numel"] += tensor.numel
        entry["bytes"] += tensor.nbytes
    return dict(sorted(totals.items()))


def safetensors_entry(file: SafetensorsFile, relpath: str) -> dict[str, Any]:
    """A safetensors file as ``files[]`` shows it: the fields of a torch file's entry that apply,
    ``format`` ``"safetensors"``, and ``safetensors`` (the header: size, metadata, every tensor)."""
    return {
        "path": file.path,
        "relpath": relpath,
        "kind": None,
        "format": "safetensors",
        "size": file.size,
        "readable": True,
        "top_level_keys": [t.name for t in file.tensors],
        "globals": [],
        "tensors": _by_dtype(file),
        "safetensors": {
            "header_size": file.header_size,
            "metadata": file.metadata,
            "tensors": [
                {"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "data_offsets": list(t.data_offsets)}
                for t in file.tensors
            ],
        },
    }


def safetensors_tree(file: SafetensorsFile, depth: int) -> list[str]:
    """The text form's lines: the metadata, then each tensor's name, dtype and shape (in the header's order)."""
    if depth <= 0:
        return []
    lines = [f"__metadata__: {key}={value!r:.60}" for key, value in (file.metadata or {}).items()]
    for index, tensor in enumerate(file.tensors):
        if index >= _SHOWN:
            lines.append(f"... {len(file.tensors) - _SHOWN} more (--json lists every one)")
            break
        lines.append(f"{tensor.name}: {tensor.dtype}{list(tensor.shape)}")
    return lines


def weights_document(
    report: WeightsFolderReport,
    depth: int,
    torch_file: Callable[[Checkpoint, str, int], tuple[dict[str, Any], list[str]]],
) -> dict[str, Any]:
    """A weights folder's fields of the document: ``files`` (each weight file read), ``weights``
    (each index: name, ``total_size``, metadata, tensor and shard counts), ``problems``, and the
    files' trees for the text form. ``torch_file`` makes a torch file's entry and tree."""
    files = []
    trees: dict[str, list[str]] = {}
    for name, file in report.files.items():
        if isinstance(file, SafetensorsFile):
            entry, tree = safetensors_entry(file, name), safetensors_tree(file, depth)
        else:
            entry, tree = torch_file(file, name, depth)
        files.append(entry)
        trees[name] = tree
    indexes = [
        {
            "name": index.name,
            "path": os.path.join(report.path, index.name),
            "total_size": index.total_size,
            "metadata": index.metadata,
            "tensors": len(index.weight_map),
            "shards": list(dict.fromkeys(index.weight_map.values())),
        }
        for index in report.indexes
    ]
    return {
        "files": files,
        "weights": {"indexes": indexes, "size": sum(f["size"] for f in files)},
        "problems": [
            {"severity": str(p.severity), "code": p.code, "file": p.file, "key_path": p.key_path, "message": p.message}
            for p in report.problems
        ],
        "_trees": trees,
    }
