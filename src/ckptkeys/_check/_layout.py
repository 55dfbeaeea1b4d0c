"""``scan()``: the layout of a checkpoint folder, from its file names and, when asked, its files.

A *save folder* (what ``engine.save_checkpoint(save_dir)`` was given) holds tag folders and
the ``latest`` / ``latest_universal`` pointer files; a *tag folder* holds the files of one
checkpoint. ``scan`` takes either. From names alone it finds the tags, the files of each by
kind and rank, the ZeRO stage, precision and parallel degrees as far as names tell them, and
the problems a user must hear about: a missing rank, mixed precision prefixes, a ``latest``
that names an absent tag, model states without optimizer shards. With ``read=True`` it also
reads each file's pickle (never its tensors) and takes the stage, precision and degrees from
what DeepSpeed wrote. It never follows a symlink out of the folder it was given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from .. import naming
from .._keys._registry import ModuleKeys, NamingKeys, OptimFileKeys, OptimizerKeys, ParallelDimsKeys
from .._read._errors import NotACheckpointError, ReadError
from .._read._limits import Limits
from .._read._many import read_many
from .._read._pickle import Opaque
from .._read._reader import Checkpoint, read_inside, read_object_records
from .._read._repr import counted, nbytes, one_line, severities
from .._read._source import RemoteFolder, is_url, list_remote, local_only
from .._read._torch import TensorInfo
from ..naming import CheckpointName, FileKind
from . import _frameworks
from ._folders import POINTER_KINDS, Entry, is_tag_folder, list_entries, read_pointer
from ._problems import Problem, Severity
from ._runs import run_of, scan_run
from ._security import globals_problems, read_error_problems

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping
    from typing import Any, Final, Literal

__all__ = [
    "MAX_MISSING",
    "Layout",
    "LayoutFile",
    "MissingBudget",
    "TagLayout",
    "beyond_files",
    "read_dicts",
    "scan",
    "scan_listed",
]

# DeepSpeed's ds_config precision sections, in the order the engine checks them.
_PRECISION_SECTIONS: Final = (("bf16", "bf16"), ("bfloat16", "bf16"), ("fp16", "fp16"))
_FLOAT_DTYPES: Final = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


@dataclass(frozen=True, slots=True, repr=False)
class LayoutFile:
    """One checkpoint file of a tag folder. Its repr is one line: the file, its kind and size."""

    path: str
    relpath: str
    """The path inside the tag folder, with ``/`` separators (``zero/fc1.weight/fp32.pt``)."""
    name: CheckpointName
    size: int

    def __repr__(self) -> str:
        return one_line(self, self.path, (self.name.kind.value.replace("_", " "), nbytes(self.size)))


@dataclass(frozen=True, slots=True, repr=False)
class TagLayout:
    """One tag folder: its files and what they tell.

    A degree, stage or precision is ``None`` where the names cannot tell it (ZeRO-1 and 2
    write the same names; unprefixed optimizer shards may be fp16 or fp32); ``scan(read=True)``
    fills it from the files. Its repr is one line (folder, files, bytes, stage, precision,
    problems); the files are :attr:`files`, the problems :attr:`problems`.
    """

    name: str
    path: str
    files: tuple[LayoutFile, ...]
    universal: bool
    """A universal checkpoint (``ds_to_universal`` output, with a ``zero/`` folder)."""
    zero_stage: int | None
    precision: str | None
    """``"fp32"``, ``"fp16"`` or ``"bf16"``."""
    dp_world_size: int | None
    mp_world_size: int | None
    """Model-parallel ranks in the file names: tensor x pipeline degree under the pipeline engine."""
    pp_world_size: int | None
    tp_world_size: int | None
    problems: tuple[Problem, ...]
    other_files: tuple[str, ...] = ()
    """Entries of the tag folder that are not checkpoint files."""
    checkpoints: dict[str, Checkpoint] = field(default_factory=dict)
    """With ``read=True``: every file that could be read, by ``relpath``."""
    read_errors: dict[str, ReadError] = field(default_factory=dict)
    """With ``read=True``: why each other file could not be read, by ``relpath``."""
    record_ends: dict[str, str] = field(default_factory=dict)
    """With ``read=True`` of a remote tag: the files whose zip storage records end past the
    object, by ``relpath``, with the reason (found while each was read: ``validate`` reports
    them as it reports a local file's, which it checks from the file)."""

    def __repr__(self) -> str:
        facts = [counted(len(self.files), "file"), nbytes(sum(f.size for f in self.files))]
        if self.universal:
            facts.append("universal")
        if self.zero_stage is not None:
            facts.append(f"ZeRO-{self.zero_stage}")
        if self.precision is not None:
            facts.append(self.precision)
        return one_line(self, self.path, (*facts, severities(p.severity for p in self.problems)))

    def of_kind(self, *kinds: FileKind) -> tuple[LayoutFile, ...]:
        """The files of the given kinds, in layout order."""
        return tuple(f for f in self.files if f.name.kind in kinds)


def read_dicts(tag: TagLayout, files: Iterable[LayoutFile]) -> list[tuple[LayoutFile, dict[Any, Any]]]:
    """Those of ``files`` that ``scan(read=True)`` read as a dict, with that dict, in order."""
    found = []
    for file in files:
        checkpoint = tag.checkpoints.get(file.relpath)
        if checkpoint is not None and isinstance(checkpoint.data, dict):
            found.append((file, checkpoint.data))
    return found


@dataclass(frozen=True, slots=True, repr=False)
class Layout:
    """What ``scan`` found: the tags of a save folder (or the one tag folder it was given).

    Its repr is one line (folder, kind, tags, files, bytes, problems of the folder and its tags);
    the tags are :attr:`tags` (each with its ``files``), every problem :attr:`all_problems`.
    """

    path: str
    kind: Literal["save", "tag"]
    latest: str | None
    """The tag ``latest`` names (``None`` without a ``latest`` file)."""
    latest_universal: str | None
    tags: tuple[TagLayout, ...]
    problems: tuple[Problem, ...]
    """Problems of the folder itself; each tag has its own."""
    framework: str | None = None
    """The framework that wrote the save folder, where its files or name tell (``"transformers"``,
    ``"accelerate"``, ``"lightning"``); ``None`` for DeepSpeed's own ``save_checkpoint``."""
    framework_files: tuple[str, ...] = ()
    """Files of the save folder that a framework writes beside the save (``trainer_state.json``, ...)."""
    run: str | None = None
    """The run folder ``scan`` was given, when it chose this save from it (its newest, or ``save``)."""

    def __repr__(self) -> str:
        files = [f for tag in self.tags for f in tag.files]
        facts = [self.kind, counted(len(self.tags), "tag")]
        if self.framework is not None:
            facts.append(self.framework)
        facts += [counted(len(files), "file"), nbytes(sum(f.size for f in files))]
        return one_line(self, self.path, (*facts, severities(p.severity for p in self.all_problems)))

    def tag(self, name: str) -> TagLayout:
        """The tag called ``name``; ``KeyError`` if there is none."""
        for tag in self.tags:
            if tag.name == name:
                return tag
        raise KeyError(name)

    @property
    def all_problems(self) -> tuple[Problem, ...]:
        """The folder's problems, then every tag's."""
        return self.problems + tuple(p for tag in self.tags for p in tag.problems)


def scan(
    path: str | os.PathLike[str],
    *,
    read: bool = False,
    limits: Limits | None = None,
    progress: Callable[[int, int], None] | None = None,
    save: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Layout:
    """The layout of the save folder or tag folder at ``path``, or of a run folder's newest save.

    ``path`` may be a URL (``s3://bucket/run/``, any fsspec URL, ``storage_options`` passed to its
    filesystem): the folder is listed once (names and sizes, no request per file, a run's saves
    included), and with ``read=True`` each file is read by ranged GETs as :func:`~ckptkeys.read`
    reads a URL.

    With ``read=True`` every checkpoint file's pickle is read (never its tensors); a file
    that cannot be read is an ``unreadable-file`` problem, and the rest is still reported.
    ``progress(done, total)`` is called after each file read, per tag.

    A run folder (a Trainer ``output_dir``, a Lightning ``dirpath``, Accelerate's
    ``checkpoints/``: see :func:`scan_run`) gives the layout of its newest save, or of the save
    called ``save``, as ``inspect`` and ``validate`` report it; :attr:`Layout.run` is then
    ``path``. ``save`` for a save or tag folder raises ``ValueError``, a ``save`` the run does
    not have ``KeyError``.
    Raises :class:`~ckptkeys.ReadError` if ``path`` is not a readable folder, and
    :class:`~ckptkeys.NotACheckpointError` if it holds no checkpoint at all.
    """
    root = os.fspath(path)
    if is_url(root):
        listing = list_remote(root, storage_options)
        return scan_listed(root, listing, read=read, limits=limits, progress=progress, save=save)
    local_only(root, storage_options)
    return _scan_root(root, read, limits, progress, save, None)


def scan_listed(
    root: str,
    listing: RemoteFolder,
    *,
    read: bool = False,
    limits: Limits | None = None,
    progress: Callable[[int, int], None] | None = None,
    save: str | None = None,
) -> Layout:
    """:func:`scan` of the remote folder ``root`` from its one ``listing`` (``list_remote(root)``):
    a save or tag folder, or a run folder's newest save (or ``save``), as a local folder is scanned."""
    return _scan_root(root, read, limits, progress, save, listing)


def _scan_root(
    root: str,
    read: bool,
    limits: Limits | None,
    progress: Callable[[int, int], None] | None,
    save: str | None,
    listing: RemoteFolder | None,
) -> Layout:
    """A save or tag folder, or a run folder's newest save (or ``save``): local, or from ``listing``."""
    try:
        layout = _scan_folder(root, read, limits, progress, listing)
    except NotACheckpointError:
        # scan_run's error names save folders too, when there are none
        run = scan_run(root) if listing is None else run_of(root, listing)
        chosen = run.save(save) if save is not None else run.saves[0]
        return replace(_scan_folder(chosen.path, read, limits, progress, listing), run=root)
    if save is not None:
        raise ValueError(f"{root}: a {layout.kind} folder, not a run folder: it has no saves to choose from")
    return layout


def _scan_folder(
    root: str,
    read: bool,
    limits: Limits | None,
    progress: Callable[[int, int], None] | None,
    listing: RemoteFolder | None = None,
) -> Layout:
    """A save folder or a tag folder (a local path, or a URL: then one listing, of it or of a folder
    above it, stands for the folder)."""
    boundary: str | RemoteFolder
    if listing is not None:
        boundary = listing
    else:
        if not os.path.exists(root):
            raise ReadError(root, "does not exist")
        if not os.path.isdir(root):
            raise ReadError(root, "is a file, not a checkpoint folder")
        boundary = os.path.realpath(root)
    problems: list[Problem] = []
    entries = list_entries(root, boundary, problems)
    if is_tag_folder(root, entries, boundary):
        tag = _scan_tag(os.path.basename(os.path.normpath(root)), root, entries, boundary, read, limits, progress)
        return Layout(root, "tag", None, None, (tag,), tuple(problems))

    tags = []
    for entry in entries:
        if entry.is_dir:
            children = list_entries(entry.path, boundary, problems)
            if is_tag_folder(entry.path, children, boundary):
                tags.append(_scan_tag(entry.name, entry.path, children, boundary, read, limits, progress))
    names = {entry.name: entry for entry in entries}
    latest = read_pointer(boundary, names.get(NamingKeys.LATEST), problems)
    latest_universal = read_pointer(boundary, names.get(NamingKeys.LATEST_UNIVERSAL), problems)
    if not tags and latest is None and latest_universal is None:
        raise NotACheckpointError(root, "holds no DeepSpeed checkpoint: no checkpoint files and no tag folders")
    tag_names = {tag.name for tag in tags}
    for pointer, value in ((NamingKeys.LATEST, latest), (NamingKeys.LATEST_UNIVERSAL, latest_universal)):
        if value is not None and value not in tag_names:
            empty = value in names and names[value].is_dir  # a save that did not finish, or files removed
            what = "whose folder holds no checkpoint file" if empty else "which is not in the folder"
            problems.append(
                Problem(
                    Severity.ERROR,
                    "latest-missing-tag",
                    f"{pointer} names tag {value!r}, {what}",
                    os.path.join(root, pointer),
                )
            )
    by_name = {tag.name: tag for tag in tags}
    if latest_universal is not None and latest_universal in by_name and not by_name[latest_universal].universal:
        problems.append(
            Problem(
                Severity.ERROR,
                "latest-universal-not-universal",
                f"{NamingKeys.LATEST_UNIVERSAL} names tag {latest_universal!r}, which is not a universal checkpoint "
                "(no zero/ folder): the engine's load_universal would fail on it",
                os.path.join(root, NamingKeys.LATEST_UNIVERSAL),
            )
        )
    # A latest that is there but no regular file (a FIFO, a dangling link) is latest-unreadable already.
    unreadable = {p.file for p in problems if p.code == "latest-unreadable"}
    there = NamingKeys.LATEST in names or os.path.join(root, NamingKeys.LATEST) in unreadable
    if tags and latest is None and not there and latest_universal is None:
        newest = max(tags, key=lambda t: _tag_step(t.name))
        problems.append(
            Problem(
                Severity.WARNING,
                "no-latest",
                f"no {NamingKeys.LATEST} file: DeepSpeed writes it after every file of a save, so the last save "
                f"({newest.name!r}?) may not have finished, or was saved with save_latest=False; "
                "load_checkpoint, zero_to_fp32 and ckptkeys export need the tag named (--tag)",
                root,
            )
        )
    files = [entry.name for entry in entries if not entry.is_dir]
    framework = _frameworks.framework_of_files(files) or _frameworks.framework_of_save_name(os.path.basename(root))
    framework_files = tuple(name for name in files if _frameworks.is_framework_file(name))
    return Layout(root, "save", latest, latest_universal, tuple(tags), tuple(problems), framework, framework_files)


def _tag_step(name: str) -> tuple[int, str]:
    """A tag's order: the number at its end (``global_step12``), then its name."""
    digits = len(name) - len(name.rstrip("0123456789"))
    return (int(name[-digits:]) if 0 < digits <= 18 else -1, name)


# -- one tag -------------------------------------------------------------------------------------


def _tag_files(
    entries: list[Entry], boundary: str | RemoteFolder, problems: list[Problem]
) -> tuple[list[LayoutFile], list[str]]:
    files: list[LayoutFile] = []
    others: list[str] = []
    for entry in entries:
        if entry.is_dir and entry.name == NamingKeys.UNIVERSAL_ZERO_FOLDER:
            for child in list_entries(entry.path, boundary, problems):
                inner = list_entries(child.path, boundary, problems) if child.is_dir else [child]
                for leaf in inner:
                    if leaf.is_dir:
                        continue
                    relpath = "/".join((entry.name, child.name, leaf.name) if child.is_dir else (entry.name, leaf.name))
                    _add(files, others, leaf, relpath)
        elif entry.is_dir:
            others.append(entry.name + "/")
        else:
            _add(files, others, entry, entry.name)
    files.sort(key=_order)
    return files, others


def _add(files: list[LayoutFile], others: list[str], entry: Entry, relpath: str) -> None:
    parsed = naming.parse(relpath)
    if parsed is None or parsed.kind in POINTER_KINDS:
        others.append(relpath)
    else:
        files.append(LayoutFile(entry.path, relpath, parsed, entry.size))


_KIND_ORDER: Final = {kind: index for index, kind in enumerate(FileKind)}


def _order(file: LayoutFile) -> tuple[Any, ...]:
    n = file.name
    return (
        _KIND_ORDER[n.kind],
        n.layer if n.layer is not None else -1,
        n.expert if n.expert is not None else -1,
        n.ep_rank if n.ep_rank is not None else -1,
        n.mp_rank if n.mp_rank is not None else -1,
        n.dp_rank if n.dp_rank is not None else -1,
        file.relpath,
    )


def _scan_tag(
    name: str,
    path: str,
    entries: list[Entry],
    boundary: str | RemoteFolder,
    read_files: bool,
    limits: Limits | None,
    progress: Callable[[int, int], None] | None,
) -> TagLayout:
    problems: list[Problem] = []
    files, others = _tag_files(entries, boundary, problems)
    by_kind: dict[FileKind, list[LayoutFile]] = {}
    for file in files:
        by_kind.setdefault(file.name.kind, []).append(file)
    model = by_kind.get(FileKind.MODEL_STATES, [])
    zero3 = by_kind.get(FileKind.ZERO3_MODEL_STATES, [])
    optim = by_kind.get(FileKind.OPTIM_STATES, [])
    layers = by_kind.get(FileKind.LAYER_MODEL_STATES, [])
    universal = FileKind.UNIVERSAL_OPTIMIZER_STATE in by_kind or FileKind.UNIVERSAL_PARAM_STATE in by_kind

    mp_ranks = _ranks(f.name.mp_rank for f in model + zero3 + optim)
    dp_ranks = _ranks(f.name.dp_rank for f in optim + zero3)
    mp_world = max(mp_ranks) + 1 if mp_ranks else None
    dp_world = max(dp_ranks) + 1 if dp_ranks else None
    if universal:
        stage: int | None = None
    elif zero3:
        stage = 3
    elif optim:
        stage = None  # ZeRO-1 and ZeRO-2 write the same names
    else:
        stage = 0 if model else None
    prefixes = {f.name.precision or "" for f in optim}
    precision = {"bf16": "bf16", "fp16": "fp16"}.get(next(iter(prefixes))) if len(prefixes) == 1 else None
    pp_world = 1 if (model or zero3) and not layers else None
    tp_world = mp_world if pp_world == 1 else None

    if len(prefixes) > 1:
        counts = ", ".join(
            f"{sum(f.name.precision == p for f in optim)} with {p or 'no'} prefix" for p in sorted(prefixes)
        )
        problems.append(
            Problem(Severity.ERROR, "mixed-precision", f"optimizer shards of different precisions: {counts}", path)
        )
    problems += _missing_files(path, by_kind, mp_world, dp_world, prefixes)

    checkpoints: dict[str, Checkpoint] = {}
    read_errors: dict[str, ReadError] = {}
    record_ends: dict[str, str] = {}
    if read_files:
        outcomes = _read_files(files, boundary, limits)
        for done, (file, outcome) in enumerate(zip(files, outcomes, strict=True), start=1):
            if isinstance(outcome, ReadError):
                read_errors[file.relpath] = outcome
                problems += read_error_problems(file.path, outcome)
            else:
                checkpoints[file.relpath], reason = outcome
                if reason is not None:
                    record_ends[file.relpath] = reason
                problems += globals_problems(file.path, outcome[0].globals)
            if progress is not None:
                progress(done, len(files))
        facts = _facts_from_files(files, checkpoints)
        stage = facts.get("zero_stage", stage)
        precision = facts.get("precision", precision)
        dp_world = facts.get("dp_world_size", dp_world)
        mp_world = facts.get("mp_world_size", mp_world)
        pp_world = facts.get("pp_world_size", pp_world)
        tp_world = facts.get("tp_world_size", tp_world)
        if stage is not None and stage >= 1 and not optim and not universal and (model or zero3):
            problems += _no_optimizer_shards(path, model + zero3, stage, precision, dp_world)
    return TagLayout(
        name,
        path,
        tuple(files),
        universal,
        stage,
        precision,
        dp_world,
        mp_world,
        pp_world,
        tp_world,
        tuple(problems),
        tuple(others),
        checkpoints,
        read_errors,
        record_ends,
    )


def _read_files(
    files: list[LayoutFile], boundary: str | RemoteFolder, limits: Limits | None
) -> Iterator[tuple[Checkpoint, str | None] | ReadError]:
    """Each file read, in order, with why a zip storage record of a remote file ends past it (None
    for a local file: ``validate`` checks it from the file). A local folder's one after another (a
    disk answers at once); a remote folder's through :func:`~ckptkeys._read._many.read_many`:
    each file pinned to the version its listing gave, its head and tail fetched 32 files ahead
    of the one parsed, its bytes dropped once parsed (memory flat in the number of files), as a
    store answers each GET after a round trip."""
    if isinstance(boundary, RemoteFolder):
        sources = [boundary.open(boundary.name_of(file.path)) for file in files]
        yield from read_many(sources, lambda source: read_object_records(source, limits or Limits()))
        return
    for file in files:
        try:
            yield read_inside(file.path, boundary, limits=limits), None
        except ReadError as error:
            yield error


def _no_optimizer_shards(
    path: str, models: list[LayoutFile], stage: int, precision: str | None, dp_world: int | None
) -> list[Problem]:
    """A ZeRO tag without any optimizer shard: each shard its model states imply, by name
    (``dp_world_size`` ranks per model-parallel rank, ``bf16_`` prefixed under bf16), or the folder
    when the count is unknown or claims more files than :class:`MissingBudget` lists."""
    message = f"ZeRO stage {stage} checkpoint without any *_optim_states.pt file"
    mp_ranks = sorted(_ranks(f.name.mp_rank for f in models)) or [0]
    if dp_world is None or not MissingBudget().fits(dp_world * len(mp_ranks), 0):
        return [Problem(Severity.ERROR, "missing-optimizer-shards", message, path)]
    prefix = "bf16" if precision == "bf16" else ""
    return [
        Problem(
            Severity.ERROR,
            "missing-optimizer-shards",
            f"{name} is missing: {message} (dp_world_size is {dp_world})",
            os.path.join(path, name),
        )
        for mp in mp_ranks
        for dp in range(dp_world)
        for name in (naming.optim_states(dp, mp, prefix),)
    ]


def _ranks(values: Iterable[int | None]) -> set[int]:
    return {value for value in values if value is not None}


MAX_MISSING: Final = 1024
"""Missing files listed per check at most. A count a name or a pickle claims (``zero_pp_rank_999999999``,
``mp_world_size`` of 10**9) that would make more files missing than this is one ``count-beyond-files``
problem naming the file (and key) instead: no loop runs to a number written in a file."""


class MissingBudget:
    """How many more missing files a check may list; every loop over claimed ranks asks it first.

    ``fits(claimed, present)``: whether a group of ``claimed`` files, ``present`` of which exist,
    may be enumerated (its loop then runs at most ``present`` + :data:`MAX_MISSING` times).
    """

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_MISSING

    def fits(self, claimed: int, present: int) -> bool:
        missing = max(claimed - present, 0)
        if missing > self.left:
            return False
        self.left -= missing
        return True


def beyond_files(what: str, claimed: int, present: int, file: str, key_path: str | None = None) -> Problem:
    """The problem of a count that claims far more files than exist (see :data:`MAX_MISSING`)."""
    return Problem(
        Severity.ERROR,
        "count-beyond-files",
        f"{what} says {claimed} files, the folder has {present} of them: "
        f"more than {MAX_MISSING} missing, not listed one by one",
        file,
        key_path,
    )


def _highest(files: list[LayoutFile], rank: Callable[[CheckpointName], int | None]) -> LayoutFile:
    return max(files, key=lambda f: rank(f.name) or 0)


def _missing_files(
    path: str, by_kind: dict[FileKind, list[LayoutFile]], mp_world: int | None, dp_world: int | None, prefixes: set[Any]
) -> Iterator[Problem]:
    """Files the names of their siblings say must exist (as many as exist, plus at most MAX_MISSING)."""
    present = {f.relpath for files in by_kind.values() for f in files}
    expected: list[tuple[str, str]] = []  # (code, relpath)
    budget = MissingBudget()
    optim = by_kind.get(FileKind.OPTIM_STATES, [])
    zero3 = by_kind.get(FileKind.ZERO3_MODEL_STATES, [])
    model = by_kind.get(FileKind.MODEL_STATES, [])
    mp_files = model + zero3 + optim
    mp_present = len({f.name.mp_rank for f in mp_files})
    if mp_world is not None and not budget.fits(mp_world, mp_present):
        top = _highest(mp_files, lambda n: n.mp_rank)
        yield beyond_files(f"mp_rank {top.name.mp_rank} in the name", mp_world, mp_present, top.path)
        mp_world = None
    others = [by_kind.get(k, []) for k in (FileKind.LAYER_MODEL_STATES, FileKind.EXPERT_MODEL_STATES)]
    if mp_world is None and not zero3 and any(others) and FileKind.UNIVERSAL_PARAM_STATE not in by_kind:
        # Layer or expert files alone: the model states of (at least) rank 0 are missing.
        expected.append(("missing-model-states", naming.model_states(0)))
    if mp_world is not None:
        if not zero3 and (model or optim):
            expected += [("missing-model-states", naming.model_states(mp)) for mp in range(mp_world)]
        if dp_world is not None and (optim or zero3):
            grid = optim + zero3
            if budget.fits(mp_world * dp_world * (1 + bool(zero3)), len(grid)):
                prefix = next(iter(prefixes)) if len(prefixes) == 1 else None
                for mp in range(mp_world):
                    for dp in range(dp_world):
                        if zero3:
                            expected.append(("missing-model-states", naming.zero3_model_states(dp, mp)))
                        if prefix is not None:
                            expected.append(("missing-rank", naming.optim_states(dp, mp, prefix)))
            else:
                top = _highest(grid, lambda n: n.dp_rank)
                claim = f"zero_pp_rank {top.name.dp_rank} in the name"
                yield beyond_files(claim, mp_world * dp_world, len(grid), top.path)
    experts = by_kind.get(FileKind.EXPERT_MODEL_STATES, [])
    for layer in sorted({f.name.layer for f in experts}, key=lambda v: -1 if v is None else v):
        in_layer = [f for f in experts if f.name.layer == layer]
        count = max(f.name.expert or 0 for f in in_layer) + 1
        mp_ranks = sorted(_ranks(f.name.mp_rank for f in in_layer))
        if not budget.fits(count * len(mp_ranks), len(in_layer)):
            top = _highest(in_layer, lambda n: n.expert)
            yield beyond_files(f"expert {top.name.expert} in the name", count * len(mp_ranks), len(in_layer), top.path)
            continue
        for mp in mp_ranks:
            for expert in range(count):
                expected.append(("missing-expert", naming.expert_model_states(expert, mp, layer)))
    expert_optim = by_kind.get(FileKind.EXPERT_OPTIM_STATES, [])
    if expert_optim:
        ep_world = max(f.name.ep_rank or 0 for f in expert_optim) + 1
        if budget.fits((mp_world or 1) * ep_world, len(expert_optim)):
            for mp in range(mp_world or 1):
                expected += [("missing-expert-optim", naming.expert_optim_states(r, mp)) for r in range(ep_world)]
        else:
            top = _highest(expert_optim, lambda n: n.ep_rank)
            yield beyond_files(
                f"expp_rank {top.name.ep_rank} in the name", (mp_world or 1) * ep_world, len(expert_optim), top.path
            )
    if FileKind.UNIVERSAL_PARAM_STATE in by_kind and FileKind.UNIVERSAL_OPTIMIZER_STATE not in by_kind:
        expected.append(("missing-universal-state", naming.build(CheckpointName(FileKind.UNIVERSAL_OPTIMIZER_STATE))))
    for code, relpath in expected:
        if relpath not in present:
            yield Problem(Severity.ERROR, code, f"{relpath} is missing", os.path.join(path, *relpath.split("/")))


# -- facts from the files --------------------------------------------------------------------------


def _facts_from_files(files: list[LayoutFile], checkpoints: dict[str, Checkpoint]) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for file in files:
        checkpoint = checkpoints.get(file.relpath)
        if checkpoint is None or not isinstance(checkpoint.data, dict):
            continue
        state = checkpoint.data
        if file.name.kind in (FileKind.MODEL_STATES, FileKind.ZERO3_MODEL_STATES) and "model" not in facts:
            facts["model"] = True
            for module_key, fact in (
                (ModuleKeys.DP_WORLD_SIZE, "dp_world_size"),
                (ModuleKeys.MP_WORLD_SIZE, "mp_world_size"),
            ):
                if _is_count(state.get(module_key)):
                    facts[fact] = state[module_key]
            dims = state.get(ModuleKeys.CHECKPOINT_PARALLEL_DIMS)
            if isinstance(dims, dict):
                for dims_key, fact in (
                    (ParallelDimsKeys.CHECKPOINT_PP_DEGREE, "pp_world_size"),
                    (ParallelDimsKeys.CHECKPOINT_TP_DEGREE, "tp_world_size"),
                ):
                    if _is_count(dims.get(dims_key)):
                        facts[fact] = dims[dims_key]
            config = state.get(ModuleKeys.DS_CONFIG)
            stage = _config_stage(config)
            if stage is not None:
                facts.setdefault("zero_stage", stage)
            precision = _config_precision(config) or _module_precision(state.get(ModuleKeys.MODULE))
            if precision is not None:
                facts["precision"] = precision
        elif file.name.kind == FileKind.OPTIM_STATES and "optim" not in facts:
            facts["optim"] = True
            inner = state.get(OptimFileKeys.OPTIMIZER_STATE_DICT)
            stage = _zero_stage(inner.get(OptimizerKeys.ZERO_STAGE)) if isinstance(inner, dict) else None
            if stage is not None:
                facts["zero_stage"] = stage  # what the optimizer itself says wins over ds_config
    return {key: value for key, value in facts.items() if key not in ("model", "optim")}


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 1


def _zero_stage(value: Any) -> int | None:
    """``ZeroStageEnum(2)`` as pickled (an Opaque record), or a plain int."""
    if isinstance(value, Opaque) and value.qualname.endswith("ZeroStageEnum") and len(value.args) == 1:
        value = value.args[0]
    return value if type(value) is int and 0 <= value <= 3 else None


def _config_stage(config: Any) -> int | None:
    if not isinstance(config, dict):
        return None
    section = config.get("zero_optimization")
    if section is None:
        return 0
    return _zero_stage(section.get("stage", 0)) if isinstance(section, dict) else None


def _config_precision(config: Any) -> str | None:
    """What the engine trained in: a dict config without bf16/fp16 enabled means fp32."""
    if not isinstance(config, dict):
        return None  # a path to a config file, or nothing
    for section, precision in _PRECISION_SECTIONS:
        value = config.get(section)
        if isinstance(value, dict) and value.get("enabled") is True:
            return precision
    return "fp32"


def _module_precision(module: Any) -> str | None:
    """The floating dtype holding most of the module's elements."""
    if not isinstance(module, dict):
        return None
    totals: dict[str, int] = {}
    for tensor in module.values():
        if isinstance(tensor, TensorInfo) and tensor.dtype in _FLOAT_DTYPES:
            totals[tensor.dtype] = totals.get(tensor.dtype, 0) + tensor.numel
    return _FLOAT_DTYPES[max(totals, key=totals.__getitem__)] if totals else None
