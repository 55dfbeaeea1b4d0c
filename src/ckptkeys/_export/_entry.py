"""``plan_export()``: the tag chosen, its layout handed to a planner (``_plan``), dtypes set, shards cut."""

from __future__ import annotations

import os
from dataclasses import replace

from .. import naming
from .._check._layout import Layout, TagLayout, scan, scan_listed
from .._keys._registry import NamingKeys
from .._read._errors import ReadError
from .._read._source import RemoteObject, is_url, list_remote
from ..naming import FileKind
from ._cast import INSTALL_NUMPY, NumpyMissingError, dtypes_without_numpy, numpy_available, numpy_need
from ._names import strip_prefix as _strip_prefix
from ._plan import (
    Source,
    expert_file_leftovers,
    plan_module,
    plan_pipeline,
    plan_tensor_parallel,
    plan_universal,
    plan_zero,
    plan_zero0,
)
from ._refuse import refuse_incomplete
from ._safetensors import DTYPES
from ._side import find_remote_side_files, find_side_files
from ._types import (
    DTYPE_CHOICES,
    FLOATS,
    SINGLE_FILE,
    TORCH_NAMES,
    WEIGHTS_CHOICES,
    ExportError,
    ExportPlan,
    ExportShard,
    OptionError,
    parse_size,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from .._check._problems import Problem
    from .._read._source import RemoteFolder
    from ._cast import Way
    from ._types import Dtype, ExportTensor, Planned, Weights

__all__ = ["plan_export"]


def plan_export(
    path: str | os.PathLike[str],
    *,
    tag: str | None = None,
    dtype: Dtype = "fp32",
    max_shard_size: int | str = "5GB",
    tp_rank: int | None = None,
    save: str | None = None,
    strip_prefix: str | None = None,
    weights: Weights = "masters",
    storage_options: Mapping[str, Any] | None = None,
) -> ExportPlan:
    """The plan to export the checkpoint at ``path`` (a run folder, a save folder or a tag folder).

    A run folder (a Trainer ``output_dir``, a Lightning ``dirpath``, Accelerate's ``checkpoints/``)
    exports its newest save, or the one called ``save``, as :func:`~ckptkeys.scan` chooses it
    (``KeyError`` for a ``save`` the run does not have, ``ValueError`` for ``save`` off a run).
    ``tag`` picks a tag of a save folder (default: the one ``latest`` names). ``dtype`` is
    the output dtype of floating tensors: ``"fp32"`` (the master weights), ``"bf16"``,
    ``"fp16"`` or ``"auto"`` (the training precision); other tensors keep theirs.
    ``tp_rank`` exports one tensor-parallel rank's shard as it is. ``weights`` is where the
    floating tensors come from: ``"masters"`` (the fp32 master weights where the checkpoint has
    them) or ``"module"`` (the module's weights as saved, in their saved dtype; errors about the
    optimizer state alone then do not refuse). Every ERROR ``validate`` reports for the tag
    refuses it (docs/export.md). ``strip_prefix`` takes a
    module attribute's prefix off every name (Lightning's ``model.``; :attr:`ExportPlan.common_prefix`
    suggests it). A Hugging Face save's ``config.json`` and tokenizer files become
    :attr:`ExportPlan.side_files` (from the save folder, else the run folder). Raises
    :class:`ExportError` or :class:`~ckptkeys.ReadError`, naming the file.

    ``path`` may be a URL of such a folder (``s3://bucket/run/``, any fsspec URL;
    ``storage_options`` passed to its filesystem, a ``ValueError`` with a local path): the plan
    comes from its one listing and ranged reads (:func:`~ckptkeys.scan`), each file pinned to the
    version listed, and its byte ranges are fetched from there when written (docs/remote.md).
    """
    if storage_options is not None and not is_url(os.fspath(path)):
        raise OptionError("storage_options", "apply to URLs only (s3://, gs://, hf://, ...), not to a local path",
                          os.fspath(path))  # fmt: skip
    options: dict[str, Any] = {"tag": tag, "dtype": dtype, "max_shard_size": max_shard_size, "tp_rank": tp_rank,
                               "save": save, "strip_prefix": strip_prefix, "weights": weights,
                               "storage_options": storage_options}  # fmt: skip
    try:
        plan = _plan(path, **options)
    except NumpyMissingError as error:  # planning itself needed numpy (ZeRO-0's masters matched by value)
        raise NumpyMissingError(error.path, error.needs, _ways_without_numpy(path, options, False)) from None
    need = numpy_need(plan.tensors)
    if need is not None and not numpy_available():  # refused now, before any byte is written
        needs = f"{need} needs numpy, which is not installed: {INSTALL_NUMPY}"
        averaging = any(t.mean_of for t in plan.tensors)
        raise NumpyMissingError(plan.checkpoint, needs, _ways_without_numpy(path, options, averaging))
    return plan


def _ways_without_numpy(path: str | os.PathLike[str], options: dict[str, Any], averaging: bool) -> list[Way]:
    """The changes to ``options`` whose export of ``path`` needs no numpy, each found by planning
    it: another ``dtype``, the other ``weights`` (with the dtype given, or another), and where
    the plan averages tensor-parallel slices, one rank's shard (``tp_rank`` 0, with the dtype
    given or another). Only those of fewest changes; none if nothing works without numpy."""
    other: Way = (("weights", "module" if options["weights"] == "masters" else "masters"),)
    tries: list[Way] = [(), other]
    if averaging:
        tries.append((("tp_rank", "0"),))
    ways: list[Way] = []
    for change in tries:
        changed = {**options, **{key: int(value) if key == "tp_rank" else value for key, value in change}}
        try:
            plan = _plan(path, **changed)
        except (ExportError, ReadError, ValueError, KeyError):
            continue  # no export of this checkpoint (with these options) at all
        if numpy_need(plan.tensors) is None:
            ways.append(change)
        else:
            ways += [(*change, ("dtype", dtype)) for dtype in dtypes_without_numpy(plan.tensors)]
    fewest = min((len(way) for way in ways), default=0)
    return [way for way in ways if len(way) == fewest]


def _plan(
    path: str | os.PathLike[str],
    *,
    tag: str | None,
    dtype: Dtype,
    max_shard_size: int | str,
    tp_rank: int | None,
    save: str | None,
    strip_prefix: str | None,
    weights: Weights,
    storage_options: Mapping[str, Any] | None,
) -> ExportPlan:
    if dtype not in DTYPE_CHOICES:
        raise OptionError("dtype", f"must be one of {', '.join(DTYPE_CHOICES)}, not {dtype!r:.40}")
    if weights not in WEIGHTS_CHOICES:
        raise OptionError("weights", f"must be one of {', '.join(WEIGHTS_CHOICES)}, not {weights!r:.40}")
    if strip_prefix is not None and not isinstance(strip_prefix, str):
        raise OptionError("strip_prefix", f"must be a str, not {type(strip_prefix).__name__}")
    if tp_rank is not None and (type(tp_rank) is not int or tp_rank < 0):
        raise OptionError("tp_rank", f"must be a rank (an int, 0 or more), not {tp_rank!r:.40}")
    limit = parse_size(max_shard_size)
    try:
        save_layout = scan(path, save=save, storage_options=storage_options)
    except ValueError as error:  # save= off a run folder
        if save is None or isinstance(error, ExportError):
            raise
        root = os.fspath(path)
        raise OptionError("save", str(error).removeprefix(f"{root}: "), root) from None
    layout, folder_problems, folder = _tag_layout(save_layout, tag, storage_options)
    refuse_incomplete(layout, folder_problems, weights)
    source = Source(layout, folder)
    mp_ranks = sorted({f.name.mp_rank for f in layout.files if f.name.mp_rank is not None} or {0})
    layers = layout.of_kind(FileKind.LAYER_MODEL_STATES)
    experts = layout.of_kind(FileKind.EXPERT_MODEL_STATES)
    aliases: dict[str, str] = {}
    if weights == "module":
        tensors, aliases, kind = _plan_module(source, mp_ranks, tp_rank)
    elif layout.universal:
        tensors, aliases, kind = *plan_universal(source), "universal"
    elif layers:
        if tp_rank is not None or (layout.tp_world_size or 1) > 1 or any(f.name.mp_rank for f in layers):
            raise ExportError(layout.path, "is pipeline and tensor parallel: not exported yet")
        tensors, kind = plan_pipeline(source, mp_ranks, layers, masters=True), "pipeline"
    elif tp_rank is None and len(mp_ranks) > 1:
        if experts:
            raise ExportError(layout.path, "is a tensor-parallel mixture-of-experts checkpoint: not exported yet")
        info = source.checkpoint(naming.model_states(mp_ranks[0])).data.get("universal_checkpoint_info")
        if not isinstance(info, dict):
            raise ExportError(
                layout.path,
                f"is tensor parallel ({len(mp_ranks)} mp_rank files) without universal_checkpoint_info, which "
                "says how to merge them: save the info with the checkpoint (docs/writing.md), or export one "
                "rank's shard as it is",
                option="tp_rank",
            )
        tensors, aliases, kind = plan_tensor_parallel(source, mp_ranks, info)
    else:
        mp = mp_ranks[0] if tp_rank is None else tp_rank
        if mp not in mp_ranks:
            raise ExportError(layout.path, f"has no mp_rank {mp:02d} files (ranks: {mp_ranks})", option="tp_rank")
        optim = [f for f in layout.of_kind(FileKind.OPTIM_STATES) if f.name.mp_rank == mp]
        if optim:
            tensors, aliases, kind = plan_zero(source, optim, mp, experts=bool(experts))
        else:
            tensors, kind = plan_zero0(source, mp), "zero-0"
        if experts:
            if kind == "zero-3":
                raise ExportError(layout.path, "is a ZeRO-3 mixture-of-experts checkpoint: not exported yet")
            tensors += expert_file_leftovers(source, [f for f in experts if f.name.mp_rank == mp], tensors)
            kind += " moe"
    if strip_prefix is not None:
        tensors, aliases = _strip_prefix(layout.path, strip_prefix, tensors, aliases)
    precision = layout.precision
    resolved = (precision or "fp32") if dtype == "auto" else dtype
    target = TORCH_NAMES[resolved]
    seen: set[str] = set()
    for tensor in tensors:  # safetensors names are str, one per tensor: a pickle's keys may be neither
        if type(tensor.name) is not str:
            raise ExportError(
                layout.path, f"a tensor's key {tensor.name!r:.60} is a {type(tensor.name).__name__}, not a str"
            )
        if tensor.name in seen:
            raise ExportError(layout.path, f"two tensors are named {tensor.name!r} (keys such as 7 and '7')")
        seen.add(tensor.name)
    sides = _side_files(save_layout, storage_options)
    planned = []
    for tensor in tensors:
        out = target if tensor.source_dtype in FLOATS else tensor.source_dtype
        if out not in DTYPES:
            raise ExportError(layout.path, f"tensor {tensor.name!r} has dtype {out}, which safetensors cannot hold")
        planned.append(replace(tensor, dtype=out))
    return ExportPlan(
        layout.path,
        layout.name,
        kind,
        precision,
        resolved,
        tuple(planned),
        _shards(planned, limit),
        aliases,
        limit,
        weights=weights,
        side_files=tuple(sides),
        side_objects={url: source for url, source in sides.items() if source is not None},
    )


def _side_files(layout: Layout, storage_options: Mapping[str, Any] | None) -> dict[str, RemoteObject | None]:
    """A save folder's side files, else its run folder's (a tag folder given alone has none), by
    path; a remote save's with the objects they are fetched from (a local one's: None)."""
    if layout.kind != "save":
        return {}
    folders = [layout.path] + ([layout.run] if layout.run is not None else [])
    if is_url(layout.path):
        return dict(find_remote_side_files(folders, storage_options))
    return {path: None for path in find_side_files(folders)}


def _plan_module(source: Source, mp_ranks: list[int], tp_rank: int | None) -> tuple[list[Planned], dict[str, str], str]:
    """``weights="module"``: the module's weights as saved, one model-parallel rank (or every pipeline stage)."""
    layout = source.layout
    layers = layout.of_kind(FileKind.LAYER_MODEL_STATES)
    if layers and (tp_rank is not None or any(f.name.mp_rank for f in layers)):
        raise ExportError(layout.path, "is pipeline and tensor parallel: not exported yet")
    if len(mp_ranks) > 1 and tp_rank is None and not layers:
        raise ExportError(
            layout.path, f"is tensor parallel ({len(mp_ranks)} mp_rank files): the module's weights as saved "
            "are one rank's shard", option="tp_rank"
        )  # fmt: skip
    mp = mp_ranks[0] if tp_rank is None else tp_rank
    if mp not in mp_ranks:
        raise ExportError(layout.path, f"has no mp_rank {mp:02d} files (ranks: {mp_ranks})", option="tp_rank")
    return plan_module(source, mp)


def _tag_layout(
    layout: Layout, tag: str | None, storage_options: Mapping[str, Any] | None
) -> tuple[TagLayout, list[Problem], RemoteFolder | None]:
    """The tag to export, read, the save folder's problems about it, and a remote tag's listing.

    A remote tag is listed before it is read: each file's bytes are then fetched pinned to the
    version of that listing, so a file replaced after it (read from the new version, or not) is
    refused as changed when its bytes are fetched, never written from two versions."""
    path = layout.path
    if layout.kind == "tag":
        if tag is not None and tag != layout.tags[0].name:
            raise ExportError(path, f"is the tag folder {layout.tags[0].name!r}, not tag {tag!r}", option="tag")
        chosen = layout.tags[0]
    else:
        name = tag if tag is not None else layout.latest
        names = ", ".join(t.name for t in layout.tags) or "none"
        if name is None:
            pointer = os.path.join(path, NamingKeys.LATEST)
            unread = [p.message for p in layout.problems if p.code == "latest-unreadable" and p.file == pointer]
            if unread:  # there, but empty or not a tag name: say so, not that it is missing
                raise ExportError(pointer, f"{unread[0]} (tags: {names})", option="tag")
            raise ExportError(path, f"has no 'latest' file to name the tag (tags: {names})", option="tag")
        try:
            chosen = layout.tag(name)
        except KeyError:
            raise ExportError(path, f"has no tag folder {name!r} (tags: {names})", option="tag") from None
    inside = os.path.join(chosen.path, "")
    about = [p for p in layout.problems if p.file and (p.file == chosen.path or p.file.startswith(inside))]
    if not is_url(chosen.path):
        return scan(chosen.path, read=True).tags[0], about, None
    folder = list_remote(chosen.path, storage_options)
    read = scan_listed(chosen.path, folder, read=True).tags[0]  # its files read as that listing gave them
    for error in read.read_errors.values():
        if type(error) is ReadError:  # the store (access, network, throttling, a changed object), not the file
            raise error
    return read, about, folder


def _shards(tensors: Sequence[ExportTensor], limit: int) -> tuple[ExportShard, ...]:
    """Split as huggingface_hub's ``split_state_dict_into_shards_factory`` does."""
    blocks: list[list[ExportTensor]] = []
    current: list[ExportTensor] = []
    size = 0
    for tensor in tensors:
        if tensor.nbytes > limit:
            blocks.append([tensor])  # a tensor larger than the limit gets a shard of its own
            continue
        if current and size + tensor.nbytes > limit:
            blocks.append(current)
            current, size = [], 0
        current.append(tensor)
        size += tensor.nbytes
    if current or not blocks:
        blocks.append(current)
    if len(blocks) == 1:
        names = [SINGLE_FILE]
    else:
        names = [f"model-{i:05d}-of-{len(blocks):05d}.safetensors" for i in range(1, len(blocks) + 1)]
    return tuple(
        ExportShard(name, tuple(t.name for t in block), sum(t.nbytes for t in block))
        for name, block in zip(names, blocks, strict=True)
    )
