"""What a tag needs that it lacks or holds damaged, beyond what the file names alone tell (``_layout``).

The names of a tag's files say which ranks exist; what the files hold says what else must:
a pipeline stage's trained parameters need their layer files (``layer_NN-model_states.pt``,
numbered from 0 without gaps), a universal checkpoint's parameters their ``zero/<name>/``
files, frozen parameters their fragments, and every tensor its bytes. Each finding is an
ERROR naming the missing or damaged file and what needs it (the file that lists it, the key).
A file another check already named is not named twice.
"""

from __future__ import annotations

import io
import os

from .. import naming
from .._keys._registry import ModuleKeys, OptimFileKeys, OptimizerKeys
from .._read._errors import ReadError
from .._read._files import open_regular
from .._read._limits import Limits
from .._read._source import is_url
from .._read._torch import TensorInfo
from .._read._zip import open_archive
from ..naming import CheckpointName, FileKind
from ._layout import LayoutFile, MissingBudget, TagLayout, beyond_files, read_dicts
from ._problems import Problem, Severity

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["completeness_problems"]

E = Severity.ERROR


def completeness_problems(tag: TagLayout, reported: list[Problem]) -> list[Problem]:
    """What ``tag`` lacks or holds damaged, leaving out missing files ``reported`` already names."""
    budget = MissingBudget()
    found = _record_extents(tag) + _frozen_fragments(tag) + _pipeline(tag, budget) + _universal(tag, budget)
    named = {p.file for p in reported if p.file and p.severity == E}
    unique = []
    for problem in found:
        if problem.file not in named or not problem.code.startswith("missing-") or problem.key_path is not None:
            unique.append(problem)
            if problem.file is not None:
                named.add(problem.file)
    return unique


def _model_files(tag: TagLayout) -> list[tuple[LayoutFile, dict[Any, Any]]]:
    return read_dicts(tag, tag.of_kind(FileKind.MODEL_STATES, FileKind.ZERO3_MODEL_STATES))


# -- bytes ---------------------------------------------------------------------------------------


def _record_extents(tag: TagLayout) -> list[Problem]:
    """Every storage record lies inside its file: ``read`` reads the pickles and the zip
    directory, never a record's bytes, so a zip whose local headers put a record past the end (a
    file torn, or its directory written for other headers), or a legacy file cut short after its
    pickles, is found here, from the headers and the file's size, still without reading tensor bytes.
    A remote file's headers were checked while it was read (``TagLayout.record_ends``)."""
    problems = []
    for file in tag.files:
        checkpoint = tag.checkpoints.get(file.relpath)
        if checkpoint is None or not checkpoint.storages:
            continue
        if checkpoint.storages_end is not None and checkpoint.storages_end > checkpoint.size:
            problems.append(
                Problem(
                    E,
                    "truncated-file",
                    f"is cut short: its pickles declare storages up to byte {checkpoint.storages_end}, "
                    f"the file has {checkpoint.size} bytes",
                    file.path,
                )
            )
            continue
        if checkpoint.format != "zip":
            continue
        if is_url(file.path):  # checked while read (the object's head and tail held): its reason, if any
            reason = tag.record_ends.get(file.relpath)
            if reason is not None:
                problems.append(Problem(E, "truncated-file", reason, file.path))
            continue
        try:
            with io.BufferedReader(open_regular(file.path)) as stream:
                size = os.fstat(stream.fileno()).st_size
                if size != checkpoint.size:
                    raise ReadError(file.path, f"is {size} bytes, {checkpoint.size} when it was read")
                archive = open_archive(file.path, stream, size, Limits())
                for storage in checkpoint.storages.values():
                    member = archive.find(f"data/{storage.key}")
                    if member is not None:
                        archive.data_offset(member)  # raises for a record that ends past the file
        except ReadError as error:
            problems.append(Problem(E, "truncated-file", error.reason, file.path))
        except OSError as error:
            problems.append(Problem(E, "truncated-file", f"cannot be read: {error.strerror or error}", file.path))
    return problems


# -- frozen parameters ---------------------------------------------------------------------------


def _frozen_fragments(tag: TagLayout) -> list[Problem]:
    """Every name ``frozen_param_shapes`` lists has its fragment in the same file's ``frozen_param_fragments``."""
    problems = []
    for file, state in _model_files(tag):
        shapes = state.get(ModuleKeys.FROZEN_PARAM_SHAPES)
        if not isinstance(shapes, dict) or not shapes:
            continue
        fragments = state.get(ModuleKeys.FROZEN_PARAM_FRAGMENTS)
        if not isinstance(fragments, dict):
            problems.append(
                Problem(
                    E,
                    "missing-frozen-fragment",
                    f"frozen_param_shapes lists {len(shapes)} frozen parameters, the file has no fragments of them",
                    file.path,
                    f"{ModuleKeys.FROZEN_PARAM_FRAGMENTS}",
                )
            )
            continue
        for name in shapes:
            if not isinstance(fragments.get(name), TensorInfo):
                problems.append(
                    Problem(
                        E,
                        "missing-frozen-fragment",
                        f"frozen_param_shapes lists {name!r:.80}, frozen_param_fragments holds no tensor for it",
                        file.path,
                        f"{ModuleKeys.FROZEN_PARAM_FRAGMENTS}/{name!s:.80}",
                    )
                )
    return problems


# -- pipeline ------------------------------------------------------------------------------------


def _pipeline(tag: TagLayout, budget: MissingBudget) -> list[Problem]:
    """Layer files numbered from 0 without gaps, holding every parameter a stage trained.

    Under ZeRO a stage's ``param_shapes`` name each parameter ``<layer>.<key>``; without ZeRO its
    torch optimizer state (``optimizer``: param groups, and each parameter's state tensors) gives
    their number and shapes in order, which the layer files' tensors, in layer order, must hold.
    """
    layers = tag.of_kind(FileKind.LAYER_MODEL_STATES)
    tp_ranks = {f.name.mp_rank for f in layers}
    if not layers or tag.universal or len(tp_ranks) != 1:
        return []
    tp_rank = tp_ranks.pop()
    present = {f.name.layer: f for f in layers if f.name.layer is not None}
    top = max(present, default=-1)
    problems: list[Problem] = []
    if not budget.fits(top + 1, len(present)):
        return [beyond_files(f"layer {top} in the name", top + 1, len(present), present[top].path)]
    for number in range(top + 1):
        if number not in present:
            name = naming.layer_model_states(number, tp_rank)
            problems.append(
                Problem(
                    E,
                    "missing-layer",
                    f"{name} is missing: DeepSpeed numbers a pipeline's layer files from 0 without gaps "
                    f"(up to {present[top].relpath})",
                    os.path.join(tag.path, name),
                )
            )
    stages = sorted(
        ((f, s) for f, s in _model_files(tag) if f.name.kind == FileKind.MODEL_STATES),
        key=lambda item: item[0].name.mp_rank or 0,
    )
    missing = {p.file for p in problems}
    expected: list[tuple[LayoutFile, str, tuple[int, ...] | None]] = []  # (stage file, parameter, shape)
    for file, state in stages:
        shapes = state.get(ModuleKeys.PARAM_SHAPES)
        if isinstance(shapes, list):
            problems += _named_layers(tag, file, shapes, present, tp_rank, missing)
        else:
            expected += _optimizer_shapes(file, state)
    if expected and not problems:  # with a gap, the order says nothing more about which file is missing
        problems += _ordered_layers(tag, expected, present, tp_rank, missing)
    return problems


def _named_layers(
    tag: TagLayout,
    stage: LayoutFile,
    groups: list[Any],
    present: dict[int, LayoutFile],
    tp_rank: int | None,
    missing: set[str | None],
) -> list[Problem]:
    """ZeRO: each ``<layer>.<key>`` of the stage's ``param_shapes`` in ``layer_<layer>``'s file, with its shape."""
    problems = []
    for index, group in enumerate(groups):
        if not isinstance(group, dict):
            continue
        for param, shape in group.items():
            number, dot, key = param.partition(".") if isinstance(param, str) else ("", "", "")
            if not dot or not number.isdigit() or len(number) > 9:
                continue  # a tied module's parameter (tied_modules.<name>...): not in a numbered layer file
            layer = present.get(int(number))
            needed = f"{stage.relpath}'s param_shapes[{index}] lists {param!r:.80}"
            if layer is None:
                name = naming.layer_model_states(int(number), tp_rank)
                path = os.path.join(tag.path, name)
                if path not in missing:
                    missing.add(path)
                    problems.append(Problem(E, "missing-layer", f"{name} is missing: {needed}", path))
                continue
            checkpoint = tag.checkpoints.get(layer.relpath)
            if checkpoint is None:
                continue  # unreadable: already a problem of its own
            held = checkpoint.data.get(key) if isinstance(checkpoint.data, dict) else None
            want = tuple(shape) if isinstance(shape, (tuple, list)) else shape
            if not isinstance(held, TensorInfo) or held.shape != want:
                what = f"a tensor of shape {held.shape}" if isinstance(held, TensorInfo) else "no tensor"
                problems.append(
                    Problem(
                        E,
                        "layer-param-mismatch",
                        f"{needed} of shape {want}, the layer file holds {what} under {key!r:.80}",
                        layer.path,
                        key,
                    )
                )
    return problems


def _optimizer_shapes(stage: LayoutFile, state: dict[Any, Any]) -> list[tuple[LayoutFile, str, tuple[int, ...] | None]]:
    """Without ZeRO: the parameters of the stage's torch optimizer state, in order, with the shape of
    their state tensors (``exp_avg`` and the like; ``None`` for a parameter without state)."""
    optimizer = state.get(ModuleKeys.OPTIMIZER)
    if isinstance(optimizer, dict) and OptimFileKeys.OPTIMIZER_STATE_DICT in optimizer:  # fp16/bf16 wrapper
        optimizer = optimizer[OptimFileKeys.OPTIMIZER_STATE_DICT]
    if not isinstance(optimizer, dict):
        return []
    groups = optimizer.get(OptimizerKeys.PARAM_GROUPS)
    per_param = optimizer.get("state")
    per_param = per_param if isinstance(per_param, dict) else {}
    found: list[tuple[LayoutFile, str, tuple[int, ...] | None]] = []
    for index, group in enumerate(groups if isinstance(groups, list) else ()):
        params = group.get("params") if isinstance(group, dict) else None
        for position, param in enumerate(params if isinstance(params, list) else ()):
            held = per_param.get(param) if isinstance(param, (int, str)) else None
            tensors = held.items() if isinstance(held, dict) else ()
            shapes = [t.shape for k, t in tensors if k != "step" and isinstance(t, TensorInfo)]
            found.append((stage, f"optimizer/param_groups[{index}]/params[{position}]", shapes[0] if shapes else None))
    return found


def _ordered_layers(
    tag: TagLayout,
    expected: list[tuple[LayoutFile, str, tuple[int, ...] | None]],
    present: dict[int, LayoutFile],
    tp_rank: int | None,
    missing: set[str | None],
) -> list[Problem]:
    """The stages' parameters, in stage order, are a subsequence of the layer files' tensors in layer order
    (buffers and frozen parameters are in the layer files too, not in an optimizer)."""
    matched = 0
    last_layer = -1
    for number in sorted(present):
        checkpoint = tag.checkpoints.get(present[number].relpath)
        if checkpoint is None:
            return []  # unreadable: already a problem, and nothing to match against
        data = checkpoint.data if isinstance(checkpoint.data, dict) else {}
        for tensor in data.values():
            if matched < len(expected) and isinstance(tensor, TensorInfo):
                shape = expected[matched][2]
                if shape is None or shape == tensor.shape:
                    matched += 1
                    last_layer = number
    if matched == len(expected):
        return []
    stage, where, shape = expected[matched]
    needed = (
        f"{stage.relpath}'s optimizer state lists a parameter of shape {shape} ({where}); the layer files "
        f"hold the first {matched} of the {len(expected)} parameters the stages train, in order, not it"
    )
    if last_layer == max(present, default=-1):
        name = naming.layer_model_states(last_layer + 1, tp_rank)
        path = os.path.join(tag.path, name)
        if path in missing:
            return []
        return [Problem(E, "missing-layer", f"{name} is missing: {needed}", path)]
    after = min(n for n in present if n > last_layer)
    return [Problem(E, "layer-param-mismatch", needed, present[after].path)]


# -- universal -----------------------------------------------------------------------------------


def _universal(tag: TagLayout, budget: MissingBudget) -> list[Problem]:
    """A ``ds_to_universal`` folder: the model states it copies (every data-parallel rank's under
    ZeRO-3), and for every parameter ``param_shapes`` lists the ``zero/<name>/`` states its
    siblings have (``fp32``, ``exp_avg``, ...); frozen parameters and buffers need ``fp32`` when
    any of their kind has it."""
    if not tag.universal:
        return []
    problems: list[Problem] = []
    models = _model_files(tag)
    if not tag.of_kind(FileKind.MODEL_STATES, FileKind.ZERO3_MODEL_STATES):
        name = naming.model_states(0)
        return [
            Problem(
                E,
                "missing-model-states",
                f"{name} is missing: ds_to_universal copies the model states beside zero/",
                os.path.join(tag.path, name),
            )
        ]
    if not models:
        return []
    file, model = models[0]
    zero3 = tag.of_kind(FileKind.ZERO3_MODEL_STATES)
    dp_world = model.get(ModuleKeys.DP_WORLD_SIZE)
    if zero3 and type(dp_world) is int and dp_world > 0:
        names = {f.relpath for f in zero3}
        if budget.fits(dp_world, len(names)):
            for dp in range(dp_world):
                name = naming.zero3_model_states(dp, file.name.mp_rank or 0)
                if name not in names:
                    problems.append(
                        Problem(
                            E,
                            "missing-model-states",
                            f"{name} is missing (dp_world_size is {dp_world}; each rank's file holds its "
                            "fragments of the frozen parameters)",
                            os.path.join(tag.path, name),
                        )
                    )
        else:
            key = f"{ModuleKeys.DP_WORLD_SIZE}"
            problems.append(beyond_files(key, dp_world, len(names), file.path, key))
    states: dict[str, set[str]] = {}
    for f in tag.of_kind(FileKind.UNIVERSAL_PARAM_STATE):
        if f.name.param is not None and f.name.state is not None:
            states.setdefault(f.name.param, set()).add(f.name.state)
    shapes = model.get(ModuleKeys.PARAM_SHAPES)
    trained = [n for g in shapes if isinstance(g, dict) for n in g] if isinstance(shapes, list) else []
    frozen = model.get(ModuleKeys.FROZEN_PARAM_SHAPES)
    buffers = model.get(ModuleKeys.BUFFER_NAMES)
    frozen_names = [n for n in frozen if isinstance(n, str)] if isinstance(frozen, dict) else []
    buffer_names = [n for n in buffers if isinstance(n, str)] if isinstance(buffers, list) else []
    kinds = [
        ("trained", [n for n in trained if isinstance(n, str)], f"{ModuleKeys.PARAM_SHAPES}"),
        ("frozen", frozen_names, f"{ModuleKeys.FROZEN_PARAM_SHAPES}"),
        ("buffer", buffer_names, f"{ModuleKeys.BUFFER_NAMES}"),
    ]
    for kind, names_of_kind, key in kinds:
        needed: set[str] = set().union(*(states.get(n, set()) for n in names_of_kind))
        if kind != "trained":
            needed &= {"fp32"}
        elif names_of_kind:
            needed.add("fp32")
        for param in names_of_kind:
            for state in sorted(needed - states.get(param, set())):
                relpath = naming.build(CheckpointName(FileKind.UNIVERSAL_PARAM_STATE, param=param, state=state))
                problems.append(
                    Problem(
                        E,
                        "missing-universal-param",
                        f"{relpath} is missing: {file.relpath}'s {key} lists {param!r:.80} ({kind}), "
                        f"and the other {kind} parameters have their {state}.pt",
                        os.path.join(tag.path, *relpath.split("/")),
                    )
                )
    return problems
