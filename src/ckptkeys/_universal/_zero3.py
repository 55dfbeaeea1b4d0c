"""ZeRO-3: the universal files ``ds_to_universal`` writes for a ZeRO-3 tag, planned from the pickles alone.

What DeepSpeed 0.19.8's converter writes for ZeRO-3 (``deepspeed/checkpoint/ds_to_universal.py``,
the stage-3 branch of ``main``), and so what :func:`plan_zero3` plans, file for file:

- ``zero/<param>/fp32.pt``, ``exp_avg.pt``, ``exp_avg_sq.pt``, for every parameter of the first
  model-states file's ``param_shapes``: each a *bare* flat tensor (no dict, no ``cat_dim``; no
  ``step.pt``). Sub-group ``g`` of every data-parallel rank holds each of its parameters in
  ``ceil(numel / partition_count)`` elements of ``fp32_flat_groups[g]`` (and of the moments in
  ``optimizer_state_dict['state'][g]``), one after the other; a rank's share is what is left of
  ``numel`` past the ranks before it, the rest padding. The shares, joined in rank order, are
  the file (``extract_zero_shards_stage3``, ``merge_zero3_slices``), in the flat tensors' dtype,
  requiring gradients where a rank's flat tensor does (``torch.cat`` keeps it: the fp32 ones).
- ``zero/optimizer_state.pt``: the first optimizer file's whole ``optimizer_state_dict``, its
  flat fp32 partition and moments included, with ``param_groups`` added as a second reference
  to the inner state dict's (``_save_optimizer_state_stage3``): its tensors copied whole, each
  storage as the source file stores it, with the attributes their pickle sets (the flat
  partition's ``ds_id``); DeepSpeed's objects (``LossScaler``, ``ZeroStageEnum``) as the source
  pickles them.
- with tensor parallelism (``zero_pp_rank_D_mp_rank_TT``: several mp ranks), each tensor-parallel
  rank's shares joined and shaped as its own ``param_shapes`` say, then merged by the first
  model states' ``universal_checkpoint_info`` as ZeRO-1/2's ranks are (``_zero12``'s merge:
  ``{'param': ..., 'cat_dim': ...}`` dicts, vocabulary, row-parallel, replicated, averaged and
  two-part parameters; still no ``step.pt``); AutoTP's affine maps are refused there as not
  converted yet.
- every model-states file, copied as it is (``shutil.copy2``).
- nothing for frozen parameters and buffers: DeepSpeed's universal loader would not restore them
  anyway; they are returned as :class:`~ckptkeys.NotRestored`, file ``None``.

"First" is in ``ds_to_universal``'s order: file names sorted with their numbers compared as
numbers (``natural_keys``). What it refuses (a model-states file with no ZeRO-3 rank in its name,
a missing rank, model and optimizer grids that disagree, AutoEP without partition-native
metadata, merge patterns AutoTP marks unsupported, with ``strict`` a merge pattern no parameter
matches) is refused with its reason. Partition-native AutoEP and ZeRO-3 with ``deepspeed.moe``
expert files are not converted yet: refused, said so.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace

from .._export._plan import Source, _get, _shape
from .._export._pt import PtStorage, PtTensor
from .._export._ranges import coalesce, cut_range
from .._export._types import ExportError, ExportTensor
from .._read._pickle import Opaque
from .._read._torch import DTYPE_ITEMSIZE, TensorInfo, tensors_in
from ..naming import FileKind
from ._types import NotRestored, UniversalFile
from ._zero12 import _NO_STEP, INFO, _Fragment, _merge, _Patterns, content_bytes, whole_storage

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

    from .._check._layout import LayoutFile
    from .._read._reader import Checkpoint

__all__ = ["plan_zero3"]

STATES: Final = ("fp32", "exp_avg", "exp_avg_sq")
"""The files of a parameter's folder, in the order ``merge_zero3_slices`` writes them."""
_MOMENTS: Final = ("exp_avg", "exp_avg_sq")
# deepspeed/checkpoint/constants.py: AUTOEP_LAYERS_KEY, AUTOEP_LAYERS_KEY_LEGACY.
_AUTOEP_KEYS: Final = ("ds_autoep_layers", "autoep_layers")
# deepspeed/checkpoint/constants.py: AUTOEP_ZERO3_EXPERT_STATE_FORMAT_KEY and the partition-native format.
_AUTOEP_FORMAT_KEY: Final = "checkpoint_format"
_AUTOEP_PARTITIONED: Final = "zero3_partitioned"
# ds_to_universal's optimizer files for ZeRO-3 (_filter_zero3_optim_files): no prefix or bf16_.
_ZERO3_PRECISIONS: Final = ("", "bf16")


def plan_zero3(source: Source, *, strict: bool = True) -> tuple[str, list[UniversalFile], list[NotRestored]]:
    """The universal files of the ZeRO-3 tag ``source``, its kind (``"zero-3"``, ``"zero-3 tp"``)
    and the tensors the loader will not restore.

    Files in the order ``ds_to_universal`` writes them: each parameter's ``fp32.pt``,
    ``exp_avg.pt`` and ``exp_avg_sq.pt`` (parameters in ``param_shapes`` order), then
    ``zero/optimizer_state.pt``, then the model-states copies. ``strict`` (``--no_strict``'s
    opposite): a tensor-parallel merge pattern that matches no parameter is refused. Raises
    :class:`ExportError` naming the file for what ``ds_to_universal`` refuses or would write wrong.
    """
    models = _model_files(source)
    optims = _optim_files(source)
    for file in models:  # ds_to_universal reads every model-states file for AutoEP metadata first
        _refuse_autoep(source.checkpoint(file.relpath))
    model_grid = _grid(source, models)
    optim_grid = _grid(source, optims)
    tp_degree, dp_degree = len(model_grid), len(model_grid[0])
    if (len(optim_grid), len(optim_grid[0])) != (tp_degree, dp_degree):
        raise ExportError(
            source.layout.path,
            "ZeRO-3 model/optimizer tp_degree or dp_degree mismatch: "
            f"model=({tp_degree},{dp_degree}), optim=({len(optim_grid)},{len(optim_grid[0])})",
        )
    if source.layout.of_kind(FileKind.EXPERT_MODEL_STATES, FileKind.EXPERT_OPTIM_STATES):
        raise ExportError(source.layout.path, "is a ZeRO-3 mixture-of-experts checkpoint: not converted yet")
    first = source.checkpoint(models[0].relpath)
    param_shapes = _get(first.data, "param_shapes", first.path, list)
    grads = dict.fromkeys(STATES, False)
    if tp_degree == 1:
        fragments = _fragments(source, param_shapes, optim_grid[0], dp_degree, grads, first.path)
        files = _bare_files(source, fragments, grads)
    else:
        # Each tensor-parallel rank's shapes are its own model states' (rank 0 of its row).
        rows = [_get(source.checkpoint(row[0].relpath).data, "param_shapes", row[0].path, list) for row in model_grid]
        info = _tp_info(first)  # refused before any extraction, as ds_to_universal refuses it
        by_tp = [
            _fragments(source, shape, row, dp_degree, grads, source.path(model_row[0].relpath))
            for shape, row, model_row in zip(rows, optim_grid, model_grid, strict=True)
        ]
        files = _merged_files(source, first, param_shapes, rows, by_tp, grads, info, strict=strict)
    files.append(_optimizer_state(source, optims[0]))
    files += [UniversalFile(f.relpath, None, f.path, f.size) for f in models]
    return ("zero-3 tp" if tp_degree > 1 else "zero-3"), files, _not_restored(first)


def _natural(text: str) -> list[Any]:
    """``ds_to_universal``'s ``natural_keys``: digit runs compared as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _model_files(source: Source) -> list[LayoutFile]:
    """The files ``ds_to_universal`` takes as ZeRO-3 model states (``*_model_states.pt`` but
    ``layer_*_expert_*``), in its order; its refusal of one whose name has no ZeRO-3 rank."""
    layout = source.layout
    kinds = (FileKind.MODEL_STATES, FileKind.ZERO3_MODEL_STATES, FileKind.EXPERT_MODEL_STATES)
    found = []
    for file in layout.of_kind(*kinds):
        base = file.relpath.rsplit("/", 1)[-1]
        if not base.endswith("_model_states.pt") or (base.startswith("layer_") and "_expert_" in base):
            continue  # not in its glob, or an expert file it leaves out
        if file.name.kind is not FileKind.ZERO3_MODEL_STATES:
            raise ExportError(file.path, "Cannot parse ZeRO rank from checkpoint file name (as ds_to_universal)")
        found.append(file)
    if not found:
        raise ExportError(layout.path, "can't find ZeRO Stage 3 model state files (as ds_to_universal)")
    return sorted(found, key=lambda f: _natural(f.relpath))


def _optim_files(source: Source) -> list[LayoutFile]:
    """``ds_to_universal``'s ZeRO-3 optimizer files (``(bf16_)zero_pp_rank_*_optim_states.pt``), in its order."""
    found = [
        f
        for f in source.layout.of_kind(FileKind.OPTIM_STATES)
        if not f.name.legacy and f.name.precision in _ZERO3_PRECISIONS
    ]
    if not found:
        raise ExportError(source.layout.path, "can't find *_optim_states.pt files (as ds_to_universal)")
    return sorted(found, key=lambda f: _natural(f.relpath))


def _grid(source: Source, files: list[LayoutFile]) -> list[list[LayoutFile]]:
    """``_build_zero3_rank_grid``: the files by tensor-parallel (mp) rank, then data-parallel
    rank, every pair present (a later file of a pair replaces an earlier one, as there)."""
    grid: dict[int, dict[int, LayoutFile]] = {}
    for file in files:
        grid.setdefault(file.name.mp_rank or 0, {})[file.name.dp_rank or 0] = file
    tp_degree = max(grid) + 1
    dp_degree = max(max(ranks) for ranks in grid.values()) + 1
    for tp in range(tp_degree):
        for dp in range(dp_degree):
            if dp not in grid.get(tp, {}):
                raise ExportError(source.layout.path, f"Missing ZeRO-3 checkpoint file for tp_rank={tp}, dp_rank={dp}")
    return [[grid[tp][dp] for dp in range(dp_degree)] for tp in range(tp_degree)]


def _refuse_autoep(checkpoint: Checkpoint) -> None:
    data = checkpoint.data
    metadata = next((data[k] for k in _AUTOEP_KEYS if isinstance(data, dict) and data.get(k) is not None), None)
    if metadata is None:
        return
    partitioned = isinstance(metadata, list) and any(
        isinstance(entry, dict) and entry.get(_AUTOEP_FORMAT_KEY) == _AUTOEP_PARTITIONED for entry in metadata
    )
    if not partitioned:
        raise ExportError(
            checkpoint.path,
            "Stage 3 universal checkpoint conversion for AutoEP requires the partition-native AutoEP "
            "ZeRO-3 checkpoint format (as ds_to_universal)",
        )
    raise ExportError(checkpoint.path, "holds partition-native AutoEP ZeRO-3 metadata: not converted yet")


def _fragments(
    source: Source,
    param_shapes: list[Any],
    optims: list[LayoutFile],
    dp_degree: int,
    grads: dict[str, bool],
    shapes_path: str,
) -> dict[str, dict[int, _Fragment]]:
    """Each parameter's share of every data-parallel rank's flat partitions, by rank
    (``extract_zero_shards_stage3``), in ``param_shapes`` order; ``grads`` learns, per state,
    whether any rank's flat tensor requires gradients (``torch.cat`` of the shares then does,
    and ``torch.save`` keeps it: the fp32 partitions are the optimizer's parameters)."""
    found: dict[str, dict[int, _Fragment]] = {}
    for group, shapes in enumerate(param_shapes):  # the model states' (shapes_path), not an optimizer file's
        if not isinstance(shapes, dict):
            raise ExportError(shapes_path, f"param_shapes[{group}] is not a dict of shapes")
        for name in shapes:
            if name in found:
                raise ExportError(shapes_path, f"param_shapes lists {name!r} twice: its files would be overwritten")
            _check_name(shapes_path, name)
            found[name] = {}
    for dp_index, file in enumerate(optims):
        checkpoint = source.checkpoint(file.relpath)
        path = checkpoint.path
        optim_sd = _get(checkpoint.data, "optimizer_state_dict", path, dict)
        metadata = optim_sd.get("ds_zero_partition_groups") or []
        inner = _get(optim_sd, "optimizer_state_dict", path, dict, "optimizer_state_dict ")
        state = _get(inner, "state", path, dict, "optimizer_state_dict['optimizer_state_dict'] ")
        flat = _get(optim_sd, "fp32_flat_groups", path, list, "optimizer_state_dict ")
        for group, shapes in enumerate(param_shapes):
            moments = state.get(group)
            where = f"optimizer_state_dict['optimizer_state_dict']['state'][{group}]"
            if not isinstance(moments, dict):
                raise ExportError(path, f"has no {where}, which ds_to_universal reads")
            if group >= len(flat):
                raise ExportError(path, f"has {len(flat)} fp32_flat_groups, param_shapes lists {len(param_shapes)}")
            tensors = {"fp32": (flat[group], f"optimizer_state_dict['fp32_flat_groups'][{group}]")}
            for key in _MOMENTS:
                if key not in moments:
                    raise ExportError(
                        path,
                        f"{where} has no {key!r}: ds_to_universal converts ZeRO-3 Adam states "
                        "(fp32, exp_avg, exp_avg_sq) only",
                    )
                tensors[key] = (moments[key], f"{where}[{key!r}]")
            count, rank = _partition(path, metadata, group, dp_degree, dp_index)
            pieces = {}
            for key, (tensor, what) in tensors.items():
                if not isinstance(tensor, TensorInfo) or len(tensor.shape) != 1:
                    raise ExportError(path, f"{what} is {tensor!r:.40}, not a flat tensor")
                pieces[key] = (*source.span(file.relpath, tensor, what), tensor.dtype, what)
                grads[key] = grads[key] or tensor.requires_grad
            offset = 0
            for name, value in shapes.items():
                numel = math.prod(_shape(value, shapes_path, f"param_shapes[{group}][{name!r}]"))
                part = math.ceil(numel / count)
                share = max(0, min(part, numel - rank * part))
                states = {}
                for key, (span, size, dtype, what) in pieces.items():
                    if offset + share > size:
                        need = f"param_shapes need {offset + share} to {name!r}"
                        raise ExportError(path, f"{what} is too short: {size} elements; {need}")
                    states[key] = (dtype, cut_range([(span, size)], offset, share, DTYPE_ITEMSIZE[dtype]))
                found[name][dp_index] = _Fragment(file.relpath, share, states, _NO_STEP)
                offset += part
    return found


def _bare_files(
    source: Source, fragments: dict[str, dict[int, _Fragment]], grads: dict[str, bool]
) -> list[UniversalFile]:
    """Without tensor parallelism: each state of each parameter its ranks' shares joined, a bare
    flat tensor (``merge_zero3_slices``)."""
    files = []
    for name, ranks in fragments.items():
        ordered = [ranks[dp] for dp in sorted(ranks)]
        for key in STATES:
            dtype = ordered[0].states[key][0]
            for fragment in ordered:
                if fragment.states[key][0] != dtype:
                    found = f"{name!r}'s {key} share is {fragment.states[key][0]}, rank 0's is {dtype}"
                    raise ExportError(source.path(fragment.file), found)
            joined = coalesce([span for fragment in ordered for span in fragment.states[key][1]])
            numel = sum(f.numel for f in ordered)
            storage = PtStorage(dtype, numel, ExportTensor(name, (numel,), dtype, dtype, joined, "trainable"))
            tensor = PtTensor(storage, (numel,), requires_grad=grads[key])
            files.append(UniversalFile(f"zero/{name}/{key}.pt", name, None, numel * DTYPE_ITEMSIZE[dtype], tensor))
    return files


def _tp_info(first: Checkpoint) -> dict[str, Any]:
    """``_load_universal_checkpoint_info_stage3``: the first model states' merge patterns (none: an
    empty dict), refused where they name parameters AutoTP cannot convert."""
    info = first.data.get(INFO) or {}
    if not isinstance(info, dict):
        raise ExportError(first.path, f"{INFO} is {type(info).__name__}, not a dict")
    unsupported = info.get("autotp_unsupported_parameter_patterns") or {}
    if unsupported:
        details = (
            ", ".join(f"{pattern}: {reason}" for pattern, reason in sorted(unsupported.items()))
            if isinstance(unsupported, dict)
            else repr(unsupported)
        )
        raise ExportError(first.path, f"AutoTP universal checkpoint conversion is not supported for {details}")
    return info


def _merged_files(
    source: Source,
    first: Checkpoint,
    param_shapes: list[Any],
    rows: list[list[Any]],
    by_tp: list[dict[str, dict[int, _Fragment]]],
    grads: dict[str, bool],
    info: dict[str, Any],
    *,
    strict: bool,
) -> list[UniversalFile]:
    """With tensor parallelism (AutoTP): each rank's shares joined and shaped as its own
    ``param_shapes`` say, then merged across ranks by ``universal_checkpoint_info`` as ZeRO-1/2's
    are (``_zero12``'s merge: ``{'param': ..., 'cat_dim': ...}`` files); no ``step.pt``, the
    ZeRO-3 extraction writes no step fragments."""
    patterns = _Patterns(info, first.path)
    shapes_by_tp = [
        {n: value for group in row if isinstance(group, dict) for n, value in group.items()} for row in rows
    ]
    files: list[UniversalFile] = []
    for name in (name for group in param_shapes for name in group):
        per_tp = []
        for tp, shapes in enumerate(shapes_by_tp):
            if name not in shapes:
                missing = f"mp_rank {tp:02d}'s param_shapes has no {name!r}, which mp_rank 00's lists"
                raise ExportError(source.layout.path, missing)
            per_tp.append(_shape(shapes[name], source.layout.path, f"mp_rank {tp:02d}'s param_shapes {name!r}"))
        fragments = {tp: row[name] for tp, row in enumerate(by_tp)}
        for file in _merge(source, name, per_tp, fragments, patterns, info):
            param = file.content.get("param") if isinstance(file.content, dict) else None
            if isinstance(param, PtTensor) and grads.get(file.name.rsplit("/", 1)[1].removesuffix(".pt")):
                file = replace(file, content={**file.content, "param": replace(param, requires_grad=True)})
            files.append(file)
    if files and strict and patterns.unmatched:
        raise ExportError(
            first.path,
            f"Unused patterns={sorted(patterns.unmatched)} while merging tp slices (of {INFO}: each must match a "
            "parameter; not strict, they pass)",
            option="strict",
        )
    return files


def _partition(path: str, metadata: Any, group: int, dp_degree: int, dp_index: int) -> tuple[int, int]:
    """A sub-group's partition count and this rank's place in it: from ``ds_zero_partition_groups``
    where the optimizer recorded them, else the data-parallel degree and the file's rank."""
    entry = metadata[group] if isinstance(metadata, list) and group < len(metadata) else {}
    entry = entry if isinstance(entry, dict) else {}
    count = entry.get("partition_count", dp_degree)
    rank = entry.get("partition_rank", dp_index)
    if type(count) is not int or type(rank) is not int or count < 1 or not 0 <= rank < count:
        raise ExportError(path, f"ds_zero_partition_groups[{group}] says rank {rank!r} of {count!r}")
    return count, rank


def _check_name(path: str, name: Any) -> None:
    """A parameter's name is a folder of ``zero/``: one plain path component."""
    if type(name) is not str or name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise ExportError(path, f"param_shapes names a parameter {name!r:.60}, which is no folder name")


def _optimizer_state(source: Source, file: LayoutFile) -> UniversalFile:
    """``zero/optimizer_state.pt``: the file's ``optimizer_state_dict`` whole, ``param_groups`` added."""
    checkpoint = source.checkpoint(file.relpath)
    optim_sd = _get(checkpoint.data, "optimizer_state_dict", checkpoint.path, dict)
    inner = _get(optim_sd, "optimizer_state_dict", checkpoint.path, dict, "optimizer_state_dict ")
    _get(inner, "param_groups", checkpoint.path, object, "optimizer_state_dict['optimizer_state_dict'] ")
    copier = _Copier(source, file.relpath, checkpoint.path)
    content = copier.copy(optim_sd)
    # The same object, as DeepSpeed's ``output_sd[PARAM_GROUPS] = output_sd[...][PARAM_GROUPS]``.
    content["param_groups"] = content["optimizer_state_dict"]["param_groups"]
    return UniversalFile("zero/optimizer_state.pt", None, None, content_bytes(content), content)


class _Copier:
    """A read object as torch.load gives it and torch.save writes it again: containers rebuilt
    (each once, shared where the source shares it, as torch's memo shares them), each tensor the
    same view of its whole storage (``_zero12.whole_storage``: one :class:`PtStorage` per
    storage record of the source)."""

    def __init__(self, source: Source, relpath: str, path: str) -> None:
        self.source = source
        self.relpath = relpath
        self.path = path
        self.storages: dict[tuple[str, str], PtStorage] = {}
        self._memo: dict[int, Any] = {}

    def copy(self, value: Any) -> Any:
        done = self._memo.get(id(value))
        if done is not None:
            return done
        if isinstance(value, TensorInfo):
            copied: Any = whole_storage(self.source, self.relpath, value, "a tensor", self.storages)
            if value.attributes is not None:  # its attributes (ZeRO-3's ds_id), pickled again as torch does
                copied = replace(copied, state=value.attributes)
        elif isinstance(value, dict):
            copied = self._memo[id(value)] = type(value)()  # before the items: a dict may hold itself
            for key, item in value.items():
                copied[key] = self.copy(item)
            return copied
        elif isinstance(value, list):
            copied = self._memo[id(value)] = []
            copied.extend(self.copy(item) for item in value)
            return copied
        elif isinstance(value, tuple):
            copied = tuple(self.copy(item) for item in value)
        elif isinstance(value, Opaque):
            for where, _ in tensors_in(value):
                raise ExportError(self.path, f"a tensor inside a {value.qualname} object ({where}): not converted yet")
            copied = value  # re-emitted as the source pickles it
        else:
            return value  # str, numbers, None, bool: no identity to keep
        self._memo[id(value)] = copied
        return copied


def _not_restored(first: Checkpoint) -> list[NotRestored]:
    """The buffers and frozen parameters of the first model-states file: no file is written for
    them, and the loader keeps the values the model was built with."""
    data = first.data
    module = data.get("module") if isinstance(data, dict) else None
    buffers = data.get("buffer_names") if isinstance(data, dict) else None
    frozen = data.get("frozen_param_shapes") if isinstance(data, dict) else None
    buffer_names = set(buffers) if isinstance(buffers, list) else set()
    frozen_names = list(frozen) if isinstance(frozen, dict) else []
    found: list[NotRestored] = []
    for name in module if isinstance(module, dict) else {}:
        if name in buffer_names:
            found.append(NotRestored(name, "buffer", None))
        elif name in frozen_names:
            found.append(NotRestored(name, "frozen", None))
    listed = {n.name for n in found}
    found += [NotRestored(name, "frozen", None) for name in frozen_names if name not in listed]
    return found
