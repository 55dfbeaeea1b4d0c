"""``validate()`` and ``validate_path()``: a dict, a file, a tag or save folder, or a run, read and validated.

Each takes a URL too (``s3://``, ``gs://``, ``hf://``, any fsspec URL, with ``storage_options`` for
its filesystem): a remote folder is listed once and that listing stands for it, its runs' saves and
tags included; a local path keeps the local code path (``storage_options`` with it: ``ValueError``).
"""

from __future__ import annotations

import os
from typing import Literal, get_args  # schema, imported below, imports typing anyway

from .. import schema
from .._read._errors import NotACheckpointError, ReadError
from .._read._limits import Limits
from .._read._reader import Checkpoint, read, read_object
from .._read._safetensors import is_safetensors, is_safetensors_object, read_safetensors_object
from .._read._source import RemoteFolder, RemoteObject, is_url, list_remote, local_only, open_remote
from ..naming import parse
from ._dicts import check_dict, check_file, client_state_problems, guess_kind
from ._layout import LayoutFile, scan, scan_listed
from ._plain_files import is_deepspeed_dict, plain_file_problem
from ._problems import Problem
from ._reports import FileReport, RunReport, TagReport, ValidationReport
from ._runs import Run, run_of, scan_run
from ._safetensors_files import SafetensorsReport, safetensors_object_report, validate_safetensors
from ._security import globals_problems
from ._validate import check_tag
from ._weights_folders import WeightsFolderReport, is_weights_folder, validate_weights_folder

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, Final

__all__ = [
    "KIND_CHOICES",
    "DictKindName",
    "validate",
    "validate_file",
    "validate_folder",
    "validate_path",
    "validate_run",
    "validate_tag",
]

DictKindName = Literal[
    "model states",
    "optimizer-states file",
    "ZeRO-1/2 optimizer state",
    "BF16-optimizer state",
    "ZeRO-3 optimizer state",
    "fp16 optimizer wrapper state",
    "universal_checkpoint_info",
    "universal optimizer state",
    "universal parameter file",
    "checkpoint_parallel_dimensions",
    "parameter_with_sub_params entry",
]
"""The kinds of dict ``validate``, ``validate_file`` and ``validate_path`` check as (``kind=``):
the names of :data:`ckptkeys.schema.SPECS`, spelt exactly so (``"model states"``, with a space)."""
DictKindName.__doc__ = "The kinds of dict validate() checks as (kind=): ckptkeys.schema.SPECS' names, spelt so."
KIND_CHOICES: Final[tuple[DictKindName, ...]] = get_args(DictKindName)  # a test: the same as SPECS' names


def _spec(kind: str) -> schema.DictKind:
    """The spec of ``kind``; ``ValueError`` listing the kinds, with the one meant if only the spelling differs."""
    if kind not in KIND_CHOICES:
        meant = [name for name in KIND_CHOICES if _loose(name) == _loose(str(kind))]
        hint = f"; did you mean {meant[0]!r}?" if meant else ""
        accepted = ", ".join(repr(name) for name in KIND_CHOICES)
        raise ValueError(f"kind must be one of {accepted}; not {kind!r}{hint}")
    return schema.spec_for(kind)


def _loose(name: str) -> str:
    """A kind's name without case, and with ``_``, ``-`` and spaces alike: what a misspelling keeps."""
    return name.lower().replace("_", " ").replace("-", " ")


def validate_file(
    path: str | os.PathLike[str],
    *,
    kind: DictKindName | None = None,
    limits: Limits | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> FileReport:
    """Read one checkpoint file and check it: as ``kind`` (a :data:`ckptkeys.schema.SPECS` name,
    :data:`ckptkeys.DictKindName`) if given, else as its name says, else as its keys suggest
    (model states or an optimizer-states file). A file whose name DeepSpeed does not write and whose
    top-level dict holds no key only DeepSpeed writes (a plain state dict, a pickled module, a
    trainer's ``optimizer.pt``) is not checked against DeepSpeed's schema: it gets one
    ``not-deepspeed`` information saying what it holds. Its globals are checked as every file's are.
    Raises :class:`~ckptkeys.ReadError` if the file cannot be read, and ``ValueError``, listing the
    kinds, for a ``kind`` that is none of them. ``path`` may be a URL (read as :func:`~ckptkeys.read`
    reads one, ``storage_options`` passed to its filesystem).
    """
    root = os.fspath(path)
    spec = None if kind is None else _spec(kind)
    checkpoint = read(root, limits=limits, storage_options=storage_options)
    return _file_report(root, spec, checkpoint)


def _file_report(root: str, spec: schema.DictKind | None, checkpoint: Checkpoint) -> FileReport:
    name = parse(root)
    if spec is not None:
        problems = check_dict(checkpoint.data, spec, file=root)
    elif name is None and not is_deepspeed_dict(checkpoint.data):
        problems = [plain_file_problem(root, checkpoint.data)]
    elif name is None:
        problems = check_dict(checkpoint.data, guess_kind(checkpoint.data), file=root)
    else:
        problems = check_file(LayoutFile(root, os.path.basename(root), name, checkpoint.size), checkpoint.data)
    problems = globals_problems(root, checkpoint.globals) + problems
    return FileReport(root, name, checkpoint, tuple(client_state_problems(problems)))


def validate_tag(
    path: str | os.PathLike[str],
    *,
    limits: Limits | None = None,
    progress: Callable[[int, int], None] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> TagReport:
    """Scan the tag folder at ``path`` (or URL: one listing, ``storage_options`` for its
    filesystem), read every file, and validate it.

    Raises :class:`~ckptkeys.NotACheckpointError` if ``path`` is not a tag folder.
    """
    layout = scan(path, read=True, limits=limits, progress=progress, storage_options=storage_options)
    if layout.kind != "tag":
        raise NotACheckpointError(layout.path, "is a save folder, not a tag folder (validate_folder takes it)")
    return check_tag(layout.tags[0])


def validate_folder(
    path: str | os.PathLike[str],
    *,
    limits: Limits | None = None,
    progress: Callable[[int, int], None] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> ValidationReport:
    """Scan ``path`` (a save folder, a tag folder as a save of one tag, or a run folder's newest save,
    as :func:`scan` chooses it; or a URL of one, listed once, ``storage_options`` for its
    filesystem), read every file, and validate each tag.

    Raises :class:`~ckptkeys.ReadError` if ``path`` cannot be listed, and
    :class:`~ckptkeys.NotACheckpointError` if it holds no checkpoint.
    """
    root = os.fspath(path)
    local_only(root, storage_options)
    listing = list_remote(root, storage_options) if is_url(root) else None
    return _validate_save(root, None, limits, progress, listing)


def _validate_save(
    path: str,
    framework: str | None,
    limits: Limits | None,
    progress: Callable[[int, int], None] | None,
    listing: RemoteFolder | None = None,
) -> ValidationReport:
    if listing is not None:
        layout = scan_listed(path, listing, read=True, limits=limits, progress=progress)
    else:
        layout = scan(path, read=True, limits=limits, progress=progress)
    framework = layout.framework or framework
    return ValidationReport(layout, tuple(check_tag(tag, framework) for tag in layout.tags), layout.problems)


def validate_run(
    path: str | os.PathLike[str],
    *,
    save: str | None = None,
    all_saves: bool = False,
    limits: Limits | None = None,
    progress: Callable[[int, int], None] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> RunReport:
    """Find the saves of the run folder at ``path`` and validate the newest (``save``: the one
    so named; ``all_saves``: every one). Raises :class:`~ckptkeys.NotACheckpointError` if no
    subfolder is a save folder, and ``KeyError`` for a ``save`` the run does not have.
    A URL's run is listed once (``storage_options`` for its filesystem): its saves and their files.
    """
    root = os.fspath(path)
    local_only(root, storage_options)
    if is_url(root):
        listing = list_remote(root, storage_options)
        return _validate_run(run_of(root, listing), save, all_saves, limits, progress, listing)
    return _validate_run(scan_run(root), save, all_saves, limits, progress, None)


def _validate_run(
    run: Run,
    save: str | None,
    all_saves: bool,
    limits: Limits | None,
    progress: Callable[[int, int], None] | None,
    listing: RemoteFolder | None,
) -> RunReport:
    if save is not None:
        chosen: tuple[str, ...] = (run.save(save).path,)
    else:
        chosen = tuple(s.path for s in run.saves) if all_saves else (run.saves[0].path,)
    return RunReport(run, tuple(_validate_save(p, run.framework, limits, progress, listing) for p in chosen))


def validate_path(
    path: str | os.PathLike[str],
    *,
    kind: DictKindName | None = None,
    save: str | None = None,
    all_saves: bool = False,
    limits: Limits | None = None,
    progress: Callable[[int, int], None] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> FileReport | SafetensorsReport | ValidationReport | RunReport | WeightsFolderReport:
    """Validate whatever ``path`` is: a file, a tag or save folder, or a run (what ``ckptkeys validate`` does).

    A file whose content is a safetensors header (whatever its name, unless DeepSpeed writes that
    name: then it is no DeepSpeed file, a :class:`~ckptkeys.NotACheckpointError`) is read by
    :func:`~ckptkeys.read_safetensors` (a :class:`SafetensorsReport`); any other file by
    :func:`validate_file`. A folder with no DeepSpeed checkpoint but model weights
    (``model.safetensors``, or shards and their ``*.index.json``, as ``save_pretrained`` and
    ``ckptkeys export`` write them) is a :class:`WeightsFolderReport`.

    ``kind`` applies to a file, ``save`` and ``all_saves`` to a run; given for anything else
    they raise ``ValueError``, as does a ``kind`` that is not a :data:`ckptkeys.DictKindName`.
    Raises :class:`~ckptkeys.ReadError` when ``path`` does not exist, cannot be read, or holds
    no checkpoint.

    ``path`` may be a URL (``storage_options`` passed to its filesystem; with a local path they
    raise ``ValueError``). A folder there is listed once, and that listing stands for it, its
    saves and tags: no request per sub-folder or per file but each file's ranged GETs (docs/remote.md).
    """
    if kind is not None:
        _spec(kind)
    root = os.fspath(path)
    local_only(root, storage_options)
    if is_url(root):
        return _validate_url(root, kind, save, all_saves, limits, progress, storage_options)
    if not os.path.exists(root):
        raise ReadError(root, "does not exist")
    if not os.path.isdir(root):
        if save is not None or all_saves:
            raise ValueError(f"{root}: a file, not a run folder: it has no saves to choose from")
        # By content, whatever its name, except a name DeepSpeed writes: such a file is checked
        # as DeepSpeed's whatever it holds (a safetensors header there is unreadable, as in a tag folder).
        if kind is None and parse(root) is None and is_safetensors(root):
            return validate_safetensors(root)
        try:
            return validate_file(root, kind=kind, limits=limits)
        except NotACheckpointError:
            if kind is None and root.lower().endswith(".safetensors"):
                validate_safetensors(root)  # a broken header: its reason, rather than "not a torch checkpoint"
            raise
    if kind is not None:
        raise ValueError(f"{root}: a folder: kind applies to one file")
    try:
        layout = scan(root)
    except NotACheckpointError:
        if not is_weights_folder(root):
            raise
        if save is not None or all_saves:  # no DeepSpeed checkpoint, but model weights (save_pretrained, export)
            raise ValueError(
                f"{root}: a folder of model weights, not a run folder: it has no saves to choose from"
            ) from None
        return validate_weights_folder(root)
    if layout.run is not None:
        return validate_run(root, save=save, all_saves=all_saves, limits=limits, progress=progress)
    if save is not None or all_saves:
        raise ValueError(f"{root}: a {layout.kind} folder, not a run folder: it has no saves to choose from")
    return validate_folder(root, limits=limits, progress=progress)


def _validate_url(
    root: str,
    kind: DictKindName | None,
    save: str | None,
    all_saves: bool,
    limits: Limits | None,
    progress: Callable[[int, int], None] | None,
    storage_options: Mapping[str, Any] | None,
) -> FileReport | SafetensorsReport | ValidationReport | RunReport | WeightsFolderReport:
    """:func:`validate_path` of a URL: a folder (its one listing), else one object (one ``info()``)."""
    try:
        listing = list_remote(root, storage_options)
    except ReadError as listed:
        try:
            source = open_remote(root, storage_options)
        except ReadError:
            raise listed from None  # neither a folder nor an object: what the listing said
        return _validate_object(source, kind, save, all_saves, limits)
    if kind is not None:
        raise ValueError(f"{root}: a folder: kind applies to one file")
    try:
        layout = scan_listed(root, listing)
    except NotACheckpointError:
        if not is_weights_folder(root, listing):
            raise
        if save is not None or all_saves:
            raise ValueError(
                f"{root}: a folder of model weights, not a run folder: it has no saves to choose from"
            ) from None
        return validate_weights_folder(root, listing=listing)
    if layout.run is not None:
        return _validate_run(run_of(root, listing), save, all_saves, limits, progress, listing)
    if save is not None or all_saves:
        raise ValueError(f"{root}: a {layout.kind} folder, not a run folder: it has no saves to choose from")
    return _validate_save(root, None, limits, progress, listing)


def _validate_object(
    source: RemoteObject, kind: DictKindName | None, save: str | None, all_saves: bool, limits: Limits | None
) -> FileReport | SafetensorsReport:
    """One remote file, as :func:`validate_path` takes a local one: by content (its first bytes,
    one GET) unless its name is DeepSpeed's, then read by ranged GETs."""
    root = source.url
    if save is not None or all_saves:
        raise ValueError(f"{root}: a file, not a run folder: it has no saves to choose from")
    if kind is None and parse(root) is None and is_safetensors_object(source):
        return safetensors_object_report(source)
    try:
        checkpoint = read_object(source, limits or Limits())
    except NotACheckpointError:
        if kind is None and root.lower().endswith(".safetensors"):
            read_safetensors_object(source)  # a broken header: its reason, rather than "not a torch checkpoint"
        raise
    return _file_report(root, None if kind is None else _spec(kind), checkpoint)


def validate(
    target: str | os.PathLike[str] | dict[Any, Any],
    *,
    kind: DictKindName | None = None,
    limits: Limits | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> list[Problem]:
    """The problems of a checkpoint: a run, a save or tag folder, one file, or one dict.

    A dict (from :func:`ckptkeys.read` or ``torch.load``) is checked as ``kind`` (a
    :data:`ckptkeys.schema.SPECS` name such as ``"model states"``: :data:`ckptkeys.DictKindName`;
    any other raises ``ValueError`` listing them), or as model states or an optimizer-states file
    as its keys suggest. A path is validated by :func:`validate_path`,
    as ``ckptkeys validate PATH`` does: a file as its name (or ``kind``) says, a folder with
    every check, a run by its newest save. Problems come in the order they were found. A bad
    checkpoint raises nothing (an unreadable file in a folder is an ``unreadable-file`` error);
    a PATH that is not a checkpoint at all (it does not exist, a file that cannot be read, a
    folder that holds none) raises :class:`~ckptkeys.ReadError`, where the command exits with 2.
    A URL (a ``str``: ``s3://bucket/run/``) is validated where it lives, ``storage_options``
    passed to its filesystem (with a local path or a dict: ``ValueError``).
    """
    if isinstance(target, dict):
        if storage_options is not None:
            raise ValueError("storage_options apply to URLs only, not to a dict")
        return client_state_problems(check_dict(target, _spec(kind) if kind is not None else guess_kind(target)))
    report = validate_path(target, kind=kind, limits=limits, storage_options=storage_options)
    return list(report.all_problems)
