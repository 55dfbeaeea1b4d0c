"""One dict, or one file's, against :mod:`ckptkeys.schema`: missing, wrongly typed and unknown keys."""

from __future__ import annotations

import re

from .. import schema
from .._keys._registry import ModuleKeys, OptimFileKeys, OptimizerKeys
from ..naming import FileKind
from . import _frameworks
from ._layout import LayoutFile
from ._problems import Problem, Severity

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

__all__ = ["check_dict", "check_file", "client_state_problems", "guess_kind"]

E, W, INFO = Severity.ERROR, Severity.WARNING, Severity.INFO

_VERSION: Final = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def _version(value: Any) -> tuple[int, int, int] | None:
    match = _VERSION.match(value) if isinstance(value, str) else None
    if match is None:
        return None
    return (int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))


def _type_names(types: tuple[type, ...]) -> str:
    return " or ".join("None" if t is type(None) else t.__name__ for t in types)


def check_dict(
    state: Any, kind: schema.DictKind, *, file: str | None = None, key_path: str = "", ds_version: Any = None
) -> list[Problem]:
    """Problems of ``state`` as a dict of ``kind``, nested dicts included.

    ``ds_version`` (taken from ``state`` when it has one) decides which keys are required.
    """
    prefix = f"{key_path}/" if key_path else ""
    if not isinstance(state, dict):
        return [
            Problem(
                E, "wrong-type", f"a {kind.name} must be a dict, not {type(state).__name__}", file, key_path or None
            )
        ]
    version = _version(state.get("ds_version", ds_version))
    problems: list[Problem] = []
    known = {spec.key.value: spec for spec in kind.keys}
    for spec in kind.keys:
        where = prefix + spec.key
        if spec.key not in state:
            required = _version(spec.required_from) if spec.required_from else None
            if required is not None and (version is None or version >= required):
                since = f" (written since DeepSpeed {spec.required_from})" if required > (0, 0, 0) else ""
                problems.append(Problem(E, "missing-key", f"the {kind.name} has no '{spec.key}'{since}", file, where))
            continue
        value = state[spec.key]
        if spec.types and not isinstance(value, spec.types):
            problems.append(
                Problem(
                    E,
                    "wrong-type",
                    f"'{spec.key}' is {type(value).__name__}, expected {_type_names(spec.types)}",
                    file,
                    where,
                )
            )
    for key in state:
        if isinstance(key, str) and key in known:
            continue
        if kind.open:
            problems.append(
                Problem(
                    INFO, "client-state-key", f"{key!r} is not a DeepSpeed key (client_state?)", file, prefix + str(key)
                )
            )
        else:
            problems.append(
                Problem(W, "unknown-key", f"{key!r} is not a key of a {kind.name}", file, prefix + str(key))
            )
    problems += _nested(state, kind, file, prefix, version)
    return problems


def _nested(state: dict[Any, Any], kind: schema.DictKind, file: str | None, prefix: str, version: Any) -> list[Problem]:
    problems: list[Problem] = []
    as_text = ".".join(map(str, version)) if version else None
    if kind is schema.MODEL_STATES:
        for key, nested_kind in (
            (ModuleKeys.CHECKPOINT_PARALLEL_DIMS, schema.PARALLEL_DIMENSIONS),
            (ModuleKeys.UNIVERSAL_CHECKPOINT_INFO, schema.UNIVERSAL_INFO),
        ):
            if isinstance(state.get(key), dict):
                problems += check_dict(state[key], nested_kind, file=file, key_path=prefix + key, ds_version=as_text)
        optimizer = state.get(ModuleKeys.OPTIMIZER)
        if isinstance(optimizer, dict) and OptimizerKeys.CUR_SCALE in optimizer:
            problems += check_dict(
                optimizer,
                schema.FP16_WRAPPER_STATE,
                file=file,
                key_path=prefix + ModuleKeys.OPTIMIZER,
                ds_version=as_text,
            )
    elif kind is schema.OPTIM_STATES_FILE:
        inner = state.get(OptimFileKeys.OPTIMIZER_STATE_DICT)
        if isinstance(inner, dict):
            problems += check_dict(
                inner,
                schema.optimizer_state_kind(inner),
                file=file,
                key_path=prefix + OptimFileKeys.OPTIMIZER_STATE_DICT,
                ds_version=as_text,
            )
    elif kind is schema.UNIVERSAL_INFO:
        entries = state.get("parameter_with_sub_params")
        for index, entry in enumerate(entries if isinstance(entries, list) else []):
            problems += check_dict(
                entry, schema.SUB_PARAM_ENTRY, file=file, key_path=f"{prefix}parameter_with_sub_params[{index}]"
            )
    return problems


_FILE_KINDS: Final = {
    FileKind.MODEL_STATES: schema.MODEL_STATES,
    FileKind.ZERO3_MODEL_STATES: schema.MODEL_STATES,
    FileKind.OPTIM_STATES: schema.OPTIM_STATES_FILE,
}


def check_file(file: LayoutFile, data: Any) -> list[Problem]:
    kind = _FILE_KINDS.get(file.name.kind)
    if kind is not None:
        return check_dict(data, kind, file=file.path)
    if file.name.kind is FileKind.UNIVERSAL_OPTIMIZER_STATE:
        return check_dict(data, schema.UNIVERSAL_OPTIMIZER_STATE, file=file.path)
    if file.name.kind is FileKind.UNIVERSAL_PARAM_STATE and isinstance(data, dict):
        return check_dict(data, schema.UNIVERSAL_PARAM_FILE, file=file.path)
    if file.name.kind in (FileKind.LAYER_MODEL_STATES, FileKind.EXPERT_MODEL_STATES) and not isinstance(data, dict):
        return [Problem(E, "wrong-type", f"a {file.name.kind.value} file must hold a state dict", file.path)]
    return []


def client_state_problems(problems: list[Problem]) -> list[Problem]:
    """One ``client-state-key`` per key however many files hold it; a framework's client state as one problem."""
    keys = [p.key_path for p in problems if p.code == "client-state-key"]
    found = _frameworks.client_state_framework(keys)
    known = set(found[1]) if found else set()
    kept: list[Problem] = []
    seen: set[str | None] = set()
    files: list[str] = []
    for problem in problems:
        if problem.code != "client-state-key":
            kept.append(problem)
        elif problem.key_path in known:
            if problem.file not in files and problem.file is not None:
                files.append(problem.file)
        elif problem.key_path not in seen:
            seen.add(problem.key_path)
            kept.append(problem)
    if found:
        framework, framework_keys = found
        where = f" ({len(files)} model-states files)" if len(files) > 1 else ""
        kept.append(
            Problem(
                INFO,
                "framework-client-state",
                f"{_frameworks.NAMES.get(framework, framework)}'s client state{where}: {', '.join(framework_keys)}",
                files[0] if files else None,
            )
        )
    return kept


def guess_kind(state: Any) -> schema.DictKind:
    if isinstance(state, dict) and OptimFileKeys.OPTIMIZER_STATE_DICT in state and ModuleKeys.MODULE not in state:
        return schema.OPTIM_STATES_FILE
    return schema.MODEL_STATES
