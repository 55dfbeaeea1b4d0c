"""What ``ckptkeys inspect`` and ``ckptkeys validate`` report: one JSON-able document.

The JSON document is documented in ``docs/cli.md``; ``SCHEMA_VERSION`` changes only when a
field is removed or changes meaning. Its text form is ``_report_text``'s job.
"""

from __future__ import annotations

import os

from .._check._converters import Verdict
from .._check._entry import validate_path
from .._check._layout import LayoutFile, TagLayout
from .._check._problems import Problem
from .._check._reports import FileReport, RunReport, TagReport, ValidationReport
from .._check._safetensors_files import SafetensorsReport
from .._check._security import read_error_problems
from .._check._select import Selection
from .._check._validate import moe_info
from .._check._weights_folders import WeightsFolderReport
from .._keys._registry import ModuleKeys
from .._read._errors import ReadError
from .._read._globalref import GlobalRef
from .._read._globals import classify, explain
from .._read._pickle import Opaque
from .._read._reader import Checkpoint
from .._read._torch import TensorInfo, tensors_in
from ..naming import FileKind
from ._report_safetensors import safetensors_entry, safetensors_tree, weights_document

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from typing import Any, Final

__all__ = ["SCHEMA_VERSION", "build_report", "read_error"]


def _global(ref: GlobalRef) -> dict[str, Any]:
    """A global as the JSON shows it: the name torch resolves, its class, and why."""
    written = f"{ref.written[0]}.{ref.written[1]}" if ref.written else None
    return {"name": ref.qualname, "class": classify(ref), "written": written, "explanation": explain(ref)}


SCHEMA_VERSION: Final = 1

# -- structure --------------------------------------------------------------------------------------


def _describe(value: Any) -> str:
    if isinstance(value, TensorInfo):
        kind = "Parameter" if value.is_parameter else "Tensor"
        return f"{kind}[{value.dtype}, {list(value.shape)}]"
    if isinstance(value, Opaque):
        args = ", ".join(repr(a) for a in value.args[:3] if isinstance(a, (int, float, str, bool)))
        return f"{value.qualname}({args})"
    if isinstance(value, GlobalRef):
        return value.qualname
    if isinstance(value, dict):
        return f"{type(value).__name__}[{len(value)}]"
    if isinstance(value, (list, tuple, set, frozenset)):
        return f"{type(value).__name__}[{len(value)}]"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _tree(value: Any, depth: int, indent: str = "") -> Iterator[str]:
    if depth <= 0:
        return
    if isinstance(value, Opaque) and isinstance(value.state, dict):
        value = value.state
    if not isinstance(value, dict):
        return
    for index, (key, item) in enumerate(value.items()):
        if index >= 50:
            yield f"{indent}... {len(value) - 50} more"
            break
        yield f"{indent}{key}: {_describe(item)}"
        yield from _tree(item, depth - 1, indent + "  ")


def _file_tree(data: Any, depth: int) -> list[str]:
    """A file's key tree; a file that holds no dict (a tensor, a list) is one line saying what it holds."""
    lines = list(_tree(data, depth))
    if lines or depth <= 0 or isinstance(data, dict) or (isinstance(data, Opaque) and isinstance(data.state, dict)):
        return lines
    return [_describe(data)]


def _tensors(value: Any) -> Iterator[TensorInfo]:
    return (tensor for _, tensor in tensors_in(value))


def _by_dtype(tensors: Iterator[TensorInfo]) -> dict[str, dict[str, int]]:
    totals: dict[str, dict[str, int]] = {}
    for tensor in tensors:
        entry = totals.setdefault(tensor.dtype, {"count": 0, "numel": 0, "bytes": 0})
        entry["count"] += 1
        entry["numel"] += tensor.numel
        entry["bytes"] += tensor.nbytes
    return dict(sorted(totals.items()))


def _parameter_count(tag: TagLayout) -> int | None:
    """Parameters of the model: param_shapes (+ frozen) under ZeRO, else the module's tensors."""
    for file in tag.of_kind(FileKind.MODEL_STATES, FileKind.ZERO3_MODEL_STATES):
        checkpoint = tag.checkpoints.get(file.relpath)
        state = checkpoint.data if checkpoint else None
        if not isinstance(state, dict):
            continue
        shapes = state.get(ModuleKeys.PARAM_SHAPES)
        if isinstance(shapes, list):
            total = 0
            for group in shapes:
                for shape in group.values() if isinstance(group, dict) else ():
                    total += _numel(shape)
            frozen = state.get(ModuleKeys.FROZEN_PARAM_SHAPES)
            for shape in frozen.values() if isinstance(frozen, dict) else ():
                total += _numel(shape)
            return total * (tag.mp_world_size or 1) if file.name.kind is FileKind.MODEL_STATES else total
        module = state.get(ModuleKeys.MODULE)
        if isinstance(module, dict):
            buffers = state.get(ModuleKeys.BUFFER_NAMES)
            skip = set(buffers) if isinstance(buffers, list) else set()
            return sum(t.numel for k, t in module.items() if isinstance(t, TensorInfo) and k not in skip)
    return None


def _numel(shape: Any) -> int:
    total = 1
    for n in shape if isinstance(shape, (tuple, list)) else ():
        total *= n if type(n) is int else 0
    return total


# -- the report --------------------------------------------------------------------------------------


def _problem(problem: Problem) -> dict[str, Any]:
    return {
        "severity": str(problem.severity),
        "code": problem.code,
        "file": problem.file,
        "key_path": problem.key_path,
        "message": problem.message,
    }


def _file(file: LayoutFile, checkpoint: Checkpoint | None, error: ReadError | None = None) -> dict[str, Any]:
    name = file.name
    entry: dict[str, Any] = {
        "path": file.path,
        "relpath": file.relpath,
        "kind": name.kind.value,
        "mp_rank": name.mp_rank,
        "dp_rank": name.dp_rank,
        "layer": name.layer,
        "expert": name.expert,
        "ep_rank": name.ep_rank,
        "precision": name.precision,
        "param": name.param,
        "state": name.state,
        "size": file.size,
        "readable": checkpoint is not None,
        "top_level_keys": None,
        "globals": None,
        "tensors": None,
    }
    if checkpoint is not None:
        data = checkpoint.data
        entry["top_level_keys"] = [str(k) for k in data] if isinstance(data, dict) else None
        entry["globals"] = [_global(ref) for ref in checkpoint.globals]
        entry["tensors"] = _by_dtype(_tensors(data))
    elif error is not None and error.globals:  # torch.load would import these before failing
        entry["globals"] = [_global(ref) for ref in error.globals]
    return entry


def _verdict(verdict: Verdict) -> dict[str, Any]:
    safe = verdict.safe_serialization
    return {
        "ready": verdict.ready,
        "applicable": verdict.applicable,
        "code": verdict.code,
        "reason": verdict.reason,
        "safe_serialization": None if safe is None else _verdict(safe),
    }


def _trees(tag: TagLayout, depth: int) -> dict[str, list[str]]:
    """Key trees of one readable file of each kind: what the text form shows."""
    trees: dict[str, list[str]] = {}
    kinds: set[FileKind] = set()
    for file in tag.files:
        checkpoint = tag.checkpoints.get(file.relpath)
        if checkpoint is not None and file.name.kind not in kinds:
            kinds.add(file.name.kind)
            trees[file.relpath] = list(_tree(checkpoint.data, depth))
    return trees


def _tag(report: TagReport, depth: int) -> dict[str, Any]:
    tag = report.layout
    files = [_file(f, tag.checkpoints.get(f.relpath), tag.read_errors.get(f.relpath)) for f in tag.files]
    tensors = _by_dtype(t for c in tag.checkpoints.values() for t in _tensors(c.data))
    return {
        "name": tag.name,
        "path": tag.path,
        "universal": tag.universal,
        "zero_stage": tag.zero_stage,
        "precision": tag.precision,
        "dp_world_size": tag.dp_world_size,
        "mp_world_size": tag.mp_world_size,
        "pp_world_size": tag.pp_world_size,
        "tp_world_size": tag.tp_world_size,
        "parameters": _parameter_count(tag),
        "moe": moe_info(tag),
        "tensors": tensors,
        "size": sum(f.size for f in tag.files),
        "files": files,
        "other_files": list(tag.other_files),
        "problems": [_problem(p) for p in report.problems],
        "converters": {name: _verdict(v) for name, v in report.converters.items()},
        "_trees": _trees(tag, depth),
    }


def build_report(
    path: str,
    command: str,
    *,
    depth: int = 1,
    save: str | None = None,
    all_saves: bool = False,
    progress: Callable[[int, int], None] | None = None,
    selection: Selection | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report on ``path`` (a run, a save folder, a tag folder or one file), from :func:`validate_path`,
    with the problems ``selection`` shows (``Selection.report``; the default: every one).
    ``path`` may be a URL (``storage_options`` for its filesystem): the report is the local copy's,
    every path a URL.

    Raises ReadError if PATH is unreadable or holds no checkpoint, KeyError for a ``save`` the
    run does not have, ValueError for ``save``/``all_saves`` on something that is not a run.
    Keys starting with ``_`` are for the text form only (key trees, whether the selection
    fails) and are not part of the JSON.
    """
    selection = selection or Selection()
    unselected = validate_path(path, save=save, all_saves=all_saves, progress=progress, storage_options=storage_options)
    result = selection.report(unselected)
    hidden = len(unselected.all_problems) - len(result.all_problems)
    if isinstance(result, RunReport):
        reported = {report.layout.path: _folder(report, depth) for report in result.saves}
        run = result.run
        document: dict[str, Any] = _document(command, path, "run")
        document.update(
            {
                "framework": run.framework,
                "framework_files": list(run.framework_files),
                "saves": [
                    {"name": s.name, "path": s.path, "step": s.step, "report": reported.get(s.path)} for s in run.saves
                ],
            }
        )
        document["problems"] = [_problem(p) for p in run.problems]
        all_problems = document["problems"] + [p for r in reported.values() for p in _problems(r)]
    elif isinstance(result, ValidationReport):
        document = _document(command, path, result.layout.kind)
        document.update(_folder(result, depth))
        all_problems = _problems(document)
    elif isinstance(result, WeightsFolderReport):
        document = _document(command, path, "weights")
        document.update(weights_document(result, depth, _weights_file))
        all_problems = document["problems"]
    elif isinstance(result, SafetensorsReport):
        document = _document(command, path, "file")
        document["files"] = [safetensors_entry(result.file, os.path.basename(path))]
        document["problems"] = [_problem(p) for p in result.problems]
        document["_trees"] = {os.path.basename(path): safetensors_tree(result.file, depth)}
        all_problems = document["problems"]
    else:
        document = _document(command, path, "file")
        document["files"] = [_single_file(result)]
        document["problems"] = [_problem(p) for p in result.problems]
        document["_trees"] = {os.path.basename(path): _file_tree(result.checkpoint.data, depth)}
        all_problems = document["problems"]
    document["summary"] = {
        severity: sum(p["severity"] == severity for p in all_problems) for severity in ("error", "warning", "info")
    }
    document["summary"]["hidden"] = hidden
    document["selection"] = {
        "select": None if selection.select is None else list(selection.select),
        "ignore": list(selection.ignore),
        "fail_on": selection.fail_on,
        "require": list(selection.require),
    }
    document["_failed"] = selection.fails(result.all_problems)
    return document


def _document(command: str, path: str, kind: str) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "path": path,
        "kind": kind,
        "framework": None,
        "framework_files": [],
        "latest": None,
        "latest_universal": None,
        "saves": None,
        "tags": [],
        "files": [],
        "problems": [],
    }


def _folder(result: ValidationReport, depth: int) -> dict[str, Any]:
    """A save or tag folder: the top-level document's fields, or one save of a run."""
    layout = result.layout
    return {
        "path": layout.path,
        "kind": layout.kind,
        "framework": layout.framework,
        "framework_files": list(layout.framework_files),
        "latest": layout.latest,
        "latest_universal": layout.latest_universal,
        "tags": [_tag(t, depth) for t in result.tags],
        "problems": [_problem(p) for p in result.problems],
    }


def _problems(document: dict[str, Any]) -> list[dict[str, Any]]:
    problems: list[dict[str, Any]] = document["problems"] + [p for t in document["tags"] for p in t["problems"]]
    return problems


def read_error(error: ReadError) -> dict[str, Any]:
    """What a file that could not be read still tells: the problem's code and the globals named before."""
    problems = read_error_problems(error.path, error)
    return {"code": problems[0].code, "globals": [_global(ref) for ref in error.globals]}


def _weights_file(checkpoint: Checkpoint, relpath: str, depth: int) -> tuple[dict[str, Any], list[str]]:
    """A torch weight file of a weights folder: its entry and key tree, as a single file's."""
    entry = {
        "path": checkpoint.path,
        "relpath": relpath,
        "kind": None,
        "format": checkpoint.format,
        "size": checkpoint.size,
        "readable": True,
        "top_level_keys": [str(k) for k in checkpoint.data] if isinstance(checkpoint.data, dict) else None,
        "globals": [_global(r) for r in checkpoint.globals],
        "tensors": _by_dtype(_tensors(checkpoint.data)),
    }
    return entry, _file_tree(checkpoint.data, depth)


def _single_file(result: FileReport) -> dict[str, Any]:
    checkpoint = result.checkpoint
    if result.name is not None:
        return _file(LayoutFile(result.path, os.path.basename(result.path), result.name, checkpoint.size), checkpoint)
    return {
        "path": result.path,
        "relpath": os.path.basename(result.path),
        "kind": None,
        "format": checkpoint.format,
        "size": checkpoint.size,
        "top_level_keys": [str(k) for k in checkpoint.data] if isinstance(checkpoint.data, dict) else None,
        "globals": [_global(r) for r in checkpoint.globals],
        "tensors": _by_dtype(_tensors(checkpoint.data)),
    }
