"""ZeRO-1/2 (and the BF16 optimizer) to universal: the files ``ds_to_universal`` 0.19.8 writes,
each tensor's bytes located in the optimizer shards and model states, from the pickles alone.

``ds_to_universal`` (``deepspeed/checkpoint/ds_to_universal.py``; ``DTU`` below) does it in
three passes through temporary files; the plan gets the same tensors in one:

1. extract (``extract_zero_shards``): for every pipeline stage, tensor-parallel rank and
   data-parallel rank (in that order), each parameter of ``param_slice_mappings`` gets the
   fragment ``[start, start + numel)`` of its group's flat ``exp_avg``, ``exp_avg_sq`` (the
   base optimizer's state) and fp32 partition (``single_partition_of_fp32_groups``), and the
   group's ``step`` whole. A later stage's fragment replaces an earlier one's of the same
   name and ranks (a tied parameter), except for ``pipeline_replicated_parameter_patterns``,
   which stages after the first skip.
2. merge (``merge_tp_slices``): per parameter of the model states' ``param_shapes``, each
   tensor-parallel rank's fragments joined in data-parallel order and shaped as that rank's
   ``param_shapes`` say, then the ranks merged by ``universal_checkpoint_info``: replicated
   (rank 0's), averaged, two sub-parameters, row parallel (``cat_dim`` 1) or ``cat_dim`` 0,
   vocabulary padding cut (a view: the file keeps the whole merged storage). ``step.pt`` is
   the lowest rank's ``step``; ``fp32.pt``, ``exp_avg.pt``, ``exp_avg_sq.pt`` are
   ``{[cat_dim], [param_n_sub_params], [vocab_tensor], param}`` in that key order.
3. every key of every ``mp_rank_*`` file's ``module`` without an ``fp32.pt`` by then (frozen
   parameters, buffers, tied aliases) gets ``{'param': tensor.float()}``: the tensor itself
   (its whole storage) where it is float32 already, else a float32 copy. The pipeline engine
   saves no ``module`` there, so a pipeline's frozen parameters and buffers get no file.

``zero/optimizer_state.pt`` is the first shard's ``optimizer_state_dict`` as DTU loads it
(``partition_count`` set to the data-parallel degree, ``group_paddings`` to zeros) without
``base_optimizer_state``, ``param_slice_mappings`` and ``single_partition_of_fp32_groups``,
plus the base optimizer's ``param_groups``; the ``mp_rank_*`` files are copied as they are
(the pipeline's layer files are not).

Two checks of values ``ds_to_universal`` makes are not made here, the plan coming from the
pickles alone: that a tensor-parallel replicated parameter is equal on every rank (it writes rank
0's, as the plan does) and that every rank's ``step`` is equal (the lowest rank's is written).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, replace

from .._export._plan import Source, _shape
from .._export._pt import PtStorage, PtTensor
from .._export._ranges import chunk2, coalesce, concatenate, cut_range
from .._export._types import ExportError, ExportTensor
from .._read._pickle import Opaque
from .._read._torch import DTYPE_ITEMSIZE, TensorInfo
from ..naming import FileKind
from ._types import NotRestored, UniversalFile

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, Final

    from .._check._layout import LayoutFile
    from .._export._spans import FileSpan

__all__ = ["content_bytes", "plan_zero12", "whole_storage"]

INFO: Final = "universal_checkpoint_info"
# UNIVERSAL_CHECKPOINT_VERSION_VALUE (deepspeed/checkpoint/constants.py): what --inject_missing_state puts in.
_INJECTED: Final = {"universal_checkpoint_version": 0.4}
_AFFINE_MAP_FORMAT_VERSION: Final = 1  # deepspeed/checkpoint/affine.py
_STATES: Final = ("fp32", "exp_avg", "exp_avg_sq")
_SHARDED: Final = ("base_optimizer_state", "param_slice_mappings", "single_partition_of_fp32_groups")
# reshape_utils.get_zero_files: the first of these prefixes that names any file.
_ZERO_PREFIXES: Final = ("zero_pp_rank_", "fp16_zero_pp_rank_", "bf16_zero_pp_rank_")
# deepspeed_checkpoint.LAYER_FILE_PREFIX_PATTERN, matched on the whole name.
_PIPELINE_LAYER: Final = re.compile(r"layer_(\d+)-model_.*")
# The category patterns of merge_tp_slices, in the order it tries them.
_REPLICATED: Final = "tp_replicated_parameter_patterns"
_AVERAGED: Final = "parameter_to_average_patterns"
_TWO_SUB_PARAMS: Final = "parameter_with_2_sub_params_cat_dim_0"
_ROW_PARALLEL: Final = "parameter_with_row_parallelism_patterns"
_VOCABULARY: Final = "vocabulary_parameter_patterns"
_SUB_PARAMS: Final = "parameter_with_sub_params"


@dataclass(frozen=True, slots=True)
class _Fragment:
    """One data-parallel rank's fragment of one parameter: each state's byte ranges, and ``step``."""

    file: str
    numel: int
    states: dict[str, tuple[str, tuple[FileSpan, ...]]]
    """By state (fp32, exp_avg, exp_avg_sq): its dtype and byte ranges."""
    step: Any
    """The group's ``step`` as the shard holds it (a tensor, a number), or :data:`_NO_STEP`."""


_NO_STEP: Final = object()


def plan_zero12(
    source: Source, *, inject_missing_state: bool, strict: bool
) -> tuple[str, list[UniversalFile], list[NotRestored]]:
    """The universal files of a ZeRO-1/2 tag (the BF16 optimizer's too; tensor and pipeline
    parallel), as ``ds_to_universal`` writes them; its kind (``"zero-1/2"``, ``"zero-1/2 tp"``
    or ``"pipeline"``) and the tensors its loader does not restore."""
    layout = source.layout
    model_files = sorted(layout.of_kind(FileKind.MODEL_STATES), key=lambda f: f.relpath)
    layers = [f for f in layout.files if _PIPELINE_LAYER.fullmatch(os.path.basename(f.relpath))]
    for prefix in ("mp_rank_", *(("layer_", "layer_01") if layers else ())):
        if not any(os.path.basename(f.relpath).startswith(prefix) for f in layout.files):
            raise ExportError(
                layout.path, f"seems a bogus DeepSpeed checkpoint folder: Cannot find {prefix}* files in there"
            )
    zero_files = _zero_files(layout.of_kind(FileKind.OPTIM_STATES))
    if not zero_files:
        raise ExportError(layout.path, "has no ZeRO files (zero_pp_rank_*, fp16_/bf16_zero_pp_rank_*)")
    models = [(f, source.checkpoint(f.relpath)) for f in model_files]
    for _, checkpoint in models:
        if not isinstance(checkpoint.data, dict):
            raise ExportError(checkpoint.path, f"holds {type(checkpoint.data).__name__}, not a model state dict")
        for key in ("ds_autoep_layers", "autoep_layers"):
            if checkpoint.data.get(key) is not None:
                raise ExportError(checkpoint.path, f"has AutoEP layers ({key}): their conversion is not built yet")
    pp, tp, dp = _degrees(source, [c for _, c in models], len(zero_files))
    info = models[0][1].data.get(INFO)
    if info is None:
        if not inject_missing_state:
            raise ExportError(
                models[0][1].path,
                f"Required {INFO} state is missing in checkpoint. Verify that client creates this state "
                "(or inject it: it says how to merge tensor-parallel ranks, and a checkpoint of one rank "
                "needs none)",
                option="inject_missing_state",
            )
        info = dict(_INJECTED)
    if not isinstance(info, dict):
        raise ExportError(models[0][1].path, f"{INFO} is {type(info).__name__}, not a dict")
    unsupported = info.get("autotp_unsupported_parameter_patterns") or {}
    if unsupported:
        if isinstance(unsupported, dict):
            details = ", ".join(f"{pattern}: {reason}" for pattern, reason in sorted(unsupported.items()))
        else:
            details = repr(unsupported)
        raise ExportError(models[0][1].path, f"AutoTP universal checkpoint conversion is not supported for {details}")
    shapes = _slice_shapes(source, models, pp, tp)
    fragments = _extract(source, zero_files, info, pp, tp, dp)
    patterns = _Patterns(info, models[0][1].path)
    files: list[UniversalFile] = []
    written: set[str] = set()
    for name, per_tp in shapes.items():
        planned = _merge(source, name, per_tp, fragments.get(name, {}), patterns, info)
        files += planned
        if any(f.name.endswith("/fp32.pt") for f in planned):
            written.add(name)
    if shapes and strict and patterns.unmatched:
        raise ExportError(
            models[0][1].path,
            f"Unused patterns={sorted(patterns.unmatched)} while merging tp slices (of {INFO}: each must "
            "match a parameter; not strict, they pass)",
            option="strict",
        )
    not_restored: list[NotRestored] = []
    for file, checkpoint in models:
        module = checkpoint.data.get("module")
        if module is None:
            continue  # the pipeline engine keeps the weights in the layer files
        if not isinstance(module, dict):
            raise ExportError(checkpoint.path, f"'module' is {type(module).__name__}, not a state dict")
        buffers = checkpoint.data.get("buffer_names") or []
        shared = checkpoint.data.get("shared_params") or {}
        for name, tensor in module.items():
            _check_name(name, checkpoint.path)
            if name in written:
                continue
            written.add(name)
            param = _as_float(source, file.relpath, tensor, name)
            target = f"zero/{name}/fp32.pt"
            files.append(UniversalFile(target, name, None, content_bytes(param), {"param": param}))
            # The loader restores what the optimizer holds (a parameter without fragments too: it
            # reads this file) and a tied alias with the parameter it shares; not the rest.
            if name not in shapes and name not in shared:
                not_restored.append(NotRestored(name, "buffer" if name in buffers else "frozen", target))
    optimizer_state = _optimizer_state(source, zero_files[0], dp)
    files.append(UniversalFile("zero/optimizer_state.pt", None, None, content_bytes(optimizer_state), optimizer_state))
    for file, checkpoint in models:
        files.append(UniversalFile(os.path.basename(file.relpath), None, checkpoint.path, file.size))
    kind = "pipeline" if layers else "zero-1/2 tp" if tp > 1 else "zero-1/2"
    return kind, files, not_restored


def whole_storage(
    source: Source, file: str, tensor: Any, what: str, storages: dict[tuple[str, str], PtStorage] | None = None
) -> PtTensor:
    """``tensor`` of ``file`` as ``torch.save`` writes it again: its whole storage record, with
    its shape, stride and offset. ``storages`` (one output file's) keeps one :class:`PtStorage`
    per source record, so tensors sharing a storage share it in the output as they did."""
    path = source.path(file)
    if not isinstance(tensor, TensorInfo):
        raise ExportError(path, f"{what} is {type(tensor).__name__}, not a tensor")
    storage = tensor.storage
    if storage is None:
        raise ExportError(path, f"{what} has no storage (meta device): no bytes to copy")
    if storage.dtype != tensor.dtype:
        raise ExportError(path, f"{what} is {tensor.dtype} over a {storage.dtype} storage")
    key = (file, storage.key)
    found = storages.get(key) if storages is not None else None
    if found is None:
        record = TensorInfo(storage.dtype, (storage.numel,), (1,), 0, storage)
        span, _ = source.span(file, record, what)
        whole = ExportTensor(what, (storage.numel,), storage.dtype, storage.dtype, (span,), "trainable")
        found = PtStorage(storage.dtype, storage.numel, whole)
        if storages is not None:
            storages[key] = found
    return PtTensor(found, tensor.shape, tensor.stride, tensor.storage_offset, tensor.requires_grad)


def content_bytes(content: Any) -> int:
    """Bytes of tensor data in a file's object: every distinct storage once."""
    seen: dict[int, int] = {}

    def walk(value: Any) -> None:
        if isinstance(value, PtTensor):
            seen[id(value.storage)] = value.storage.numel * DTYPE_ITEMSIZE[value.storage.dtype]
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)
        elif isinstance(value, Opaque):
            walk((value.args, value.kwargs or {}, value.state, value.items, value.dict_items))

    walk(content)
    return sum(seen.values())


def _zero_files(optim: Sequence[LayoutFile]) -> list[LayoutFile]:
    """``get_zero_files``: the optimizer shards of the first prefix any file has, by (dp, mp) rank."""
    for prefix in _ZERO_PREFIXES:
        found = [f for f in optim if os.path.basename(f.relpath).startswith(prefix)]
        if found:
            return sorted(found, key=lambda f: (f.name.dp_rank or 0, f.name.mp_rank or 0))
    return []


def _degrees(source: Source, models: Sequence[Any], zero_count: int) -> tuple[int, int, int]:
    """Pipeline, tensor and data-parallel degrees as ``get_model_3d_descriptor_from_metadata``
    finds them: from ``checkpoint_parallel_dimensions``, else from the file counts."""
    path = source.layout.path
    found = []
    missing = []
    for checkpoint in models:
        dims = checkpoint.data.get("checkpoint_parallel_dimensions")
        if dims is None:
            missing.append(os.path.basename(checkpoint.path))
            continue
        if not isinstance(dims, dict):
            raise ExportError(checkpoint.path, "checkpoint_parallel_dimensions is not a dict")
        values = []
        for key in ("pp_degree", "tp_degree"):
            value = dims.get(key)
            if type(value) is not int or value < 1:
                raise ExportError(
                    checkpoint.path, f"checkpoint_parallel_dimensions[{key!r}] is {value!r:.40}, not a positive int"
                )
            values.append(value)
        found.append(tuple(values))
    if found:
        if missing:
            raise ExportError(path, f"checkpoint_parallel_dimensions is missing from model-state files: {missing}")
        if len(set(found)) != 1:
            raise ExportError(path, f"checkpoint_parallel_dimensions disagrees across model-state files: {found}")
        pp, tp = found[0]
        if len(models) != pp * tp:
            raise ExportError(
                path, f"has {len(models)} model-state files; checkpoint_parallel_dimensions say pp {pp} * tp {tp}"
            )
    else:
        first_layer = [f for f in source.layout.files if os.path.basename(f.relpath).startswith("layer_01")]
        tp = len(first_layer) if first_layer else len(models)  # a pipeline's first layer: one file per rank
        pp = len(models) // tp if first_layer else 1
    if pp < 1 or len(models) % tp or zero_count % (pp * tp):
        raise ExportError(path, f"has {zero_count} optimizer shards, no multiple of pp {pp} * tp {tp}")
    return pp, tp, max(1, zero_count // (pp * tp))


def _slice_shapes(
    source: Source, models: Sequence[tuple[LayoutFile, Any]], pp: int, tp: int
) -> dict[str, list[tuple[int, ...] | None]]:
    """``_group_per_tp_shapes``: every parameter's shape on each tensor-parallel rank, the
    pipeline stages of a rank joined (file ``i`` is stage ``i // tp``, rank ``i % tp``)."""
    per_tp: list[dict[str, tuple[int, ...]]] = [{} for _ in range(tp)]
    for index, (_, checkpoint) in enumerate(models):
        groups = checkpoint.data.get("param_shapes")
        if not isinstance(groups, (list, tuple)) or not all(isinstance(g, dict) for g in groups):
            raise ExportError(checkpoint.path, "param_shapes must contain dictionaries")
        rank = per_tp[index % tp]
        for group in groups:
            for name, value in group.items():
                shape = _shape(value, checkpoint.path, f"param_shapes {name!r}")
                if name in rank and rank[name] != shape:
                    raise ExportError(
                        checkpoint.path,
                        f"Pipeline replicas of {name} on tp rank {index % tp} disagree on shape: "
                        f"{rank[name]} vs {shape}",
                    )
                rank[name] = shape
    names = list(dict.fromkeys(name for rank in per_tp for name in rank))
    return {name: [rank.get(name) for rank in per_tp] for name in names}


def _extract(
    source: Source, zero_files: Sequence[LayoutFile], info: dict[str, Any], pp: int, tp: int, dp: int
) -> dict[str, dict[int, dict[int, _Fragment]]]:
    """Every parameter's fragments by tensor-parallel then data-parallel rank (``extract_zero_shards``)."""
    replicated = info.get("pipeline_replicated_parameter_patterns") or []
    fragments: dict[str, dict[int, dict[int, _Fragment]]] = {}
    for stage in range(pp):
        for rank in range(tp):
            for dp_rank in range(dp):
                file = zero_files[dp_rank * pp * tp + stage * tp + rank]
                if (file.name.dp_rank, file.name.mp_rank) != (dp_rank, stage * tp + rank):
                    raise ExportError(
                        source.path(file.relpath),
                        f"is the shard of ranks dp {file.name.dp_rank} / mp {file.name.mp_rank} where the layout "
                        f"needs dp {dp_rank} / mp {stage * tp + rank}",
                    )
                for name, fragment in _fragments(source, file):
                    if stage > 0 and any(re.match(p, name) for p in replicated):
                        continue  # tied weights replicated in the first and last stages: the first's
                    fragments.setdefault(name, {}).setdefault(rank, {})[dp_rank] = fragment
    return fragments


def _fragments(source: Source, file: LayoutFile) -> list[tuple[str, _Fragment]]:
    """One shard's fragments, group by group, as ``param_slice_mappings`` lists them."""
    checkpoint = source.checkpoint(file.relpath)
    path = checkpoint.path
    optim = checkpoint.data.get("optimizer_state_dict") if isinstance(checkpoint.data, dict) else None
    if not isinstance(optim, dict):
        raise ExportError(path, "has no 'optimizer_state_dict'")
    for key in _SHARDED:
        if key not in optim:
            raise ExportError(path, f"optimizer_state_dict has no {key!r}, which ds_to_universal reads")
    base = optim["base_optimizer_state"]
    groups = base.get("state") if isinstance(base, dict) else None
    mappings = optim["param_slice_mappings"]
    fp32 = optim["single_partition_of_fp32_groups"]
    if not isinstance(groups, (dict, list)) or not isinstance(mappings, list) or not isinstance(fp32, list):
        raise ExportError(path, "optimizer_state_dict's base_optimizer_state, param_slice_mappings or fp32 groups "
                          "are not what DeepSpeed writes")  # fmt: skip
    paddings = optim.get("group_paddings")
    found: list[tuple[str, _Fragment]] = []
    for group in range(len(groups)):
        where = f"base_optimizer_state['state'][{group}]"
        state = groups[group] if isinstance(groups, list) else groups.get(group)
        if not isinstance(state, dict) or "exp_avg" not in state or "exp_avg_sq" not in state:
            raise ExportError(path, f"{where} has no exp_avg / exp_avg_sq (ds_to_universal converts Adam's state)")
        if group >= len(fp32) or group >= len(mappings) or not isinstance(mappings[group], dict):
            raise ExportError(path, f"group {group} has no fp32 partition or param_slice_mappings")
        padding = paddings[group] if isinstance(paddings, list) and group < len(paddings) else 0
        flats: dict[str, tuple[str, list[tuple[FileSpan, int]], int]] = {}
        for key, tensor, what, cut in (
            ("exp_avg", state["exp_avg"], f"{where}['exp_avg']", padding),
            ("exp_avg_sq", state["exp_avg_sq"], f"{where}['exp_avg_sq']", padding),
            ("fp32", fp32[group], f"single_partition_of_fp32_groups[{group}]", 0),
        ):
            span, numel = source.span(file.relpath, tensor, what, "float32" if key == "fp32" else None)
            flats[key] = (tensor.dtype, [(span, numel)], numel - (cut if type(cut) is int else 0))
        step = state.get("step", _NO_STEP)
        for name, address in mappings[group].items():
            start, numel = _address(address, path, name)
            states = {}
            for key, (dtype, pieces, length) in flats.items():
                if start + numel > length:
                    raise ExportError(
                        path,
                        f"param_slice_mappings[{group}][{name!r}] is elements {start}..{start + numel}, "
                        f"group {group}'s {key} has {length}",
                    )
                states[key] = (dtype, cut_range(pieces, start, numel, DTYPE_ITEMSIZE[dtype]))
            found.append((name, _Fragment(file.relpath, numel, states, step)))
    return found


def _address(address: Any, path: str, name: str) -> tuple[int, int]:
    """A ``fragment_address``'s start and numel."""
    fields = address.state if isinstance(address, Opaque) else None
    if isinstance(address, Opaque) and fields is None and isinstance(address.kwargs, dict):
        fields = address.kwargs
    if isinstance(fields, dict):
        start, numel = fields.get("start"), fields.get("numel")
        if type(start) is int and type(numel) is int and start >= 0 and numel >= 0:
            return start, numel
    raise ExportError(path, f"param_slice_mappings[{name!r}] is {address!r:.80}, not a fragment_address")


class _Patterns:
    """``universal_checkpoint_info``'s merge patterns, matched as ``merge_tp_slices`` matches
    them: a pattern counts as used once tried and matched (the strict check reports the rest)."""

    def __init__(self, info: dict[str, Any], path: str) -> None:
        self.info = info
        self.path = path
        self.lists: dict[str, list[str]] = {}
        for key in (_REPLICATED, _AVERAGED, _ROW_PARALLEL, _VOCABULARY, _TWO_SUB_PARAMS):
            value = info.get(key) or []
            if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
                raise ExportError(path, f"{INFO}[{key!r}] is {value!r:.60}, not a list of patterns")
            self.lists[key] = value
        self.sub_params: list[str] = []
        for entry in info.get(_SUB_PARAMS) or []:
            found = entry.get("patterns") if isinstance(entry, dict) else None
            if not isinstance(found, list) or not all(isinstance(p, str) for p in found):
                raise ExportError(path, f"{INFO}[{_SUB_PARAMS!r}] has {entry!r:.60}, not a SubparamShape")
            self.sub_params += found
        self.unmatched = set(self.sub_params).union(*self.lists.values())
        affine = info.get("affine_map") or {}
        if not isinstance(affine, dict):
            raise ExportError(path, f"{INFO}['affine_map'] is not a dict")
        version = affine.get("version", _AFFINE_MAP_FORMAT_VERSION)
        if not isinstance(version, (int, float)) or version > _AFFINE_MAP_FORMAT_VERSION:
            raise ExportError(
                path,
                f"Checkpoint records affine map format version {version}, but ds_to_universal understands up to "
                f"{_AFFINE_MAP_FORMAT_VERSION}",
            )
        self.affine = [p for p in affine.get("params") or {} if isinstance(p, str)]

    def matched(self, key: str, name: str) -> bool:
        matched = [p for p in self.lists[key] if re.match(p, name)]
        if len(matched) > 1:
            raise ExportError(self.path, f"Got more than one matching patterns={matched} for {name}")
        self.unmatched.difference_update(matched)
        return bool(matched)

    def refuse_unsupported(self, name: str) -> None:
        """Affine maps and ``parameter_with_sub_params``: not converted (yet)."""
        if any(re.match(p, name) for p in self.affine):
            raise ExportError(self.path, f"{INFO}['affine_map'] covers {name!r}: its conversion is not built yet")
        if any(re.match(p, name) for p in self.sub_params):
            raise ExportError(self.path, f"{INFO}[{_SUB_PARAMS!r}] covers {name!r}: its conversion is not built yet")


def _merge(
    source: Source,
    name: str,
    per_tp: Sequence[tuple[int, ...] | None],
    fragments: dict[int, dict[int, _Fragment]],
    patterns: _Patterns,
    info: dict[str, Any],
) -> list[UniversalFile]:
    """One parameter's ``step.pt``, ``fp32.pt``, ``exp_avg.pt``, ``exp_avg_sq.pt`` (``merge_tp_slices``)."""
    path = source.layout.path
    patterns.refuse_unsupported(name)
    _check_name(name, path)
    ranks = [r for r in range(len(per_tp)) if fragments.get(r)]
    files: list[UniversalFile] = []
    if ranks:
        first = fragments[ranks[0]]
        step = first[min(first)].step
        if step is not _NO_STEP:
            value = whole_storage(source, first[min(first)].file, step, f"{name} step") if isinstance(
                step, TensorInfo) else step  # fmt: skip
            files.append(UniversalFile(f"zero/{name}/step.pt", name, None, content_bytes(value), value))
    elif any(patterns.matched(key, name) for key in (_REPLICATED, _AVERAGED, _TWO_SUB_PARAMS)):
        raise ExportError(path, f"{name!r} has no optimizer fragment on any rank: ds_to_universal fails to merge it")
    else:
        return []  # no optimizer state: the module's value is written instead, if there is one
    for missing in (r for r in range(len(per_tp)) if r not in ranks):
        shape = per_tp[missing]
        if shape is None or math.prod(shape) != 0:
            raise ExportError(
                path, f"No fragment files for tp rank {missing} of {name!r}, whose shape {shape} is not empty"
            )
    for state in _STATES:
        slices = [_slice(source, name, per_tp[r], fragments.get(r, {}), state) for r in range(len(per_tp))]
        dtype = slices[0].source_dtype
        if any(s.source_dtype != dtype for s in slices):
            raise ExportError(path, f"{name!r} {state}: its tensor-parallel slices differ in dtype")
        itemsize = DTYPE_ITEMSIZE[dtype]
        keys: dict[str, Any] = {}
        merged: ExportTensor
        if patterns.matched(_REPLICATED, name):
            merged = slices[0]  # ds_to_universal asserts the ranks' values are equal; it writes rank 0's
        elif patterns.matched(_AVERAGED, name):
            if any(s.shape != slices[0].shape for s in slices):
                raise ExportError(path, f"{name!r} is averaged, but its shapes differ across ranks")
            merged = replace(slices[0], sources=(), mean_of=tuple(s.sources for s in slices))
        elif patterns.matched(_TWO_SUB_PARAMS, name):
            halves = [chunk2(s, itemsize) for s in slices]
            joined = [span for h in halves for span in h[0]] + [span for h in halves for span in h[1]]
            rows = sum(s.shape[0] for s in slices)
            merged = replace(slices[0], shape=(rows, *slices[0].shape[1:]), sources=coalesce(joined))
            keys = {"cat_dim": 0, "param_n_sub_params": 2}
        else:
            dim = 1 if patterns.matched(_ROW_PARALLEL, name) else 0
            shape, _, spans = concatenate(slices, dim, itemsize, path)
            merged = replace(slices[0], shape=shape, sources=spans)
            keys = {"cat_dim": dim}
        view = merged.shape
        if patterns.matched(_VOCABULARY, name):
            vocab = info.get("original_vocab_size")
            if type(vocab) is not int or vocab < 0 or len(view) < 2:
                raise ExportError(
                    path, f"{name!r} {view} is a vocabulary parameter; original_vocab_size is {vocab!r:.40}"
                )
            view = (min(vocab, view[0]), *view[1:])  # param[:original_vocab_size, :]: a view of the merged tensor
            keys["vocab_tensor"] = True
        storage = PtStorage(dtype, merged.numel, merged)
        content = {**keys, "param": PtTensor(storage, view)}
        files.append(UniversalFile(f"zero/{name}/{state}.pt", name, None, content_bytes(content), content))
    return files


def _slice(
    source: Source, name: str, shape: tuple[int, ...] | None, fragments: dict[int, _Fragment], state: str
) -> ExportTensor:
    """One tensor-parallel rank's ``state`` of ``name``: its fragments joined in data-parallel
    order, shaped as the rank's ``param_shapes`` say (``_merge_zero_shards``)."""
    path = source.layout.path
    if not fragments:  # a rank holding none of an uneven parameter: an empty slice of its shape
        assert shape is not None  # refused by the caller otherwise
        return ExportTensor(name, shape, "float32", "float32", (), "trainable")
    ordered = [fragments[d] for d in sorted(fragments)]
    dtypes = {f.states[state][0] for f in ordered}
    if len(dtypes) != 1:
        raise ExportError(path, f"{name!r} {state}: its fragments differ in dtype across ranks: {sorted(dtypes)}")
    numel = sum(f.numel for f in ordered)
    if shape is None or math.prod(shape) != numel:
        raise ExportError(
            source.path(ordered[0].file),
            f"shape '{list(shape) if shape is not None else None}' is invalid for input of size {numel}: the "
            f"fragments of {name!r} in param_slice_mappings do not make the parameter param_shapes names "
            "(ds_to_universal fails here too)",
        )
    spans = coalesce([span for f in ordered for span in f.states[state][1]])
    dtype = dtypes.pop()
    return ExportTensor(name, shape, dtype, dtype, spans, "trainable")


def _as_float(source: Source, file: str, tensor: Any, name: str) -> PtTensor:
    """``tensor.float()`` as ``torch.save`` writes it: the tensor itself where it is float32
    (``.float()`` returns it, whole storage and all), else a float32 copy."""
    what = f"module[{name!r}]"
    if isinstance(tensor, TensorInfo) and tensor.dtype == "float32":
        return whole_storage(source, file, tensor, what)
    if not isinstance(tensor, TensorInfo) or tensor.dtype not in ("bfloat16", "float16", "float64"):
        kind = tensor.dtype if isinstance(tensor, TensorInfo) else type(tensor).__name__
        raise ExportError(
            source.path(file), f"{what} is {kind}: ds_to_universal writes it as float32, a cast not supported yet"
        )
    span, numel = source.span(file, tensor, what)
    copy = ExportTensor(name, tensor.shape, "float32", tensor.dtype, (span,), "frozen")
    return PtTensor(PtStorage("float32", numel, copy), tensor.shape)


def _optimizer_state(source: Source, first: LayoutFile, dp: int) -> dict[Any, Any]:
    """``_save_optimizer_state``: the first shard's optimizer state as ``get_state_for_rank``
    loads it, less what each rank holds its own share of, plus the base optimizer's param_groups."""
    checkpoint = source.checkpoint(first.relpath)
    optim = checkpoint.data["optimizer_state_dict"]
    base = optim["base_optimizer_state"]
    if not isinstance(base, dict) or "param_groups" not in base:
        raise ExportError(checkpoint.path, "base_optimizer_state has no 'param_groups'")
    storages: dict[tuple[str, str], PtStorage] = {}
    out = {}
    for key, value in optim.items():
        if key in _SHARDED:
            continue
        if key == "partition_count" and isinstance(value, list) and value:
            value = [dp] * len(value)  # _update_partition_count: the target data-parallel degree
        elif key == "group_paddings" and isinstance(value, list) and value:
            value = [0] * len(value)  # _clear_group_paddings: the paddings were stripped
        out[key] = _copied(source, first.relpath, value, f"optimizer_state_dict[{key!r}]", storages)
    out["param_groups"] = _copied(source, first.relpath, base["param_groups"], "param_groups", storages)
    return out


def _copied(source: Source, file: str, value: Any, what: str, storages: dict[tuple[str, str], PtStorage]) -> Any:
    """``value`` with every tensor as :func:`whole_storage` writes it again; the rest as read."""
    if isinstance(value, TensorInfo):
        return whole_storage(source, file, value, what, storages)
    if isinstance(value, dict):
        items = [(k, _copied(source, file, v, f"{what}[{k!r}]", storages)) for k, v in value.items()]
        if all(new is value[k] for k, new in items):
            return value
        rebuilt = dict(items)
        return rebuilt if type(value) is dict else type(value)(rebuilt)
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        new = [_copied(source, file, v, f"{what}[{i}]", storages) for i, v in enumerate(value)]
        if all(a is b for a, b in zip(new, value, strict=True)):
            return value
        return type(value)(new)
    if isinstance(value, Opaque) and _has_tensor(value):
        raise ExportError(source.path(file), f"{what} is a {value.qualname} holding tensors: not converted yet")
    return value


def _has_tensor(value: Any) -> bool:
    """Whether ``value`` holds a tensor anywhere."""
    if isinstance(value, TensorInfo):
        return True
    if isinstance(value, dict):
        return any(_has_tensor(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_tensor(v) for v in value)
    if isinstance(value, Opaque):
        return _has_tensor((value.args, value.kwargs or {}, value.state, value.items, value.dict_items))
    return False


def _check_name(name: Any, path: str) -> None:
    """A name ``ds_to_universal`` makes a folder of (``zero/<name>/``): a str, one path part."""
    if type(name) is not str or not name or "/" in name or "\\" in name or name in (".", "..") or "\0" in name:
        raise ExportError(path, f"parameter name {name!r:.60} cannot be a folder name under zero/")
