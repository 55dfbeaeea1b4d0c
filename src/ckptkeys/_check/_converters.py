"""Converter readiness: will DeepSpeed's ``zero_to_fp32`` and ``ds_to_universal`` accept a tag?

The verdicts come from what the converters check, in the order they check it (DeepSpeed
0.19.8, ``deepspeed/utils/zero_to_fp32.py`` and ``deepspeed/checkpoint/ds_to_universal.py``),
applied to the structure ``scan(read=True)`` already read: no file is read again.
A verdict that is not ready is one problem per converter and tag (:func:`readiness_problems`):
information, because a checkpoint that resumes training is a good checkpoint, and an error only
for a converter the user requires (``--require``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .._keys._registry import ModuleKeys, OptimFileKeys, OptimizerKeys, ParamPatternKeys, SubParamKeys, UniversalKeys
from .._read._pickle import Opaque
from ..naming import FileKind
from . import _frameworks
from ._problems import Problem, Severity

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

    from ._layout import LayoutFile, TagLayout

__all__ = ["CONVERTERS", "NOT_READY", "SAFETENSORS_NOT_READY", "Verdict", "readiness", "readiness_problems"]

ZERO_TO_FP32: Final = "zero_to_fp32"
DS_TO_UNIVERSAL: Final = "ds_to_universal"
CONVERTERS: Final = (ZERO_TO_FP32, DS_TO_UNIVERSAL)
NOT_READY: Final = {ZERO_TO_FP32: "zero-to-fp32-not-ready", DS_TO_UNIVERSAL: "ds-to-universal-not-ready"}
"""The problem code of each converter that will fail on a tag."""
SAFETENSORS_NOT_READY: Final = "zero-to-fp32-safetensors-not-ready"
"""The problem code of ``zero_to_fp32 --safe_serialization`` failing where ``zero_to_fp32`` works."""

_AUTOEP_LAYERS: Final = (ModuleKeys.AUTOEP_LAYERS_KEY, ModuleKeys.AUTOEP_LAYERS_KEY_LEGACY)
_PATTERN_LISTS: Final = (
    ParamPatternKeys.TP_REPLICATED_PARAMETER_PATTERNS,
    ParamPatternKeys.PARAMETER_TO_AVERAGE_PATTERNS,
    ParamPatternKeys.PARAMETER_WITH_ROW_PARALLELISM_PATTERNS,
    ParamPatternKeys.VOCABULARY_PARAMETER_PATTERNS,
    ParamPatternKeys.PARAMETER_WITH_2_SUB_PARAMS_CAT_DIM_0,
)


@dataclass(frozen=True, slots=True, repr=False)
class Verdict:
    """Whether a converter will accept a tag; if not, a stable ``code`` and a ``reason`` with the way out.

    Its repr is one line (``<Verdict not ready: no-module>``); the sentence is :attr:`reason`.
    """

    ready: bool
    code: str | None = None
    reason: str | None = None
    applicable: bool = True
    """``False`` where the converter has nothing to do (a universal tag is already converted):
    ``ready`` is then ``False`` too, with a ``reason``, and validation gives no warning."""
    safe_serialization: Verdict | None = None
    """For ``zero_to_fp32`` when it is ready: whether ``--safe_serialization`` (safetensors
    output) works too. ``None`` otherwise."""

    def __repr__(self) -> str:
        text = self._state()
        if self.safe_serialization is not None:
            text += f"; safe_serialization {self.safe_serialization._state()}"
        return f"<{type(self).__name__} {text}>"

    def _state(self) -> str:
        text = "ready" if self.ready else "not applicable" if not self.applicable else "not ready"
        return text if self.code is None else f"{text}: {self.code}"


_READY: Final = Verdict(True)


def readiness(tag: TagLayout, *, framework: str | None = None) -> dict[str, Verdict]:
    """The verdict of each converter on ``tag``, which must come from ``scan(read=True)``.

    ``framework`` is the framework that wrote the save (``Layout.framework``), if any: its users
    never call ``save_checkpoint`` themselves, so the way out it names differs.
    """
    return {ZERO_TO_FP32: _zero_to_fp32(tag), DS_TO_UNIVERSAL: _ds_to_universal(tag, framework)}


def readiness_problems(path: str, verdicts: dict[str, Verdict]) -> list[Problem]:
    """One ``info`` problem per converter that will fail on the tag at ``path``, its reason once.

    A converter with nothing to do (a universal tag) gives none; where ``zero_to_fp32`` works but
    not with ``--safe_serialization``, that is the problem instead.
    """
    problems = []
    for name, verdict in verdicts.items():
        if not verdict.ready and verdict.applicable:
            problems.append(Problem(Severity.INFO, NOT_READY[name], f"{name} will fail: {verdict.reason}", path))
        elif verdict.safe_serialization is not None and not verdict.safe_serialization.ready:
            problems.append(
                Problem(
                    Severity.INFO,
                    SAFETENSORS_NOT_READY,
                    f"{name} --safe_serialization will fail: {verdict.safe_serialization.reason}",
                    path,
                )
            )
    return problems


def _state(tag: TagLayout, file: LayoutFile) -> Any:
    checkpoint = tag.checkpoints.get(file.relpath)
    return None if checkpoint is None else checkpoint.data


def _unreadable(tag: TagLayout, files: tuple[LayoutFile, ...]) -> Verdict | None:
    for file in files:
        if file.relpath not in tag.checkpoints:
            return Verdict(False, "unreadable-file", f"{file.relpath} cannot be read, so the converter fails on it")
    return None


def _zero_stage(value: Any) -> int | None:
    if isinstance(value, Opaque) and len(value.args) == 1:
        value = value.args[0]
    return value if type(value) is int else None


# -- zero_to_fp32 -------------------------------------------------------------------------------


def _zero_to_fp32(tag: TagLayout) -> Verdict:
    if tag.universal:
        return _NOT_APPLICABLE
    # get_model_state_files: glob("*_model_states.pt"), which also matches MoE expert files
    model_files = tuple(
        sorted(
            (
                f
                for f in tag.files
                if f.name.kind in (FileKind.MODEL_STATES, FileKind.ZERO3_MODEL_STATES, FileKind.EXPERT_MODEL_STATES)
            ),
            key=_natural,
        )
    )
    if not model_files:
        return Verdict(False, "no-model-states", "no *_model_states.pt file in the tag folder")
    failure = _unreadable(tag, model_files)
    if failure:
        return failure
    for file in model_files:  # parse_model_states, file by file
        state = _state(tag, file)
        if not isinstance(state, dict):
            return Verdict(False, "not-model-states", f"{file.relpath} does not hold a dict")
        if any(_autoep_zero3_partitioned(state.get(key)) for key in _AUTOEP_LAYERS):
            return Verdict(
                False,
                "autoep-zero3",
                "AutoEP ZeRO-3 partition-native checkpoint: zero_to_fp32 refuses it; use ds_to_universal",
            )
        if ModuleKeys.BUFFER_NAMES not in state:
            what = "an MoE expert file" if file.name.kind is FileKind.EXPERT_MODEL_STATES else "not model states"
            way_out = (
                "without ZeRO the weights are already whole: the model states' module and the expert files"
                if tag.zero_stage == 0
                else "MoE checkpoints need ds_to_universal"
            )
            return Verdict(
                False,
                "not-model-states",
                f"{file.relpath} is {what}: zero_to_fp32 takes every *_model_states.pt for model states and "
                f"fails on it; {way_out}",
            )
        if not isinstance(state.get(ModuleKeys.MODULE), dict):
            return Verdict(
                False,
                "no-module",
                f"{file.relpath} has no module state (a pipeline checkpoint keeps weights in layer_* files): "
                "zero_to_fp32 cannot convert it; use ds_to_universal",
            )
        if not isinstance(state.get(ModuleKeys.PARAM_SHAPES), list):
            return Verdict(
                False,
                "no-param-shapes",
                f"{file.relpath} has no param_shapes: not a ZeRO checkpoint (stage 0), and zero_to_fp32 only "
                "converts ZeRO stages 1-3; its module state is already complete",
            )
        if not isinstance(state.get(ModuleKeys.SHARED_PARAMS), dict):
            return Verdict(False, "no-shared-params", f"{file.relpath} has no shared_params dict")
    optim_files = tag.of_kind(FileKind.OPTIM_STATES, FileKind.EXPERT_OPTIM_STATES)
    if not optim_files:
        return Verdict(False, "no-optimizer-shards", "no *_optim_states.pt file in the tag folder")
    failure = _unreadable(tag, optim_files)
    if failure:
        return failure
    first = _state(tag, optim_files[0])
    inner = first.get(OptimFileKeys.OPTIMIZER_STATE_DICT) if isinstance(first, dict) else None
    if not isinstance(inner, dict) or OptimizerKeys.ZERO_STAGE not in inner:
        return Verdict(
            False,
            "no-zero-stage",
            f"{optim_files[0].relpath} has no optimizer_state_dict/zero_stage (BF16 optimizer state): "
            "zero_to_fp32 says it is not a zero checkpoint",
        )
    count = inner.get(OptimizerKeys.PARTITION_COUNT)
    world = max(count) if isinstance(count, list) and count else count
    if world != len(optim_files):
        why = (
            "tensor/pipeline parallel: zero_to_fp32 handles one mp rank; use ds_to_universal"
            if len({f.name.mp_rank for f in optim_files}) > 1
            else "a rank is missing or an old shard was left behind"
        )
        return Verdict(
            False,
            "shard-count",
            f"partition_count says {world} optimizer shards, the folder has {len(optim_files)}: {why}",
        )
    stage = _zero_stage(inner.get(OptimizerKeys.ZERO_STAGE))
    if stage is None or not 1 <= stage <= 3:
        return Verdict(False, "unknown-zero-stage", f"zero_stage {stage!r} is not 1, 2 or 3")
    return Verdict(True, safe_serialization=_safe_serialization(tag, model_files))


def _safe_serialization(tag: TagLayout, model_files: tuple[LayoutFile, ...]) -> Verdict:
    """safetensors refuses tensors that share memory; zero_to_fp32 ties ``shared_params`` back together."""
    for file in model_files:
        shared = _state(tag, file).get(ModuleKeys.SHARED_PARAMS)
        if isinstance(shared, dict) and shared:
            pairs = ", ".join(f"{k} = {v}" for k, v in list(shared.items())[:3]) + (", ..." if len(shared) > 3 else "")
            return Verdict(
                False,
                "tied-weights",
                f"tied weights ({pairs}) share memory and safetensors refuses them: run zero_to_fp32 without "
                "--safe_serialization (a pytorch_model.bin), or load the model with "
                "load_state_dict_from_zero_checkpoint and save it with the model's save_pretrained or "
                "safetensors.torch.save_model, which drop the copies",
            )
    return _READY


_NOT_APPLICABLE: Final = Verdict(
    False,
    "universal",
    "a universal checkpoint (ds_to_universal's output): nothing to convert; resume from it with "
    '"checkpoint": {"load_universal": true} in the DeepSpeed config',
    applicable=False,
)


def _natural(file: LayoutFile) -> list[int | str]:
    """zero_to_fp32's natural_keys: digits compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", file.relpath)]


def _autoep_zero3_partitioned(layers: Any) -> bool:
    from .._keys._registry import AutoEPKeys

    return isinstance(layers, list) and any(
        isinstance(entry, dict)
        and entry.get(AutoEPKeys.AUTOEP_ZERO3_EXPERT_STATE_FORMAT_KEY)
        == AutoEPKeys.AUTOEP_ZERO3_PARTITIONED_EXPERT_STATE_FORMAT
        for entry in layers
    )


# -- ds_to_universal ------------------------------------------------------------------------------


def _ds_to_universal(tag: TagLayout, framework: str | None) -> Verdict:
    if tag.universal:
        return _NOT_APPLICABLE
    optim_files = tag.of_kind(FileKind.OPTIM_STATES, FileKind.EXPERT_OPTIM_STATES)
    if not optim_files:
        return Verdict(
            False,
            "no-optimizer-shards",
            "no *_optim_states.pt file (a ZeRO-0 checkpoint): ds_to_universal converts ZeRO stages 1-3",
        )
    zero_shards = tag.of_kind(FileKind.OPTIM_STATES)
    failure = _unreadable(tag, (zero_shards or optim_files)[:1])
    if failure:
        return failure
    first = _state(tag, (zero_shards or optim_files)[0])
    inner = first.get(OptimFileKeys.OPTIMIZER_STATE_DICT) if isinstance(first, dict) else None
    stage = _zero_stage(inner.get(OptimizerKeys.ZERO_STAGE, 1)) if isinstance(inner, dict) else None
    if stage is None:
        if not zero_shards:
            return Verdict(
                False,
                "no-optimizer-state",
                f"{optim_files[0].relpath} holds a plain optimizer state, not a ZeRO one (an MoE checkpoint "
                "without ZeRO): ds_to_universal converts ZeRO stages 1-3",
            )
        return Verdict(False, "no-optimizer-state", f"{zero_shards[0].relpath} has no optimizer state")
    if stage > 2:
        missing = [p for p in tag.problems if p.code in ("missing-rank", "missing-model-states")]
        if missing:
            return Verdict(False, "missing-rank", f"{missing[0].message}: ds_to_universal needs every ZeRO-3 rank file")
        return _READY
    model_files = tag.of_kind(FileKind.MODEL_STATES)
    if not model_files:
        return Verdict(False, "no-model-states", "no mp_rank_*_model_states.pt file in the tag folder")
    failure = _unreadable(tag, model_files)
    if failure:
        return failure
    state = _state(tag, model_files[0])
    info = state.get(UniversalKeys.UNIVERSAL_CHECKPOINT_INFO) if isinstance(state, dict) else None
    if info is None:
        if framework is not None:
            return Verdict(
                False,
                "no-universal-info",
                "run ds_to_universal with --inject_missing_state: the model states have no "
                f"universal_checkpoint_info ({_frameworks.NAMES.get(framework, framework)} saves without it), "
                "and that option supplies the default one",
            )
        return Verdict(
            False,
            "no-universal-info",
            "no universal_checkpoint_info in the model states: write it through "
            "engine.save_checkpoint(..., client_state={'universal_checkpoint_info': {...}}) "
            "(ckptkeys.writing builds it; see docs/writing.md), or run ds_to_universal with --inject_missing_state",
        )
    if not isinstance(info, dict):
        return Verdict(False, "bad-universal-info", "universal_checkpoint_info is not a dict")
    unsupported = info.get(UniversalKeys.AUTOTP_UNSUPPORTED_PARAMETER_PATTERNS)
    if unsupported:
        return Verdict(False, "autotp-unsupported", f"AutoTP marks parameters as unconvertible: {unsupported!r:.200}")
    return _patterns(info, _param_names(tag, model_files))


def _param_names(tag: TagLayout, model_files: tuple[LayoutFile, ...]) -> list[str]:
    names: dict[str, None] = {}
    for file in model_files:
        state = _state(tag, file)
        shapes = state.get(ModuleKeys.PARAM_SHAPES) if isinstance(state, dict) else None
        for group in shapes if isinstance(shapes, list) else ():
            if isinstance(group, dict):
                names.update(dict.fromkeys(k for k in group if isinstance(k, str)))
    return list(names)


def _patterns(info: dict[Any, Any], names: list[str]) -> Verdict:
    """merge_tp_slices: patterns applied with re.match; one match per list; none left unused (--strict)."""
    patterns: list[str] = []
    for key in _PATTERN_LISTS:
        value = info.get(key, [])
        if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
            return Verdict(False, "bad-pattern", f"{key} is not a list of regex strings")
        patterns += value
    sub_params = info.get(ParamPatternKeys.PARAMETER_WITH_SUB_PARAMS, [])
    for entry in sub_params if isinstance(sub_params, list) else [None]:
        entry_patterns = entry.get(SubParamKeys.PATTERNS) if isinstance(entry, dict) else None
        if not isinstance(entry_patterns, list) or not all(isinstance(p, str) for p in entry_patterns):
            return Verdict(False, "bad-pattern", f"{ParamPatternKeys.PARAMETER_WITH_SUB_PARAMS} entries need patterns")
        patterns += entry_patterns
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as error:
            return Verdict(False, "bad-pattern", f"pattern {pattern!r} does not compile: {error}")
    for key in _PATTERN_LISTS:
        for name in names:
            matched = [p for p in info.get(key, []) if re.match(p, name)]
            if len(matched) > 1:
                return Verdict(False, "ambiguous-pattern", f"{name} matches more than one {key} pattern: {matched}")
    unused = [p.pattern for p in compiled if not any(p.match(name) for name in names)]
    if unused:
        return Verdict(
            False,
            "unused-pattern",
            f"patterns {unused} match no parameter (with re.match): ds_to_universal fails with its default "
            "--strict; fix the patterns or pass --no_strict",
        )
    return _READY
