"""The planners, layout by layout: which bytes of which checkpoint files make each output tensor.

The plan comes from the pickles alone (``read`` never touches a tensor byte): every output
tensor's name, shape and dtype, the byte ranges of the checkpoint files that hold its values,
in order, and the output files. ``_write`` writes it.

Which data holds the weights, layout by layout (the names and values of DeepSpeed's
``zero_to_fp32``; docs/export.md has the table):

- ZeRO-1/2: ``single_partition_of_fp32_groups`` of every data-parallel rank, joined per group
  and cut by ``param_shapes``, skipping ``param_alignment_paddings``;
- ZeRO-3: ``fp32_flat_groups`` of every rank; each parameter is ``ceil(numel / world)``
  elements on every rank, joined and cut to ``numel``;
- frozen parameters from ``frozen_param_fragments`` (joined across ranks under ZeRO-3); ZeRO-1
  writes none (zero_to_fp32 then drops them), so there they come from the module;
- buffers from the module (rank 0's model states);
- ZeRO-0: the fp16/bf16 optimizer wrappers' ``fp32_groups`` (``_zero0``, matched to the module's
  parameters in order, by shape and value); frozen parameters, buffers and fp32 runs from the module;
- pipeline: each stage as ZeRO-1/2, named ``<layer>.<key>``; the rest from the layer files;
- MoE: expert groups from each expert-parallel rank's partitions, renamed to global experts;
- tensor parallel: each rank as above, merged by ``universal_checkpoint_info`` as
  ``ds_to_universal`` merges;
- universal: ``zero/<name>/fp32.pt``;
- tied parameters (``shared_params``): written once, under the name that owns them.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import replace

from .. import naming
from .._read._errors import ReadError
from .._read._limits import Limits
from .._read._pickle import Opaque
from .._read._reader import Checkpoint, read, read_object
from .._read._torch import TensorInfo
from ..naming import FileKind
from ._ranges import chunk2, coalesce, concatenate, cut_range, cut_vocabulary
from ._safetensors import ITEMSIZE
from ._spans import FileSpan, record_spans, tensor_span
from ._trust import check_trusted
from ._types import ExportError, ExportTensor, Planned
from ._zero0 import OptimizerState, has_masters, match_masters, module_candidates

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, Final, Literal

    from .._check._layout import TagLayout
    from .._read._source import RemoteFolder, RemoteObject

__all__ = [
    "Source",
    "expert_file_leftovers",
    "plan_module",
    "plan_pipeline",
    "plan_tensor_parallel",
    "plan_universal",
    "plan_zero",
    "plan_zero0",
]


def expert_file_leftovers(
    source: Source, experts: Sequence[Any], planned: Sequence[ExportTensor]
) -> list[ExportTensor]:
    """The expert files' tensors that no optimizer partition holds (frozen, or ZeRO-0); the
    others must agree in shape with the masters planned from the partitions."""
    masters = {t.name: t for t in planned}
    leftovers = []
    for tensor in _plan_experts(source, experts):
        master = masters.get(tensor.name)
        if master is None:
            leftovers.append(tensor)
        elif master.shape != tensor.shape:
            raise ExportError(
                tensor.sources[0].path, f"{tensor.name!r} is {tensor.shape}, its partitions say {master.shape}"
            )
    return leftovers


class Source:
    """The tag's files, read on demand, with the byte ranges of their storage records.

    ``folder``: the tag is remote, and this is its listing; each file's byte ranges then carry
    its object, pinned to the version listed (``_spans``).
    """

    def __init__(self, layout: TagLayout, folder: RemoteFolder | None = None) -> None:
        self.layout = layout
        self.folder = folder
        self.by_name = {f.relpath: f for f in layout.files}
        self._spans: dict[str, dict[str, FileSpan]] = {}
        self._trusted: set[str] = set()
        self._objects: dict[str, RemoteObject] = {}

    def has(self, name: str) -> bool:
        return name in self.by_name

    def path(self, name: str) -> str:
        return os.path.join(self.layout.path, name)

    def checkpoint(self, name: str) -> Checkpoint:
        if name not in self.by_name:
            raise ExportError(self.path(name), "is missing: the checkpoint is incomplete")
        found = self.layout.checkpoints.get(name)
        if found is None and self.folder is not None:
            found = read_object(self._remote(name), Limits())
        elif found is None:
            found = read(self.path(name))  # read() raises what went wrong
        if name not in self._trusted:
            check_trusted(found)  # nothing in the file may change the tensors torch.load gives
            self._trusted.add(name)
        return found

    def _remote(self, name: str) -> RemoteObject:
        """The remote file ``name``, pinned to the version listed (no request)."""
        assert self.folder is not None
        found = self._objects.get(name)
        if found is None:
            if name not in self.folder.entries:
                raise ExportError(self.path(name), "is not in the tag folder's listing: removed while being exported")
            found = self._objects[name] = self.folder.open(name)
        return found

    def span(self, name: str, tensor: Any, what: str, dtype: str | None = None) -> tuple[FileSpan, int]:
        """The bytes of ``tensor`` (found at ``what`` in file ``name``) and its element count;
        ``dtype``, when given, is the one the planner reads the bytes as."""
        checkpoint = self.checkpoint(name)
        if not isinstance(tensor, TensorInfo):
            raise ExportError(checkpoint.path, f"{what} is {type(tensor).__name__}, not a tensor")
        if dtype is not None and tensor.dtype != dtype:
            raise ExportError(checkpoint.path, f"{what} is {tensor.dtype}, not the {dtype} DeepSpeed writes")
        spans = self._spans.get(name)
        if spans is None:
            remote = self._remote(name) if self.folder is not None else None
            spans = self._spans[name] = record_spans(checkpoint, remote)
        try:
            return tensor_span(checkpoint, tensor, spans), tensor.numel
        except ReadError as error:
            raise ExportError(checkpoint.path, f"{what}: {error.reason}") from None


def _get(data: Any, key: str, path: str, expected: type | tuple[type, ...], where: str = "") -> Any:
    if not isinstance(data, dict) or key not in data:
        raise ExportError(path, f"has no {where}{key!r}")
    value = data[key]
    if not isinstance(value, expected):
        raise ExportError(path, f"{where}{key!r} is {type(value).__name__}, not what DeepSpeed writes")
    return value


def _stage(value: Any) -> int | None:
    if isinstance(value, Opaque) and value.qualname.endswith("ZeroStageEnum") and len(value.args) == 1:
        value = value.args[0]
    return value if type(value) is int else None


def _shape(value: Any, path: str, what: str) -> tuple[int, ...]:
    if isinstance(value, (tuple, list)) and all(type(v) is int and v >= 0 for v in value):
        return tuple(value)
    raise ExportError(path, f"{what} is {value!r:.60}, not a shape")


def _t(
    name: str,
    shape: tuple[int, ...],
    dtype: str,
    spans: tuple[FileSpan, ...],
    origin: Literal["trainable", "frozen", "buffer", "module", "expert"],
    mean_of: tuple[tuple[FileSpan, ...], ...] = (),
) -> ExportTensor:
    return ExportTensor(name, shape, dtype, dtype, spans, origin, mean_of)


def plan_zero0(source: Source, mp: int) -> list[Planned]:
    """ZeRO-0: the fp16/bf16 optimizer wrappers' fp32 masters (``_zero0``) for the parameters they
    optimize, in the module's order; the rest (frozen parameters, buffers, every tensor of an fp32
    run) from the module as saved. With MoE, the expert files' tensors are matched too (rank 0's
    experts from the model states' optimizer, the others' from ``expp_rank_*``), in the files'
    order; an expert no master is found for is left to :func:`expert_file_leftovers`."""
    name = naming.model_states(mp)
    checkpoint = source.checkpoint(name)
    module = _get(checkpoint.data, "module", checkpoint.path, dict)
    buffers = set(_get(checkpoint.data, "buffer_names", checkpoint.path, list))

    def span_in(file: str) -> Callable[[Any, str], tuple[FileSpan, int]]:
        return lambda tensor, what: source.span(file, tensor, what)

    candidates = module_candidates(module, buffers, span_in(name))
    states = [OptimizerState(checkpoint.path, checkpoint.data.get("optimizer"), span_in(name))]
    experts = sorted(
        (f for f in source.layout.of_kind(FileKind.EXPERT_MODEL_STATES) if f.name.mp_rank == mp),
        key=lambda f: (f.name.layer if f.name.layer is not None else -1, f.name.expert),
    )
    expert_keys: list[str] = []
    if experts and has_masters(states[0].optimizer):
        for file in experts:
            data = source.checkpoint(file.relpath).data
            if not isinstance(data, dict):
                raise ExportError(source.path(file.relpath), f"holds {type(data).__name__}, not an expert's state dict")
            candidates += module_candidates(data, set(), span_in(file.relpath), "expert")
            expert_keys += data
        ranks = [f for f in source.layout.of_kind(FileKind.EXPERT_OPTIM_STATES) if f.name.mp_rank == mp]
        for file in sorted(ranks, key=lambda f: f.name.ep_rank or 0):
            if file.name.ep_rank != 0:  # rank 0's are the model states' own
                state = source.checkpoint(file.relpath)
                optimizer = _get(state.data, "optimizer", state.path, dict)
                states.append(OptimizerState(state.path, optimizer, span_in(file.relpath), f"{file.relpath} ", True))
    masters = match_masters(states, candidates)
    planned: list[Planned] = []
    for key, tensor in module.items():
        if masters is not None and key in masters:
            planned.append(masters[key])
            continue
        span, _ = source.span(name, tensor, f"module[{key!r}]")
        origin: Literal["buffer", "frozen", "module"] = "buffer" if key in buffers else "module"
        if masters is not None and origin == "module":
            origin = "frozen"  # not in the optimizer's groups
        planned.append(_t(key, tensor.shape, tensor.dtype, (span,), origin))
    planned += [masters[key] for key in expert_keys if masters is not None and key in masters]
    return planned


def plan_zero(
    source: Source, optim: Sequence[Any], mp: int, *, experts: bool = False
) -> tuple[list[Planned], dict[str, str], str]:
    """ZeRO-1/2/3 of one model-parallel rank: buffers, frozen and trainable parameters.

    With ``experts``, groups partitioned over fewer ranks than the others (expert groups,
    named by local expert index) are left to :func:`_plan_experts`.
    """
    first = min(optim, key=lambda f: f.name.dp_rank)
    if first.name.dp_rank != 0:
        raise ExportError(source.path(naming.optim_states(0, mp, first.name.precision)), "is missing (rank 0)")
    head = source.checkpoint(first.relpath)
    state = _get(head.data, "optimizer_state_dict", head.path, dict)
    stage = _stage(state.get("zero_stage", 1))  # BF16_Optimizer writes no zero_stage: its layout is ZeRO-1's
    count = state.get("partition_count")
    world = max(count) if isinstance(count, list) and count else count
    if stage not in (1, 2, 3) or type(world) is not int or world < 1:
        raise ExportError(head.path, f"zero_stage {state.get('zero_stage')!r} / partition_count {count!r} unknown")
    ranks = {f.name.dp_rank: f.relpath for f in optim}
    names = []
    for rank in range(world):
        if rank not in ranks:
            raise ExportError(
                source.path(naming.optim_states(rank, mp, first.name.precision)),
                f"is missing: partition_count is {world}, rank {rank}'s optimizer shard is not in the folder",
            )
        names.append(ranks[rank])
    extra = sorted(set(ranks) - set(range(world)))
    if extra:
        raise ExportError(source.path(ranks[extra[0]]), f"is rank {extra[0]}, but partition_count is {world}")
    key = "fp32_flat_groups" if stage == 3 else "single_partition_of_fp32_groups"
    # Per rank: the flat fp32 groups as (span, numel).
    flats: list[list[tuple[FileSpan, int]]] = []
    for name in names:
        checkpoint = source.checkpoint(name)
        groups = _get(_get(checkpoint.data, "optimizer_state_dict", checkpoint.path, dict), key, checkpoint.path, list)
        flats.append(
            [source.span(name, g, f"optimizer_state_dict[{key!r}][{i}]", "float32") for i, g in enumerate(groups)]
        )
        if len(flats[-1]) != len(flats[0]):
            raise ExportError(checkpoint.path, f"{key} has {len(flats[-1])} groups, rank 0 has {len(flats[0])}")
    if stage == 3:
        model_names = [naming.zero3_model_states(rank, mp) for rank in range(world)]
    else:
        model_names = [naming.model_states(mp)]
    models = [source.checkpoint(n) for n in model_names]
    model = models[0].data
    path = models[0].path
    if model.get("param_shapes") is None and "param_slice_mappings" in state:
        raise ExportError(
            path,
            "has no param_shapes: DeepSpeed writes none for BF16_Optimizer without ZeRO (a bf16 pipeline at "
            "stage 0), so its fp32 partitions cannot be cut into parameters: not exported yet",
        )
    planned: list[Planned] = []
    module = _get(model, "module", path, (dict, type(None))) or {}  # None under the pipeline engine
    buffer_names = set(_get(model, "buffer_names", path, list))
    for name, tensor in module.items():
        if name in buffer_names:
            span, _ = source.span(model_names[0], tensor, f"module[{name!r}]")
            planned.append(_t(name, tensor.shape, tensor.dtype, (span,), "buffer"))
    frozen = model.get("frozen_param_shapes")
    if frozen is None and stage != 3:
        # ZeRO-1 writes no frozen_param_shapes and zero_to_fp32 drops frozen parameters; the
        # module holds them (in the training precision): every entry that is not a buffer, a
        # trained parameter or a tied alias.
        trained = {name for group in _get(model, "param_shapes", path, list) for name in group}
        skip = buffer_names | trained | set(model.get("shared_params") or {})
        for name, tensor in module.items():
            if name not in skip:
                span, _ = source.span(model_names[0], tensor, f"module[{name!r}]")
                planned.append(_t(name, tensor.shape, tensor.dtype, (span,), "frozen"))
    planned += _plan_frozen(source, model_names, models, frozen or {})
    param_shapes = _get(model, "param_shapes", path, list)
    if stage == 3:
        planned += _zero3_params(param_shapes, flats, names, path, source)
    else:
        paddings = state.get("param_alignment_paddings")
        counts = count if isinstance(count, list) else [world] * len(param_shapes)
        dense = [g for g, c in enumerate(counts) if c == world]
        if len(dense) != len(counts) and not experts:
            raise ExportError(head.path, f"partition_count {count} differs between groups, but no expert files exist")
        planned += _zero12_params(param_shapes, flats, names, paddings, world, source, dense)
        for group, edp in enumerate(counts):
            if edp != world:
                planned += _expert_masters(source, model, param_shapes, flats, names, paddings, group, edp)
    shared = model.get("shared_params") or {}
    written = {p.name for p in planned}
    aliases = {alias: owner for alias, owner in shared.items() if owner in written}
    return planned, aliases, "zero-3" if stage == 3 else "zero-1/2"


_MOE_EXPERTS: Final = ".deepspeed_moe.experts.deepspeed_experts."


def _expert_masters(
    source: Source,
    model: dict[str, Any],
    param_shapes: list[Any],
    flats: list[list[tuple[FileSpan, int]]],
    names: list[str],
    paddings: Any,
    group: int,
    edp: int,
) -> list[Planned]:
    """The fp32 master weights of an expert group (partitioned over ``edp`` < all ranks).

    DeepSpeed's expert-parallel groups are consecutive ranks (``ep = ranks / edp`` of them),
    so rank ``r`` holds the local experts of expert-parallel rank ``r % ep``, partition
    ``r // ep``. Each expert-parallel rank's partitions are joined and cut as ZeRO-1/2's, and
    local expert ``l`` of a layer with ``n`` experts becomes global expert ``(r % ep) * n / ep + l``,
    the name DeepSpeed gives it in the expert files (``_save_moe_checkpoint``).
    """
    world = len(flats)
    path = source.path(names[0])
    if world % edp:
        raise ExportError(path, f"partition_count {edp} of group {group} does not divide the {world} ranks")
    ep = world // edp
    local = list(param_shapes[group])
    prefixes = list(dict.fromkeys(n.split(_MOE_EXPERTS)[0] for n in local if _MOE_EXPERTS in n))
    counts = model.get("num_experts")
    if not prefixes or any(_MOE_EXPERTS not in n for n in local) or not isinstance(counts, list):
        raise ExportError(
            path, f"group {group} is an expert group, but its names or num_experts {counts!r} do not say so"
        )
    if len(counts) < len(prefixes):
        raise ExportError(path, f"num_experts {counts!r} lists fewer MoE layers than group {group} names")
    per_layer = dict(zip(prefixes, counts, strict=False))
    planned: list[Planned] = []
    for rank in range(ep):
        ranks = list(range(rank, world, ep))
        part = _zero12_params(
            param_shapes, [flats[r] for r in ranks], [names[r] for r in ranks], paddings, edp, source, [group]
        )
        for tensor in part:
            prefix, _, rest = tensor.name.partition(_MOE_EXPERTS)
            if not rest:
                raise ExportError(path, f"{tensor.name!r} is in expert group {group} but names no expert")
            index, _, tail = rest.partition(".")
            experts = per_layer[prefix]
            if type(experts) is not int or experts % ep or not index.isdigit():
                raise ExportError(path, f"{tensor.name!r}: num_experts {experts!r} is no multiple of {ep} ranks")
            name = f"{prefix}{_MOE_EXPERTS}{rank * (experts // ep) + int(index)}.{tail}"
            planned.append(replace(tensor, name=name, origin="expert"))
    return planned


def _plan_frozen(
    source: Source, model_names: Sequence[str], models: Sequence[Checkpoint], frozen: dict[str, Any]
) -> list[Planned]:
    """Frozen parameters: every model file's ``frozen_param_fragments`` joined (one file below
    ZeRO-3, whose fragment is the whole parameter), cut to ``frozen_param_shapes``."""
    planned: list[Planned] = []
    path = models[0].path
    for name, shape_value in frozen.items():
        shape = _shape(shape_value, path, f"frozen_param_shapes[{name!r}]")
        pieces: list[tuple[FileSpan, int]] = []
        dtypes = set()
        for model_name, checkpoint in zip(model_names, models, strict=True):
            fragments = _get(checkpoint.data, "frozen_param_fragments", checkpoint.path, dict)
            fragment = _get(fragments, name, checkpoint.path, TensorInfo, "frozen_param_fragments ")
            pieces.append(source.span(model_name, fragment, f"frozen_param_fragments[{name!r}]"))
            dtypes.add(fragment.dtype)
        if len(dtypes) != 1:
            raise ExportError(path, f"frozen_param_fragments[{name!r}] differ in dtype across ranks: {sorted(dtypes)}")
        dtype = dtypes.pop()
        numel = math.prod(shape)
        if sum(n for _, n in pieces) < numel:
            raise ExportError(path, f"frozen_param_fragments[{name!r}] hold fewer than the {numel} elements of {shape}")
        planned.append(_t(name, shape, dtype, cut_range(pieces, 0, numel, ITEMSIZE[dtype]), "frozen"))
    return planned


def plan_universal(source: Source) -> tuple[list[Planned], dict[str, str]]:
    """A ``ds_to_universal`` folder: every ``zero/<name>/fp32.pt`` (merged across every rank
    already), in the module's order, then the rest by name; buffers and frozen parameters it
    has no file for (ZeRO-3 sources) from the model states copied beside it; tied aliases left out."""
    files = {
        f.name.param: f
        for f in source.layout.of_kind(FileKind.UNIVERSAL_PARAM_STATE)
        if f.name.state == "fp32" and f.name.param is not None
    }
    model_files = sorted(
        source.layout.of_kind(FileKind.MODEL_STATES, FileKind.ZERO3_MODEL_STATES),
        key=lambda f: (f.name.mp_rank or 0, f.name.dp_rank or 0),
    )
    model_files = [f for f in model_files if (f.name.mp_rank or 0) == 0]
    if not files or not model_files:
        raise ExportError(source.layout.path, "is a universal checkpoint folder without zero/*/fp32.pt or model states")
    models = [source.checkpoint(f.relpath) for f in model_files]
    model = models[0].data
    module = _get(model, "module", models[0].path, (dict, type(None))) or {}
    shared = model.get("shared_params") or {}
    aliases = {alias: owner for alias, owner in shared.items() if owner in files}
    order = [n for n in module if n in files] + sorted(n for n in files if n not in module)
    planned: list[Planned] = []
    buffers = set(model.get("buffer_names") or [])
    for name, tensor in module.items():
        if name in buffers and name not in files:
            span, _ = source.span(model_files[0].relpath, tensor, f"module[{name!r}]")
            planned.append(_t(name, tensor.shape, tensor.dtype, (span,), "buffer"))
    frozen = {k: v for k, v in (model.get("frozen_param_shapes") or {}).items() if k not in files}
    planned += _plan_frozen(source, [f.relpath for f in model_files], models, frozen)
    shapes = {n: v for group in model.get("param_shapes") or [] for n, v in group.items()}
    for name in order:
        if name in aliases:
            continue
        file = files[name]
        checkpoint = source.checkpoint(file.relpath)
        value = checkpoint.data
        tensor = value.get("param") if isinstance(value, dict) else value  # ZeRO-3 writes a bare tensor
        if not isinstance(tensor, TensorInfo):
            raise ExportError(checkpoint.path, f"holds {type(tensor).__name__}, not a parameter")
        span, _ = source.span(file.relpath, tensor, "['param']")
        shape = tensor.shape
        if len(shape) == 1 and name in shapes:  # ZeRO-3's flat tensor: the shape from param_shapes
            known = _shape(shapes[name], models[0].path, f"param_shapes {name!r}")
            shape = known if math.prod(known) == tensor.numel else shape
        planned.append(_t(name, shape, tensor.dtype, (span,), "trainable"))
    return planned, aliases


def plan_tensor_parallel(
    source: Source, ranks: Sequence[int], info: dict[str, Any]
) -> tuple[list[Planned], dict[str, str], str]:
    """Every tensor-parallel rank planned alone, then merged as ``ds_to_universal``'s
    ``merge_tp_slices`` merges: replicated (rank 0's), averaged, two sub-parameters concatenated
    on dim 0, row parallel on dim 1, else dim 0; vocabulary padding cut after."""
    path = source.path(naming.model_states(ranks[0]))
    for key in ("parameter_with_sub_params", "affine_map", "autotp_unsupported_parameter_patterns"):
        if info.get(key):
            raise ExportError(
                path, f"universal_checkpoint_info[{key!r}]: merging it is not supported yet; use --tp-rank K"
            )
    per_rank = []
    kind = ""
    aliases: dict[str, str] = {}
    for rank in ranks:
        optim = [f for f in source.layout.of_kind(FileKind.OPTIM_STATES) if f.name.mp_rank == rank]
        if not optim:
            raise ExportError(source.path(naming.optim_states(0, rank)), "is missing: no optimizer shard of this rank")
        planned, aliases, kind = plan_zero(source, optim, rank)
        if kind == "zero-3":
            raise ExportError(source.layout.path, "is a ZeRO-3 tensor-parallel checkpoint: not exported yet")
        per_rank.append({p.name: p for p in planned})
    names = list(per_rank[0])
    for rank, planned_rank in zip(ranks, per_rank, strict=True):
        if set(planned_rank) != set(names):
            missing = sorted(set(names) ^ set(planned_rank))[:3]
            raise ExportError(source.path(naming.model_states(rank)), f"names other parameters than rank 0: {missing}")

    def pattern(key: str, name: str) -> bool:
        matched = [p for p in info.get(key) or [] if re.match(p, name)]
        if len(matched) > 1:
            raise ExportError(path, f"universal_checkpoint_info[{key!r}]: {matched} all match {name!r}")
        return bool(matched)

    merged: list[Planned] = []
    for name in names:
        slices = [planned_rank[name] for planned_rank in per_rank]
        shape, dtype, origin = slices[0].shape, slices[0].source_dtype, slices[0].origin
        itemsize = ITEMSIZE[dtype]
        entry: ExportTensor
        if origin == "buffer" or pattern("tp_replicated_parameter_patterns", name):
            entry = slices[0]
        elif pattern("parameter_to_average_patterns", name):
            if any(s.shape != shape for s in slices):
                raise ExportError(path, f"{name!r} is averaged, but its shapes differ across ranks")
            entry = _t(name, shape, dtype, (), origin, tuple(s.sources for s in slices))
        elif pattern("parameter_with_2_sub_params_cat_dim_0", name):
            halves = [chunk2(s, itemsize) for s in slices]
            joined = [span for h in halves for span in h[0]] + [span for h in halves for span in h[1]]
            rows = sum(s.shape[0] for s in slices)
            entry = _t(name, (rows, *shape[1:]), dtype, coalesce(joined), origin)
        else:
            dim = 1 if pattern("parameter_with_row_parallelism_patterns", name) else 0
            entry = _t(name, *concatenate(slices, dim, itemsize, path), origin)
        if pattern("vocabulary_parameter_patterns", name):
            entry = cut_vocabulary(entry, info.get("original_vocab_size"), path)
        merged.append(entry)
    return merged, aliases, f"{kind} tp"


def plan_pipeline(source: Source, stages: Sequence[int], layers: Sequence[Any], *, masters: bool) -> list[Planned]:
    """Every stage's trained parameters (named as the pipeline module names them: ``<layer>.<key>``),
    then what only the layer files hold (buffers, frozen parameters, or everything without ZeRO).

    With ``masters``, a stage's trained parameters come from its fp32 masters, never silently from
    its layer files: a stage without optimizer shards is refused unless it trained without ZeRO in
    fp32 (its layer files then hold the trained fp32 weights themselves).
    """
    planned: list[Planned] = []
    layout = source.layout
    for stage in stages:
        optim = [f for f in layout.of_kind(FileKind.OPTIM_STATES) if f.name.mp_rank == stage]
        if not optim and masters and (layout.zero_stage != 0 or layout.precision != "fp32"):
            raise ExportError(
                source.path(naming.optim_states(0, stage, "bf16" if layout.precision == "bf16" else "")),
                f"is missing: pipeline stage {stage} (ZeRO stage {layout.zero_stage}, {layout.precision}) has no "
                "optimizer shard, so no fp32 master weights; --weights module exports the layer files' weights "
                "as saved",
            )
        if optim:
            stage_tensors, aliases, _ = plan_zero(source, optim, stage)
            if aliases:
                raise ExportError(
                    source.path(naming.model_states(stage)), "pipeline with tied parameters: not exported yet"
                )
            planned += stage_tensors
    known = {p.name for p in planned}
    for layer in sorted(layers, key=lambda f: f.name.layer):
        checkpoint = source.checkpoint(layer.relpath)
        state = checkpoint.data
        if not isinstance(state, dict):
            raise ExportError(checkpoint.path, f"holds {type(state).__name__}, not a layer's state dict")
        for key, tensor in state.items():
            name = f"{layer.name.layer}.{key}"
            if name not in known:
                span, _ = source.span(layer.relpath, tensor, f"[{key!r}]")
                planned.append(_t(name, tensor.shape, tensor.dtype, (span,), "module"))
                known.add(name)
    return planned


def plan_module(source: Source, mp: int) -> tuple[list[Planned], dict[str, str], str]:
    """``weights="module"``: the module's weights as saved, in their saved dtype: the model states'
    ``module`` (tied aliases in ``shared_params`` left out) and the expert files of rank ``mp``, or
    the layer files of a pipeline. ZeRO-3 and universal checkpoints save no usable module weights."""
    layout = source.layout
    layers = layout.of_kind(FileKind.LAYER_MODEL_STATES)
    if layers:
        return plan_pipeline(source, (), layers, masters=False), {}, "pipeline"
    if layout.universal or layout.zero_stage == 3:
        kind = "a universal checkpoint" if layout.universal else "ZeRO-3"
        raise ExportError(
            layout.path, f"is {kind}, whose model states hold no module weights: export the masters (the default)"
        )
    name = naming.model_states(mp)
    checkpoint = source.checkpoint(name)
    module = _get(checkpoint.data, "module", checkpoint.path, dict)
    buffers = set(_get(checkpoint.data, "buffer_names", checkpoint.path, list))
    shared = checkpoint.data.get("shared_params") or {}
    shared = shared if isinstance(shared, dict) else {}
    planned: list[Planned] = []
    for key, tensor in module.items():
        if key not in shared:
            span, _ = source.span(name, tensor, f"module[{key!r}]")
            planned.append(_t(key, tensor.shape, tensor.dtype, (span,), "buffer" if key in buffers else "module"))
    written = {p.name for p in planned}
    aliases = {alias: owner for alias, owner in shared.items() if alias in module and owner in written}
    experts = [f for f in layout.of_kind(FileKind.EXPERT_MODEL_STATES) if f.name.mp_rank == mp]
    planned += expert_file_leftovers(source, experts, planned)
    kind = "zero-0" if layout.zero_stage == 0 else "zero-1/2"
    return planned, aliases, kind + (" moe" if experts else "")


def _plan_experts(source: Source, experts: Sequence[Any]) -> list[Planned]:
    """Every expert of every MoE layer, from the expert files, under the names they hold."""
    planned: list[Planned] = []
    for expert in sorted(experts, key=lambda f: (f.name.layer if f.name.layer is not None else -1, f.name.expert)):
        checkpoint = source.checkpoint(expert.relpath)
        if not isinstance(checkpoint.data, dict):
            raise ExportError(checkpoint.path, f"holds {type(checkpoint.data).__name__}, not an expert's state dict")
        for name, tensor in checkpoint.data.items():
            span, _ = source.span(expert.relpath, tensor, f"[{name!r}]")
            planned.append(_t(name, tensor.shape, tensor.dtype, (span,), "expert"))
    return planned


def _zero12_params(
    param_shapes: list[Any],
    flats: list[list[tuple[FileSpan, int]]],
    names: list[str],
    paddings: Any,
    world: int,
    source: Source,
    groups: Sequence[int],
) -> list[Planned]:
    planned: list[Planned] = []
    if len(param_shapes) != len(flats[0]):
        raise ExportError(
            source.path(names[0]),
            f"holds {len(flats[0])} fp32 groups, param_shapes lists {len(param_shapes)}",
        )
    for group in groups:
        shapes = param_shapes[group]
        pieces = [rank[group] for rank in flats]
        available = sum(n for _, n in pieces)
        group_paddings = paddings[group] if isinstance(paddings, list) else None
        if group_paddings is not None and len(group_paddings) != len(shapes):
            raise ExportError(source.path(names[0]), f"param_alignment_paddings[{group}] does not match param_shapes")
        offset = 0
        for index, (name, shape_value) in enumerate(shapes.items()):
            shape = _shape(shape_value, source.path(names[0]), f"param_shapes[{group}][{name!r}]")
            numel = math.prod(shape)
            if offset + numel > available:
                raise ExportError(
                    source.path(names[-1]),
                    f"single_partition_of_fp32_groups[{group}] is too short: the {world} partitions hold "
                    f"{available} elements, param_shapes needs {offset + numel} up to {name!r}",
                )
            planned.append(_t(name, shape, "float32", cut_range(pieces, offset, numel, 4), "trainable"))
            offset += numel + (group_paddings[index] if group_paddings is not None else 0)
        align = 2 * world
        if align * math.ceil(offset / align) != align * math.ceil(available / align):
            raise ExportError(
                source.path(names[0]),
                f"single_partition_of_fp32_groups[{group}]: param_shapes use {offset} of {available} elements",
            )
    return planned


def _zero3_params(
    param_shapes: list[Any], flats: list[list[tuple[FileSpan, int]]], names: list[str], path: str, source: Source
) -> list[Planned]:
    world = len(flats)
    merged = {name: shape for group in param_shapes for name, shape in group.items()}
    per_rank = [sum(n for _, n in rank) for rank in flats]
    planned: list[Planned] = []
    offset = 0
    for name, shape_value in merged.items():
        shape = _shape(shape_value, path, f"param_shapes {name!r}")
        numel = math.prod(shape)
        part = math.ceil(numel / world)
        for rank, size in enumerate(per_rank):
            if offset + part > size:
                raise ExportError(
                    source.path(names[rank]),
                    f"fp32_flat_groups is too short: {size} elements; param_shapes need {offset + part} to {name!r}",
                )
        joined = [(span, span.length // 4) for rank in flats for span in cut_range(rank, offset, part, 4)]
        planned.append(_t(name, shape, "float32", cut_range(joined, 0, numel, 4), "trainable"))
        offset += part
    if offset != per_rank[0]:
        raise ExportError(
            source.path(names[0]), f"fp32_flat_groups: param_shapes use {offset} of {per_rank[0]} elements"
        )
    return planned
