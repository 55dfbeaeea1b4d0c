"""A tag's problems: each file's dict checked (``_dicts``), then the files against each other.

Per folder, the files are checked against each other (ranks, partition counts, world sizes,
stage, precision, versions, the fp32 partitions' sizes against ``param_shapes``) and each
converter's readiness is an ``info`` problem when it will fail; a universal tag is read as DeepSpeed's
loader reads it (``_universal_load``). ``moe_info`` reads a tag's MoE layout.
"""

from __future__ import annotations

import math
import os
import re

from .._keys._registry import ModuleKeys, OptimFileKeys, OptimizerKeys, ParallelDimsKeys
from .._read._pickle import Opaque
from .._read._torch import TensorInfo
from ..naming import (
    FileKind,
    expert_model_states,
    expert_optim_states,
    model_states,
    optim_states,
    zero3_model_states,
)
from . import _frameworks
from ._complete import completeness_problems
from ._converters import readiness, readiness_problems
from ._dicts import check_file, client_state_problems
from ._layout import LayoutFile, MissingBudget, TagLayout, beyond_files, read_dicts
from ._problems import Problem, Severity
from ._reports import TagReport
from ._universal_load import universal_load_problems

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

__all__ = ["check_tag", "moe_info"]

E, W = Severity.ERROR, Severity.WARNING


def check_tag(tag: TagLayout, framework: str | None = None) -> TagReport:
    problems = list(tag.problems)
    for file in tag.files:
        checkpoint = tag.checkpoints.get(file.relpath)
        if checkpoint is not None:
            problems += check_file(file, checkpoint.data)
    problems = client_state_problems(problems)
    problems += _cross_file(tag)
    problems += completeness_problems(tag, problems)
    problems += universal_load_problems(tag)
    converters = readiness(tag, framework=framework or _client_framework(tag))
    problems += readiness_problems(tag.path, converters)
    return TagReport(tag, tuple(problems), converters)


def _client_framework(tag: TagLayout) -> str | None:
    """The framework whose client state the model states hold (Lightning's), if any."""
    for _, state in read_dicts(tag, tag.of_kind(FileKind.MODEL_STATES, FileKind.ZERO3_MODEL_STATES))[:1]:
        found = _frameworks.client_state_framework(state)
        return found[0] if found else None
    return None


def _stage_of(value: Any) -> int | None:
    if isinstance(value, Opaque) and len(value.args) == 1:
        value = value.args[0]
    return value if type(value) is int else None


def _cross_file(tag: TagLayout) -> list[Problem]:
    problems: list[Problem] = []
    models = read_dicts(tag, tag.of_kind(FileKind.MODEL_STATES, FileKind.ZERO3_MODEL_STATES))
    shards = read_dicts(tag, tag.of_kind(FileKind.OPTIM_STATES))
    names_mp = {
        f.name.mp_rank for f in tag.of_kind(FileKind.MODEL_STATES, FileKind.ZERO3_MODEL_STATES, FileKind.OPTIM_STATES)
    }
    dp_ranks = {f.name.dp_rank for f in tag.of_kind(FileKind.OPTIM_STATES)}

    versions = {v for _, state in models + shards if isinstance(v := state.get("ds_version"), str)}
    if len(versions) > 1:
        problems.append(
            Problem(
                W, "version-mismatch", f"files written by different DeepSpeed versions: {sorted(versions)}", tag.path
            )
        )

    model_file, model_state = models[0] if models else (None, {})
    mp_world = model_state.get(ModuleKeys.MP_WORLD_SIZE)
    found_mp = max((r for r in names_mp if r is not None), default=-1) + 1
    if model_file is not None and type(mp_world) is int and found_mp:
        # checkpoint_parallel_dimensions (tp x pp) is a second witness: where it agrees with
        # mp_world_size and the files are fewer, ranks are missing; otherwise mp_world_size is wrong.
        dims = model_state.get(ModuleKeys.CHECKPOINT_PARALLEL_DIMS)
        degrees = [d for k in ParallelDimsKeys if isinstance(dims, dict) and type(d := dims.get(k)) is int]
        witness = math.prod(degrees) if len(degrees) == len(ParallelDimsKeys) else mp_world
        if mp_world == witness and mp_world > found_mp:
            problems += _missing_mp_ranks(tag, model_file, mp_world, dp_ranks)
        elif mp_world != len(names_mp):
            problems.append(
                Problem(
                    E,
                    "mp-world-size-mismatch",
                    f"mp_world_size is {mp_world}, the folder has {len(names_mp)} mp ranks",
                    model_file.path,
                    f"{ModuleKeys.MP_WORLD_SIZE}",
                )
            )

    stages: dict[int, list[str]] = {}
    partition_counts: dict[int, list[LayoutFile]] = {}
    for file, state in shards:
        inner = state.get(OptimFileKeys.OPTIMIZER_STATE_DICT)
        if not isinstance(inner, dict):
            continue
        stage = _stage_of(inner.get(OptimizerKeys.ZERO_STAGE))
        if stage is not None:
            stages.setdefault(stage, []).append(file.relpath)
        count = inner.get(OptimizerKeys.PARTITION_COUNT)
        counts = count if isinstance(count, list) else [count]
        if counts and all(type(c) is int for c in counts):
            partition_counts.setdefault(max(counts), []).append(file)
    if shards:
        problems += _data_parallel(
            tag, model_file, model_state.get(ModuleKeys.DP_WORLD_SIZE), partition_counts, dp_ranks
        )
    if len(stages) > 1:
        problems.append(
            Problem(E, "stage-mismatch", f"optimizer shards disagree on the ZeRO stage: {sorted(stages)}", tag.path)
        )
    config = models[0][1].get(ModuleKeys.DS_CONFIG) if models else None
    config_stage = _config_stage(config)
    if config_stage is not None and len(stages) == 1 and config_stage not in stages:
        problems.append(
            Problem(
                E,
                "stage-mismatch",
                f"ds_config says ZeRO stage {config_stage}, the optimizer shards say {next(iter(stages))}",
                models[0][0].path,
                f"{ModuleKeys.DS_CONFIG}/zero_optimization/stage",
            )
        )
    problems += _precision(tag, models, config)
    problems += _experts(tag, model_state)
    problems += _expert_optimizer_files(tag)
    problems += _param_shapes(tag, models, shards)
    return problems


def _data_parallel(
    tag: TagLayout,
    model_file: LayoutFile | None,
    dp_world: Any,
    partition_counts: dict[int, list[LayoutFile]],
    dp_ranks: set[int | None],
) -> list[Problem]:
    """Three sources say how many data-parallel ranks there are; the odd one out is the problem.

    ``dp_world_size`` in the model states, ``partition_count`` in the shards (its maximum, as
    zero_to_fp32 reads it), and the shard files present. Where the first two agree and files
    are fewer, ranks are missing; where the files agree with one of them, the other is wrong.
    """
    found = max((r for r in dp_ranks if r is not None), default=-1) + 1
    declared = dp_world if type(dp_world) is int and dp_world >= 1 else None
    problems: list[Problem] = []
    for count, files in sorted(partition_counts.items()):
        if count == found or (count == declared and found < count):
            continue
        for file in files:
            problems.append(
                Problem(
                    E,
                    "partition-count-mismatch",
                    f"partition_count says {count} data-parallel ranks, the folder has shards of {found}"
                    + (f" and dp_world_size is {declared}" if declared is not None else ""),
                    file.path,
                    f"{OptimFileKeys.OPTIMIZER_STATE_DICT}/{OptimizerKeys.PARTITION_COUNT}",
                )
            )
    if declared is not None and model_file is not None and declared != found:
        if declared in partition_counts:
            problems += _missing_shards(tag, model_file, declared, dp_ranks)
        else:
            problems.append(
                Problem(
                    E,
                    "dp-world-size-mismatch",
                    f"dp_world_size is {declared}, the folder has optimizer shards of {found} data-parallel ranks",
                    model_file.path,
                    f"{ModuleKeys.DP_WORLD_SIZE}",
                )
            )
    return problems


def _missing_mp_ranks(
    tag: TagLayout, model_file: LayoutFile, mp_world: int, dp_ranks: set[int | None]
) -> list[Problem]:
    """The files of model-parallel ranks below mp_world_size that the folder lacks."""
    present = {f.relpath for f in tag.files}
    zero3 = bool(tag.of_kind(FileKind.ZERO3_MODEL_STATES))
    prefixes = {f.name.precision or "" for f in tag.of_kind(FileKind.OPTIM_STATES)}
    per_mp = (0 if zero3 else 1) + len(dp_ranks) * (bool(zero3) + (len(prefixes) == 1))
    kinds = (FileKind.MODEL_STATES, FileKind.ZERO3_MODEL_STATES, FileKind.OPTIM_STATES)
    have = len(tag.of_kind(*kinds))
    if not MissingBudget().fits(mp_world * per_mp, have):
        key = f"{ModuleKeys.MP_WORLD_SIZE}"
        return [beyond_files(key, mp_world * per_mp, have, model_file.path, key)]
    expected: list[tuple[str, str]] = []
    for mp in range(mp_world):
        if not zero3:
            expected.append(("missing-model-states", model_states(mp)))
        for dp in sorted(r for r in dp_ranks if r is not None):
            if zero3:
                expected.append(("missing-model-states", zero3_model_states(dp, mp)))
            if len(prefixes) == 1:
                expected.append(("missing-rank", optim_states(dp, mp, next(iter(prefixes)))))
    return [
        Problem(E, code, f"{name} is missing (mp_world_size is {mp_world})", os.path.join(tag.path, name))
        for code, name in expected
        if name not in present
    ]


def _missing_shards(tag: TagLayout, model_file: LayoutFile, dp_world: int, dp_ranks: set[int | None]) -> list[Problem]:
    """Optimizer shards of ranks below dp_world_size that the folder lacks (names cannot tell the last ones)."""
    present = {f.relpath for f in tag.files}
    problems = []
    shards = tag.of_kind(FileKind.OPTIM_STATES)
    prefixes = {f.name.precision or "" for f in shards}
    if len(prefixes) != 1:
        return []
    prefix = prefixes.pop()
    mp_ranks = sorted({f.name.mp_rank or 0 for f in shards})
    if not MissingBudget().fits(dp_world * len(mp_ranks), len(shards)):
        key = f"{ModuleKeys.DP_WORLD_SIZE}"
        return [beyond_files(key, dp_world * len(mp_ranks), len(shards), model_file.path, key)]
    for mp in mp_ranks:
        for dp in range(dp_world):
            name = optim_states(dp, mp, prefix)
            if name not in present and not any(
                p.code == "missing-rank" and p.file and p.file.endswith(name) for p in tag.problems
            ):
                problems.append(
                    Problem(
                        E,
                        "missing-rank",
                        f"{name} is missing (dp_world_size is {dp_world})",
                        os.path.join(tag.path, name),
                    )
                )
    return problems


_EP_GROUP_NAME: Final = re.compile(r"ep_size_(\d{1,18})")  # int() of any digits: ValueError past 4300


def moe_info(tag: TagLayout) -> dict[str, Any] | None:
    """For an MoE checkpoint: experts per MoE layer, their total, and the expert-parallel degree.

    ``num_experts`` comes from the model states; ``ep_size`` from the name DeepSpeed gives the
    experts' optimizer param group (``ep_size_2``), else from ``dp_world_size`` over the expert
    group's ``partition_count``. ``None`` for a checkpoint without MoE.
    """
    experts = tag.of_kind(FileKind.EXPERT_MODEL_STATES)
    per_layer: list[int] | None = None
    for _, state in read_dicts(tag, tag.of_kind(FileKind.MODEL_STATES, FileKind.ZERO3_MODEL_STATES))[:1]:
        value = state.get(ModuleKeys.NUM_EXPERTS)
        if isinstance(value, list) and all(type(n) is int for n in value):
            per_layer = value
    if per_layer is None and not experts:
        return None
    return {
        "num_experts": sum(per_layer) if per_layer is not None else len(experts),
        "num_experts_per_layer": per_layer,
        "ep_size": _ep_size(tag),
        "expert_files": len(experts),
    }


def _ep_size(tag: TagLayout) -> int | None:
    """The expert-parallel degree in the name of the MoE param group (``ep_size_2``) of the optimizer state.

    ZeRO-1/2 keep the optimizer state in the shards (``optimizer_state_dict/base_optimizer_state``);
    without ZeRO it is in the model states (``optimizer``, inside the fp16 wrapper's
    ``optimizer_state_dict`` under fp16) and in each ``expp_rank_R`` file (``optimizer``).
    """
    sources = (
        (FileKind.OPTIM_STATES, (OptimFileKeys.OPTIMIZER_STATE_DICT, OptimizerKeys.BASE_OPTIMIZER_STATE)),
        (FileKind.MODEL_STATES, (ModuleKeys.OPTIMIZER,)),
        (FileKind.MODEL_STATES, (ModuleKeys.OPTIMIZER, OptimFileKeys.OPTIMIZER_STATE_DICT)),
        (FileKind.EXPERT_OPTIM_STATES, (ModuleKeys.OPTIMIZER,)),
    )
    for kind, path in sources:
        for _, state in read_dicts(tag, tag.of_kind(kind))[:1]:
            value: Any = state
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            groups = value.get(OptimizerKeys.PARAM_GROUPS) if isinstance(value, dict) else None
            for group in groups if isinstance(groups, list) else ():
                name = group.get("name") if isinstance(group, dict) and group.get("moe") else None
                match = _EP_GROUP_NAME.fullmatch(name) if isinstance(name, str) else None
                if match:
                    return int(match.group(1))
    return None


def _expert_optimizer_files(tag: TagLayout) -> list[Problem]:
    """Without ZeRO, every expert-parallel rank writes ``expp_rank_{R}_mp_rank_XX_optim_states.pt``."""
    present = tag.of_kind(FileKind.EXPERT_OPTIM_STATES)
    if tag.zero_stage != 0 or tag.universal or not (present or tag.of_kind(FileKind.EXPERT_MODEL_STATES)):
        return []
    ep_size = _ep_size(tag)
    if ep_size is None:
        return []
    names = {f.relpath for f in present}
    already = {p.file for p in tag.problems}
    mp_ranks = sorted({f.name.mp_rank or 0 for f in tag.of_kind(FileKind.MODEL_STATES)} or {0})
    if not MissingBudget().fits(ep_size * len(mp_ranks), len(present)):
        claim = f"the MoE param group's name ep_size_{ep_size}"
        return [beyond_files(claim, ep_size * len(mp_ranks), len(present), tag.path)]
    problems = []
    for mp in mp_ranks:
        for rank in range(ep_size):
            name = expert_optim_states(rank, mp)
            path = os.path.join(tag.path, name)
            if name not in names and path not in already:
                problems.append(
                    Problem(
                        E,
                        "missing-expert-optim",
                        f"{name} is missing (the MoE param group says ep_size {ep_size}; without ZeRO every "
                        "expert-parallel rank writes its optimizer state there)",
                        path,
                    )
                )
    return problems


def _experts(tag: TagLayout, model_state: dict[Any, Any]) -> list[Problem]:
    """Every expert file that num_experts implies (names alone miss a layer's last experts)."""
    per_layer = model_state.get(ModuleKeys.NUM_EXPERTS)
    experts = tag.of_kind(FileKind.EXPERT_MODEL_STATES)
    if not isinstance(per_layer, list) or not experts:
        return []
    present = {f.relpath for f in experts}
    already = {p.file for p in tag.problems}
    mp_ranks = sorted({f.name.mp_rank or 0 for f in experts})
    claimed = sum(count for count in per_layer if type(count) is int and count > 0) * len(mp_ranks)
    if not MissingBudget().fits(claimed, len(experts)):
        key = f"{ModuleKeys.NUM_EXPERTS}"
        model_file = tag.of_kind(FileKind.MODEL_STATES, FileKind.ZERO3_MODEL_STATES)[:1] or experts[:1]
        return [beyond_files(key, claimed, len(experts), model_file[0].path, key)]
    problems = []
    for mp in mp_ranks:
        for layer, count in enumerate(per_layer):
            for expert in range(count if type(count) is int else 0):
                name = expert_model_states(expert, mp, layer)
                path = os.path.join(tag.path, name)
                if name not in present and path not in already:
                    problems.append(
                        Problem(E, "missing-expert", f"{name} is missing (num_experts is {per_layer})", path)
                    )
    return problems


def _config_stage(config: Any) -> int | None:
    if not isinstance(config, dict):
        return None
    section = config.get("zero_optimization")
    if not isinstance(section, dict):
        return 0 if section is None else None
    stage = section.get("stage", 0)
    return stage if type(stage) is int else None


def _precision(tag: TagLayout, models: list[tuple[LayoutFile, dict[Any, Any]]], config: Any) -> list[Problem]:
    if not isinstance(config, dict) or not models:
        return []
    bf16 = any(isinstance(config.get(k), dict) and config[k].get("enabled") is True for k in ("bf16", "bfloat16"))
    prefixes = {f.name.precision for f in tag.of_kind(FileKind.OPTIM_STATES)}
    problems = []
    if bf16 and prefixes - {"bf16"}:
        problems.append(
            Problem(
                E,
                "precision-mismatch",
                "ds_config enables bf16, but some optimizer shards lack the bf16_ prefix DeepSpeed gives them",
                tag.path,
            )
        )
    if not bf16 and "bf16" in prefixes:
        problems.append(
            Problem(
                E,
                "precision-mismatch",
                "optimizer shards have the bf16_ prefix, but ds_config does not enable bf16",
                tag.path,
            )
        )
    return problems


def _numel(shape: Any) -> int | None:
    if isinstance(shape, (tuple, list)) and all(type(n) is int and n >= 0 for n in shape):
        return math.prod(shape)
    return None


def _odd_partition(sizes: list[tuple[LayoutFile, int]], *, short: bool) -> tuple[LayoutFile, int] | None:
    """The one shard whose partition is shorter (``short``) or longer than all the others', which
    DeepSpeed pads to one size: the damaged file, rather than the model states that list the shapes."""
    if len(sizes) < 2:
        return None
    edge = max(n for _, n in sizes) if short else min(n for _, n in sizes)
    odd = [(f, n) for f, n in sizes if n != edge]
    return odd[0] if len(odd) == 1 and len({n for _, n in sizes}) == 2 else None


def _param_shapes(
    tag: TagLayout, models: list[tuple[LayoutFile, dict[Any, Any]]], shards: list[tuple[LayoutFile, dict[Any, Any]]]
) -> list[Problem]:
    """The fp32 partitions of all shards hold exactly the elements ``param_shapes`` lists (plus padding)."""
    if not models or not shards or tag.mp_world_size not in (None, 1) or tag.zero_stage not in (1, 2, 3):
        return []
    model_file, model = models[0]
    shapes = model.get(ModuleKeys.PARAM_SHAPES)
    if not isinstance(shapes, list):
        return []
    expected = []
    for group in shapes:
        sizes = [_numel(s) for s in group.values()] if isinstance(group, dict) else [None]
        if None in sizes:
            return []
        expected.append(sum(s for s in sizes if s is not None))
    key = OptimizerKeys.FP32_FLAT_GROUPS if tag.zero_stage == 3 else OptimizerKeys.SINGLE_PARTITION_OF_FP32_GROUPS
    totals = [0] * len(expected)
    paddings = [0] * len(expected)
    per_shard: list[list[tuple[LayoutFile, int]]] = [[] for _ in expected]  # per group: each shard's partition
    counts: Any = None  # partition_count of the first shard: an int, or a list per group
    for shard, state in shards:
        inner = state.get(OptimFileKeys.OPTIMIZER_STATE_DICT)
        if not isinstance(inner, dict):
            return []
        groups = inner.get(key)
        if (
            not isinstance(groups, list)
            or len(groups) != len(expected)
            or not all(isinstance(t, TensorInfo) for t in groups)
        ):
            return []
        for index, tensor in enumerate(groups):
            totals[index] += tensor.numel
            per_shard[index].append((shard, tensor.numel))
        alignment = inner.get(OptimizerKeys.PARAM_ALIGNMENT_PADDINGS)
        if isinstance(alignment, list):
            for index, group_padding in enumerate(alignment[: len(expected)]):
                if isinstance(group_padding, list):
                    paddings[index] += sum(p for p in group_padding if type(p) is int)
        if counts is None:
            counts = inner.get(OptimizerKeys.PARTITION_COUNT)
    per_group = counts if isinstance(counts, list) else [counts] * len(expected)
    problems = []
    for index, want in enumerate(expected):
        partitions = per_group[index] if index < len(per_group) else None
        if type(partitions) is not int or partitions < 1 or len(shards) % partitions:
            continue
        replicas = len(shards) // partitions
        low = want * replicas
        high = low + paddings[index] + (len(shards) * len(shapes[index]) if tag.zero_stage == 3 else 0)
        if not low <= totals[index] <= high:
            odd = _odd_partition(per_shard[index], short=totals[index] < low)
            if odd is not None:
                shard, numel = odd
                others = {n for f, n in per_shard[index] if f is not shard}
                problems.append(
                    Problem(
                        E,
                        "param-shapes-mismatch",
                        f"param group {index}: this shard's fp32 partition holds {numel} elements, the other "
                        f"shards' {sorted(others)[0]} each: too {'short' if totals[index] < low else 'long'} for "
                        f"the {want} elements param_shapes lists",
                        shard.path,
                        f"{OptimFileKeys.OPTIMIZER_STATE_DICT}/{key}[{index}]",
                    )
                )
                continue
            problems.append(
                Problem(
                    E,
                    "param-shapes-mismatch",
                    f"param group {index}: param_shapes list {want} elements, the fp32 partitions of the "
                    f"{len(shards)} shards hold {totals[index]}",
                    model_file.path,
                    f"{ModuleKeys.PARAM_SHAPES}[{index}]",
                )
            )
    return problems
