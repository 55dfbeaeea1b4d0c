"""The report's entries for safetensors files: the JSON fields a file gets, and its key tree."""

from __future__ import annotations

from .._read._safetensors import SafetensorsFile

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

__all__ = ["safetensors_entry", "safetensors_tree"]

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
