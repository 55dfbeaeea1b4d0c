"""A universal tag as DeepSpeed's loader meets it: what it does not restore, and which engines load it.

A universal tag holds more than ``load_checkpoint`` with ``"checkpoint": {"load_universal": true}``
(DeepSpeed 0.19.8) brings back. That load skips the module's state dict (runtime/engine.py) and
walks only the parameters the optimizer holds, so frozen parameters and buffers keep whatever the
model was built with, though ``ds_to_universal`` writes them a ``zero/<name>/fp32.pt`` (ZeRO-1/2;
under ZeRO-3 it writes them no file at all). The ZeRO-1/2 loader reads ``step.pt`` only where
there is one: a folder without it loads, and the optimizer's step is lost. And a ZeRO-1/2 engine
finds its model states as ``mp_rank_*_model_states.pt`` and needs ``ds_version`` in
``zero/optimizer_state.pt``, a ZeRO-3 engine ``zero_pp_rank_0_mp_rank_*_model_states.pt`` and the
torch optimizer's ``step`` there: the folders ``ds_to_universal`` writes for one do not load in
the other (measured: docs/universal.md).

None of this is damage, so none is an error: warnings about resuming, each naming every tensor
concerned and the way out; which engines load the folder is information.
"""

from __future__ import annotations

from .._keys._registry import (
    ModuleKeys,
    OptimFileKeys,
    OptimizerKeys,
    UniversalParamKeys,
    UniversalStateKeys,
)
from .._read._torch import TensorInfo
from ..naming import FileKind
from ._layout import LayoutFile, TagLayout, read_dicts
from ._problems import Problem, Severity

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

__all__ = ["universal_load_problems"]

W, INFO = Severity.WARNING, Severity.INFO

TORCH_STATE: Final = "state"  # torch.optim.Optimizer.state_dict()'s per-parameter states, keyed by index
TORCH_STEP: Final = "step"  # Adam's step counter in those states (stage3.py reads state[0]["step"])
FP32: Final = f"{UniversalStateKeys.FP32_WEIGHT_KEY}"
STEP: Final = f"{UniversalStateKeys.STEP}"


def universal_load_problems(tag: TagLayout) -> list[Problem]:
    """Frozen parameters and buffers the loader leaves alone, a step it loses, the engines that load the tag."""
    if not tag.universal:
        return []
    models = read_dicts(tag, tag.of_kind(FileKind.MODEL_STATES, FileKind.ZERO3_MODEL_STATES))
    folders: dict[str, dict[str, LayoutFile]] = {}
    for file in tag.of_kind(FileKind.UNIVERSAL_PARAM_STATE):
        if file.name.param is not None and file.name.state is not None:
            folders.setdefault(file.name.param, {})[file.name.state] = file
    trained = _trained(models, folders)
    problems = _not_restored(tag, models, folders, trained)
    engines = _engines(tag, folders, trained)
    if engines is not None:
        zero12, zero3 = engines
        if not zero12:
            problems += _step_lost(tag, folders, trained)
        problems.append(_engines_problem(tag, zero12, zero3))
    return problems


def _names(value: Any) -> list[str]:
    return [n for n in value if isinstance(n, str)] if isinstance(value, (dict, list)) else []


def _trained(models: list[tuple[LayoutFile, dict[Any, Any]]], folders: dict[str, dict[str, LayoutFile]]) -> list[str]:
    """The parameters the optimizer holds, in order: ``param_shapes`` of every model-states file
    (a pipeline's stages or tensor-parallel ranks list their own), else the ``zero/`` folders with
    an optimizer state beside ``fp32`` (a parameter that got no gradient before the save has only
    ``fp32.pt`` too, which is why ``param_shapes`` comes first)."""
    names: dict[str, None] = {}
    for _, state in models:
        shapes = state.get(ModuleKeys.PARAM_SHAPES)
        for group in shapes if isinstance(shapes, list) else ():
            names.update(dict.fromkeys(_names(group)))
    if names:
        return list(names)
    return [name for name, states in folders.items() if set(states) - {FP32, STEP}]


def _not_restored(
    tag: TagLayout,
    models: list[tuple[LayoutFile, dict[Any, Any]]],
    folders: dict[str, dict[str, LayoutFile]],
    trained: list[str],
) -> list[Problem]:
    buffers: dict[str, None] = {}
    frozen: dict[str, None] = {}
    tied: set[str] = set()
    for _, state in models:
        buffers.update(dict.fromkeys(_names(state.get(ModuleKeys.BUFFER_NAMES))))
        frozen.update(dict.fromkeys(_names(state.get(ModuleKeys.FROZEN_PARAM_SHAPES))))
        frozen.update(dict.fromkeys(_names(state.get(ModuleKeys.MODULE))))
        shared = state.get(ModuleKeys.SHARED_PARAMS)
        tied |= {alias for alias, source in shared.items() if source in trained} if isinstance(shared, dict) else set()
    frozen.update(dict.fromkeys(folders))
    skip = set(trained) | tied  # a tied alias is the same Parameter as the one the optimizer restores
    buffer_names = [n for n in buffers if n not in skip]
    frozen_names = [n for n in frozen if n not in skip and n not in buffers]
    model = models[0][0].relpath if models else None
    zero3 = bool(tag.of_kind(FileKind.ZERO3_MODEL_STATES)) and not tag.of_kind(FileKind.MODEL_STATES)
    problems = []
    for code, kind, names in (
        ("universal-frozen-not-restored", "frozen parameter", frozen_names),
        ("universal-buffers-not-restored", "buffer", buffer_names),
    ):
        if not names:
            continue
        with_file = sum(FP32 in folders.get(n, {}) for n in names)
        if with_file:
            held = f"zero/<name>/fp32.pt holds {'their values' if with_file == len(names) else f'{with_file} of them'}"
        else:
            held = "ds_to_universal writes them no file under ZeRO-3"
        problems.append(
            Problem(
                W,
                code,
                f"DeepSpeed's universal loader does not restore {_count(len(names), kind)}: {_listed(names)} "
                f"({held}; load_universal loads only the optimizer's parameters, so they keep the values "
                f"the model was built with); load them after load_checkpoint from {_source(kind, model, zero3)} "
                "or the pretrained weights (ckptkeys export of this tag writes them)",
                tag.path,
            )
        )
    return problems


def _source(kind: str, model: str | None, zero3: bool) -> str:
    """Where the way out finds the values: the model states' ``module`` holds them whole, except a
    ZeRO-3 frozen parameter, whose slices are in every rank's ``frozen_param_fragments``."""
    if zero3 and kind == "frozen parameter":
        return "the model states (a slice in frozen_param_fragments of each zero_pp_rank_*_model_states.pt)"
    return f"the model states (module of {model})" if model is not None else "the model states"


def _step_lost(tag: TagLayout, folders: dict[str, dict[str, LayoutFile]], trained: list[str]) -> list[Problem]:
    """No trained parameter's ``step.pt`` where they have optimizer moments: the ZeRO-1/2 loader takes
    ``step`` from the files it finds (checkpoint/universal_checkpoint.py) and, with none, leaves the
    optimizer's ``step`` unset without a word. One ``step.pt`` missing among others is an error of
    completeness (``missing-universal-param``): the loader then fails on unequal steps."""
    with_moments = [n for n in trained if set(folders.get(n, {})) - {FP32, STEP}]
    if not with_moments or any(STEP in folders.get(n, {}) for n in trained):
        return []
    return [
        Problem(
            W,
            "universal-step-missing",
            f"no step.pt in the zero/<name>/ of {_count(len(with_moments), 'trained parameter')}: "
            f"{_listed(with_moments)} (they have optimizer moments): DeepSpeed's ZeRO-1/2 universal loader "
            "skips a missing step.pt silently and leaves the optimizer's step unset, so the step count is "
            "lost; convert the source tag again (ds_to_universal and ckptkeys universal write step.pt), "
            "or write each parameter's step.pt",
            tag.path,
        )
    ]


def _engines(
    tag: TagLayout, folders: dict[str, dict[str, LayoutFile]], trained: list[str]
) -> tuple[list[str], list[str]] | None:
    """Why a ZeRO-1/2 engine and a ZeRO-3 engine would not load the tag (empty: it loads), from
    the model states' names and ``zero/optimizer_state.pt``; ``None`` where that file was not read
    (its absence or damage is already an error)."""
    found = read_dicts(tag, tag.of_kind(FileKind.UNIVERSAL_OPTIMIZER_STATE))
    if not found:
        return None
    _, optimizer_state = found[0]
    zero12: list[str] = []
    if not tag.of_kind(FileKind.MODEL_STATES):
        zero12.append("it finds no mp_rank_*_model_states.pt (engine.py asserts it finds one)")
    if OptimFileKeys.DS_VERSION not in optimizer_state:
        zero12.append("zero/optimizer_state.pt has no ds_version (stage_1_and_2.py asserts it)")
    bare = [
        file.relpath
        for name in trained
        for state, file in folders.get(name, {}).items()
        if state != STEP and isinstance(_data(tag, file), TensorInfo)
    ]
    if bare:
        zero12.append(
            f"{bare[0]}{f' and {len(bare) - 1} more' if len(bare) > 1 else ''} hold a bare tensor where it "
            f"reads {{'{UniversalParamKeys.PARAM}': ...}} (universal_checkpoint.py)"
        )
    zero3: list[str] = []
    if not any(f.name.dp_rank == 0 for f in tag.of_kind(FileKind.ZERO3_MODEL_STATES)):
        zero3.append("it finds no zero_pp_rank_0_mp_rank_*_model_states.pt (engine.py asserts it finds one)")
    inner = optimizer_state.get(OptimFileKeys.OPTIMIZER_STATE_DICT)
    states = inner.get(TORCH_STATE) if isinstance(inner, dict) else None
    first = states.get(0) if isinstance(states, dict) else None
    if not isinstance(first, dict) or TORCH_STEP not in first:
        zero3.append(
            f"zero/optimizer_state.pt has no {OptimFileKeys.OPTIMIZER_STATE_DICT}['{TORCH_STATE}'][0]['{TORCH_STEP}'] "
            "(stage3.py reads it)"
        )
    if isinstance(inner, dict) and not isinstance(inner.get(OptimizerKeys.PARAM_GROUPS), list):
        zero3.append(
            f"zero/optimizer_state.pt has no {OptimFileKeys.OPTIMIZER_STATE_DICT}['{OptimizerKeys.PARAM_GROUPS}'] "
            "(stage3.py reads it)"
        )
    return zero12, zero3


def _engines_problem(tag: TagLayout, zero12: list[str], zero3: list[str]) -> Problem:
    config = 'with "checkpoint": {"load_universal": true}'
    if not zero12 and not zero3:
        return Problem(INFO, "universal-engines", f"ZeRO-1/2 and ZeRO-3 engines load it {config}", tag.path)
    if not zero12 or not zero3:
        layout, other, why = ("ZeRO-1/2", "ZeRO-3", zero3) if not zero12 else ("ZeRO-3", "ZeRO-1/2", zero12)
        return Problem(
            INFO,
            "universal-engines",
            f"a {layout} universal folder: only a {layout} engine loads it {config}; a {other} engine "
            f"fails on it: {'; '.join(why)}. ds_to_universal writes each ZeRO stage its own layout, so "
            f"resume at {layout}; to change stage only the weights move (ckptkeys export of this tag, "
            "loaded into the model before deepspeed.initialize), not the optimizer state",
            tag.path,
        )
    return Problem(
        W,
        "universal-no-engine",
        f"no DeepSpeed engine loads it {config}: a ZeRO-1/2 engine because {'; '.join(zero12)}; a ZeRO-3 "
        f"engine because {'; '.join(zero3)}",
        tag.path,
    )


def _data(tag: TagLayout, file: LayoutFile) -> Any:
    checkpoint = tag.checkpoints.get(file.relpath)
    return checkpoint.data if checkpoint is not None else None


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _listed(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)
