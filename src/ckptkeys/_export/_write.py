"""``write_export()`` and ``export()``: an export plan written as safetensors files.

Each file is its header followed by the plan's byte ranges, copied in the kernel or one bounded
chunk at a time (cast, or averaged, chunk by chunk where the plan says so), under a temporary
name (``_safetensors``). All or nothing: the files of an export are renamed into place only
when every one is complete, the index (or ``model.safetensors``) last, after the old export's
entry points are gone (``_put_in_place``); a job array's ``--index-only`` job first checks the
other jobs' shards against the plan (``_verify_shards``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal

from .._read._errors import ReadError
from .._read._files import create_new, discard_temp, kind_of, open_regular, remove_stale_temps
from ._cast import check_numpy
from ._entry import plan_export
from ._fetch import Feed
from ._safetensors import Entry, header_bytes, publish, write_temp
from ._side import read_remote_side_file, read_side_file
from ._tensor_bytes import reads_of, tensor_entry
from ._types import SINGLE_FILE, ExportError, ExportPlan, ExportShard, OptionError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from typing import Any, BinaryIO, Final

    from .._read._source import RemoteObject
    from ._types import Dtype, ExportTensor, Weights

__all__ = [
    "INDEX_FILE",
    "OutputExistsError",
    "OutputFolderError",
    "existing_outputs",
    "export",
    "parse_shard",
    "write_export",
]

INDEX_FILE: Final = "model.safetensors.index.json"
_SHARD_NAME: Final = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")


class OutputExistsError(ExportError):
    """The output folder already holds a file the export would write (``option``: ``"overwrite"`` replaces it)."""


class OutputFolderError(ExportError):
    """The output folder cannot take the export: its path is a file, or a file the export writes is a
    folder (``option`` ``"out_dir"``: the path given is at fault); or it cannot be created, or a file
    cannot be written in it (read-only, a full disk; ``option`` ``None``)."""


def existing_outputs(out_dir: str) -> list[str]:
    """The files of ``out_dir`` a previous export would have written."""
    try:
        names = os.listdir(out_dir)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if _is_output(n))


def _is_output(name: str) -> bool:
    return name in (SINGLE_FILE, INDEX_FILE) or _SHARD_NAME.fullmatch(name) is not None


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` (job K of N, from 1) as ``(K, N)``; ``ValueError`` otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise ValueError(f"--shard {text!r}: expected K/N with 1 <= K <= N, e.g. 3/8")
    return int(match.group(1)), int(match.group(2))


def write_export(
    plan: ExportPlan,
    out_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    shard: tuple[int, int] | None = None,
    index_only: bool = False,
    fsync: bool = True,
    leftovers: Callable[[list[str]], None] | None = None,
) -> list[str]:
    """Write ``plan``'s files into ``out_dir``; return their paths.

    All or nothing: every file is written under a temporary name first (``.tmp-<name>.<random>``,
    locked while written), and only when all are complete are they renamed into place, the
    index (or ``model.safetensors``) last; the entry points of an older export (its index,
    its ``model.safetensors``) are removed before any of its files is replaced. So at any moment
    ``out_dir`` holds the old export whole, the new one whole, or nothing a loader can load
    (docs/export.md). ``plan.side_files`` are copied in under their base names, in the same step.

    Refuses (:class:`OutputExistsError`) a folder that already holds an export unless
    ``overwrite``; then the files of the old export that the new one does not replace are
    removed once the new ones are in place. :class:`OutputFolderError` if ``out_dir`` is a file
    or cannot be written. ``progress(done, total)`` counts output bytes. Temporary files that a
    killed export left in ``out_dir`` are removed first (never one another process is still
    writing); ``leftovers(paths)`` is told which.

    For many jobs sharing one export (docs/export.md): ``shard=(K, N)`` writes only the output
    files ``i`` (from 1) with ``i % N == K % N``, each renamed into place when complete, no index
    and no side files; with ``overwrite`` it first removes an index already there (which could
    name the files it replaces). ``index_only`` checks that every shard is in place as planned
    (size, header, plan identity: :meth:`ExportPlan.identity`), then writes the side files and
    the index. Either way only the files this call writes are checked against ``overwrite``, and
    no other shard is removed. ``shard`` and ``index_only`` together are a ``ValueError``.

    Each file is flushed to disk (``fsync``) before its rename, so not even a power cut leaves a
    partial file under a final name; ``fsync=False`` leaves that to the operating system (a
    crash of the process still cannot).
    """
    out = os.fspath(out_dir)
    if shard is not None and index_only:
        raise OptionError("index_only", "goes without shard: the index is written by one more job, after the shards")
    if shard is not None and not 1 <= shard[0] <= shard[1]:
        raise OptionError("shard", f"must be (K, N) with 1 <= K <= N, not {shard!r:.40}")
    if index_only:
        if not plan.sharded:
            raise ExportError(
                out, "the export is one file (model.safetensors): it has no index to write", option="index_only"
            )
        files: list[ExportShard] = []
    else:
        files = [s for i, s in enumerate(plan.shards, 1) if shard is None or i % shard[1] == shard[0] % shard[1]]
    with_index = plan.sharded and (index_only or shard is None)
    by_name = {t.name: t for t in plan.tensors}
    # Before anything is written: a cast numpy must do, where it is missing, is refused now.
    check_numpy(plan.checkpoint, [by_name[name] for file in files for name in file.tensors])
    sides = {} if shard is not None else {os.path.basename(p): p for p in plan.side_files}
    mine = {f.filename for f in files} | ({INDEX_FILE} if with_index else set()) | set(sides)
    _prepare(out)
    stale = remove_stale_temps(out, lambda name: _is_output(name) or name in sides)
    if stale and leftovers is not None:
        leftovers([os.path.join(out, name) for name in stale])
    old = existing_outputs(out)
    present = [name for name in sides if os.path.lexists(os.path.join(out, name))]
    if shard is not None:
        clashes = [name for name in old if name in mine]
    elif index_only:  # an old model.safetensors would shadow the index: loaders try it first
        clashes = [name for name in old if name in (INDEX_FILE, SINGLE_FILE)] + present
    else:
        clashes = old + present
    if clashes and not overwrite:
        raise OutputExistsError(os.path.join(out, clashes[0]), "already exists", option="overwrite")
    for name in sorted(mine):
        target = os.path.join(out, name)
        if os.path.isdir(target) and not os.path.islink(target):
            raise OutputFolderError(target, "cannot be written: it is a folder", option="out_dir")
    metadata = plan.metadata()
    if index_only:
        _verify_shards(plan, out, metadata)
    total = sum(f.nbytes for f in files)
    done = 0

    def advance(nbytes: int) -> None:
        nonlocal done
        done += nbytes
        if progress is not None:
            progress(done, total)

    staged: list[tuple[str, str]] = []  # (temporary name, final name), in the order of their renames
    written: list[str] = []
    try:
        for file in files:
            target = os.path.join(out, file.filename)
            tensors = [by_name[name] for name in file.tensors]
            temp = _write_file(target, tensors, advance, metadata, fsync)
            if shard is None:
                staged.append((temp, target))
                continue
            # A job of a job array: its file is whole on its own, and the index job checks the set.
            staged = [(temp, target)]
            if overwrite and not written:  # an old index may name the file replaced here
                _remove(os.path.join(out, INDEX_FILE))
            _publish(temp, target)
            staged = []
            written.append(target)
        for name, source in sorted(sides.items()):
            target = os.path.join(out, name)
            staged.append((_copy_side(source, plan.side_objects.get(source), target, fsync), target))
        if with_index:
            index = os.path.join(out, INDEX_FILE)
            text = (json.dumps(plan.index(), indent=2, sort_keys=True) + "\n").encode("utf-8")
            staged.append((_write_small(index, text, fsync), index))
        if staged:
            # The old export's files the new one does not replace (other shard counts), once it is in place.
            stale_outputs = [name for name in old if name not in mine] if shard is None and not index_only else []
            _put_in_place(out, staged, old, stale_outputs)
            written += [target for _, target in staged]
            staged = []
    except BaseException:
        for temp, _ in staged:
            discard_temp(temp)
        raise
    return written


def _prepare(out: str) -> None:
    """Make sure ``out`` is a folder files can be created in, creating it if absent."""
    if os.path.lexists(out) and not os.path.isdir(out):
        try:
            kind = kind_of(os.stat(out).st_mode)
        except OSError:
            kind = "a symlink to nothing"
        raise OutputFolderError(out, f"is {kind}, not a folder: the export needs a folder to write into",
                                option="out_dir")  # fmt: skip
    try:
        os.makedirs(out, exist_ok=True)
    except NotADirectoryError:  # a folder on the way is a file: the path is wrong, not the disk
        raise OutputFolderError(out, "cannot be created: a part of the path is a file", option="out_dir") from None
    except OSError as error:
        raise OutputFolderError(out, f"cannot be created: {error.strerror or error}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputFolderError(out, "is read-only: no file can be created in it")


def _write_file(
    target: str, tensors: list[ExportTensor], advance: Callable[[int], None], metadata: dict[str, str], fsync: bool
) -> str:
    """One output file under a temporary name; its tensors' remote bytes (a plan from a URL) from a
    :class:`~._fetch.Feed` fetching ahead (bounded), each object confirmed unchanged at the end."""
    if not any(span.remote is not None for t in tensors for span in (*t.sources, *(s for m in t.mean_of for s in m))):
        return _write_shard(target, [tensor_entry(tensor, advance) for tensor in tensors], metadata, fsync)
    with Feed(read for tensor in tensors for read in reads_of(tensor)) as feed:
        temp = _write_shard(target, [tensor_entry(tensor, advance, feed) for tensor in tensors], metadata, fsync)
        try:
            feed.confirm()
        except BaseException:
            discard_temp(temp)
            raise
    return temp


def _write_shard(target: str, entries: list[Entry], metadata: dict[str, str], fsync: bool) -> str:
    """One output file written under a temporary name (kept locked); errors name the file at fault."""
    try:
        return write_temp(target, entries, metadata, fsync=fsync)[0]
    except OSError as error:  # a source that cannot be read names itself; else the output
        name = error.filename if isinstance(error.filename, str) else target
        if name != target:
            raise ExportError(name, f"cannot be read: {error.strerror or error}") from None
        raise OutputFolderError(target, f"cannot be written: {error.strerror or error}") from None
    except EOFError as error:  # copy_range: (path, reason)
        raise ExportError(str(error.args[0]), f"is truncated: {error.args[-1]}") from None


def _write_small(target: str, data: bytes, fsync: bool) -> str:
    """``data`` in a new temporary file for ``target`` (kept locked); its name."""
    try:
        temp, stream = create_new(target)
    except OSError as error:
        raise OutputFolderError(target, f"cannot be written: {error.strerror or error}") from None
    try:
        stream.write(data)
        stream.flush()
        if fsync:
            os.fsync(stream.fileno())
    except OSError as error:
        discard_temp(temp)
        raise OutputFolderError(target, f"cannot be written: {error.strerror or error}") from None
    except BaseException:
        discard_temp(temp)
        raise
    return temp


def _copy_side(source: str, remote: RemoteObject | None, target: str, fsync: bool) -> str:
    """A side file (``config.json``...) copied to a new temporary file for ``target``; its name.

    Read as ``_side`` allows: a regular file inside its folder, at most ``MAX_SIDE_FILE_BYTES``;
    a remote one (``remote``, a URL's object) by one GET pinned to the version listed.
    """
    return _write_small(target, read_side_file(source) if remote is None else read_remote_side_file(remote), fsync)


def _publish(temp: str, target: str) -> None:
    try:
        publish(temp, target)
    except OSError as error:
        raise OutputFolderError(target, f"cannot be written: {error.strerror or error}") from None


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        raise OutputFolderError(path, f"cannot be removed: {error.strerror or error}") from None


def _put_in_place(out: str, staged: list[tuple[str, str]], old: list[str], stale: list[str]) -> None:
    """Rename the finished temporary files into place, the last one (the index, or
    ``model.safetensors``) last, so that the new export is loadable only once all of it is there.

    Loaders try ``model.safetensors`` first, then the index: an old one of either is removed
    before any file is renamed (unless the last rename alone replaces it, atomically), so the
    old export stops being loadable before any of its files is replaced. Signals wait until the
    renames are done (they are few and quick), so an interrupted export is the old or the new;
    so are the removals of the old export's ``stale`` files, which nothing names any more.
    """
    entry = os.path.basename(staged[-1][1])
    with _signals_held():
        for name in (INDEX_FILE, SINGLE_FILE):
            if name in old and (len(staged) > 1 or name != entry):
                _remove(os.path.join(out, name))
        for temp, target in staged:
            _publish(temp, target)
        for name in stale:  # then the old files nothing names any more
            path = os.path.join(out, name)
            if not os.path.isdir(path):  # a folder is not something an export wrote
                _remove(path)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP held back (delivered at the end) where the platform can."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    held = {getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)}
    before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _verify_shards(plan: ExportPlan, out: str, metadata: dict[str, str]) -> None:
    """Every shard of ``plan`` in ``out`` as planned: its size, its header (names, dtypes, shapes,
    offsets) and the plan identity in its metadata; else :class:`ExportError` naming each file."""
    by_name = {t.name: t for t in plan.tensors}
    problems = []
    for file in plan.shards:
        entries = [Entry(t.name, t.dtype, t.shape, _never) for t in (by_name[n] for n in file.tensors)]
        head = header_bytes(entries, metadata)
        problem = _shard_problem(os.path.join(out, file.filename), head, len(head) + file.nbytes, metadata)
        if problem is not None:
            problems.append(f"{file.filename} {problem}")
    if problems:
        raise ExportError(
            out,
            f"the index is not written: {len(problems)} of {len(plan.shards)} shards are not as planned: "
            + "; ".join(problems),
        )


def _never(out: BinaryIO) -> None:
    raise AssertionError("a shard being checked is never written")


def _shard_problem(path: str, head: bytes, size: int, metadata: dict[str, str]) -> str | None:
    """Why the file at ``path`` is not the shard whose header is ``head`` and size ``size``, or None."""
    if not os.path.lexists(path):
        return "is missing (its job has not run, or failed)"
    try:
        stream = open_regular(path)
    except ReadError as error:
        return error.reason
    with stream:
        try:
            actual_size = os.fstat(stream.fileno()).st_size
            found = stream.read(len(head))
            if found != head:
                return _header_problem(stream, found, metadata)
        except OSError as error:
            return f"cannot be read: {error.strerror or error}"
    if actual_size != size:
        return f"is {actual_size} bytes, the plan says {size} (truncated, or grown)"
    return None


def _header_problem(stream: io.FileIO, found: bytes, metadata: dict[str, str]) -> str:
    """What differs between a shard's header and the planned one (``found``: its first bytes)."""
    length = int.from_bytes(found[:8], "little") if len(found) >= 8 else -1
    if not 2 <= length <= 100 << 20:
        return "is not a safetensors file (no header)"
    stream.seek(8)
    text = stream.read(length)
    try:
        header = json.loads(text)
    except ValueError:
        return "is not a safetensors file (its header is not JSON)"
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    plan = meta.get("ckptkeys_plan") if isinstance(meta, dict) else None
    if plan is None:
        return "carries no plan identity: it was not written by this export (ckptkeys_plan metadata)"
    if plan != metadata["ckptkeys_plan"]:
        return (
            f"was written from another plan (plan {plan!s:.12}, this one {metadata['ckptkeys_plan']:.12}): "
            "another checkpoint, --max-shard-size, --dtype or --weights"
        )
    return "has the plan identity but another header (names, dtypes, shapes or offsets): it was altered"


def export(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    tag: str | None = None,
    dtype: Dtype = "fp32",
    max_shard_size: int | str = "5GB",
    tp_rank: int | None = None,
    save: str | None = None,
    strip_prefix: str | None = None,
    weights: Weights = "masters",
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    shard: tuple[int, int] | None = None,
    index_only: bool = False,
    fsync: bool = True,
    storage_options: Mapping[str, Any] | None = None,
) -> ExportPlan:
    """Export the checkpoint at ``path`` to safetensors in ``out_dir``; return the plan it followed.

    :func:`plan_export` with the same arguments, then :func:`write_export`. ``path`` may be a URL
    (``storage_options`` for its filesystem): its tensors' bytes are fetched by ranged GETs, at most
    ``FETCHES_AHEAD * FETCH_BYTES`` (32 MiB) held at a time, into the local ``out_dir`` (docs/remote.md).
    """
    plan = plan_export(
        path,
        tag=tag,
        dtype=dtype,
        max_shard_size=max_shard_size,
        tp_rank=tp_rank,
        save=save,
        strip_prefix=strip_prefix,
        weights=weights,
        storage_options=storage_options,
    )
    write_export(plan, out_dir, overwrite=overwrite, progress=progress, shard=shard, index_only=index_only, fsync=fsync)
    return plan
