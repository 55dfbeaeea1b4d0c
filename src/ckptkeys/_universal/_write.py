"""``write_universal()`` and ``universal()``: a universal plan written as DeepSpeed's universal tag.

Every file is staged in one hidden folder beside the output (``.<name>.ckptkeys-partial``):
each ``.pt`` streamed by export's torch-free writer (``_export._pt``) straight from the source
bytes, each model-states file copied in the kernel (``copy_file_range``), each under a temporary
name renamed when whole. Only when the folder is complete is it renamed into place, and
``latest_universal`` rewritten after it (``_publish``): the tag appears whole or not at all,
the disk's peak is the output's size (no temporary copies of tensors), and a signal waits for
the few renames. A job array's jobs (``shard=(K, N)``) fill the staging folder parameter by
parameter; ``finalize`` checks their files against the plan and publishes (docs/universal.md).

Who may touch a staging folder is settled by a lock file inside it (``flock``): the jobs of a
job array hold it shared, a whole run or ``finalize`` exclusive; a folder whose lock nobody
holds was left by a killed run, and the next whole run starts it afresh.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import sys

from .._export._pt import PtStorage, PtTensor, pt_size, write_pt
from .._export._safetensors import copy_range
from .._export._tensor_bytes import tensor_entry
from .._export._types import ExportError, OptionError
from .._export._write import OutputExistsError, OutputFolderError, _signals_held
from .._read._files import TEMP_PREFIX, create_new, discard_temp, remove_stale_temps, temp_published
from .._read._pickle import Opaque

if sys.platform != "win32":
    import fcntl

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any, BinaryIO, Final

    from .._export._types import ExportTensor
    from ._types import UniversalFile, UniversalPlan

__all__ = ["STAGING_SUFFIX", "plan_identity", "staging_folder", "universal", "write_universal"]

STAGING_SUFFIX: Final = ".ckptkeys-partial"
"""The staging folder of ``<parent>/<name>`` is ``<parent>/.<name>.ckptkeys-partial``."""
_ASIDE_SUFFIX: Final = ".ckptkeys-old"
"""An old universal tag being replaced (``--overwrite``) is moved to ``<parent>/.<name>.ckptkeys-old`` first."""
LOCK_FILE: Final = ".ckptkeys-lock"
"""In the staging folder: held shared by the jobs of a job array, exclusive by a whole run."""
PLAN_FILE: Final = ".ckptkeys-plan"
"""In the staging folder of a job array: the identity of the plan its jobs follow (:func:`plan_identity`)."""
# Lock errors that mean "this file system has no locks" (as _read._files: Lustre without -o flock, some FUSE).
_NO_LOCKS: Final = frozenset({errno.ENOLCK, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP})


def staging_folder(plan: UniversalPlan) -> str:
    """Where ``plan``'s universal tag is put together before it is renamed into place."""
    parent, name = os.path.split(os.path.normpath(plan.output))
    return os.path.join(parent, f".{name}{STAGING_SUFFIX}")


def _aside_folder(plan: UniversalPlan) -> str:
    parent, name = os.path.split(os.path.normpath(plan.output))
    return os.path.join(parent, f".{name}{_ASIDE_SUFFIX}")


def _storages(obj: Any) -> Iterator[PtStorage]:
    """Every storage of a file's content, in the order the writer meets them (repeats included)."""
    if isinstance(obj, PtTensor):
        yield obj.storage
        yield from _storages(obj.state)  # its Python attributes (ZeRO-3's ds_id...)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _storages(key)
            yield from _storages(value)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _storages(item)
    elif isinstance(obj, Opaque):
        yield from _storages((obj.args, obj.kwargs, obj.state, obj.items, obj.dict_items))


def _sources(tensor: ExportTensor) -> tuple[str, ...]:
    return tuple(span.path for span in (*tensor.sources, *(s for spans in tensor.mean_of for s in spans)))


def plan_identity(plan: UniversalPlan) -> str:
    """A digest of what makes ``plan``: the tag's name, the layout and options, every output
    file (name, parameter, size as written) and the checkpoint files it reads (paths relative
    to the tag folder, and sizes). The jobs of a job array that mount the checkpoint at
    different paths agree; a job run on another checkpoint or with other options does not.

    Raises :class:`ExportError` naming a source file that can no longer be found.
    """
    try:
        from _blake2 import blake2b  # CPython's own: hashlib would load OpenSSL (as ExportPlan.identity)
    except ImportError:
        from hashlib import blake2b

    sizes: dict[str, int] = {}
    files = []
    for file in plan.files:
        paths = [file.copy_of] if file.copy_of is not None else []
        paths += [p for storage in _storages(file.content) for p in _sources(storage.source)]
        for path in paths:
            if path not in sizes:
                try:
                    sizes[path] = os.stat(path).st_size
                except OSError as error:
                    raise ExportError(path, f"cannot be read: {error.strerror or error}") from None
        files.append([file.name, file.param, _relative(file.copy_of, plan), _written_size(file)])
    document = {
        "tag": plan.tag,
        "layout": plan.layout,
        "zero_stage": plan.zero_stage,
        "inject_missing_state": plan.inject_missing_state,
        "strict": plan.strict,
        "output": os.path.basename(os.path.normpath(plan.output)),
        "files": files,
        "sources": sorted([_relative(p, plan), n] for p, n in sizes.items()),
    }
    return blake2b(json.dumps(document, sort_keys=True).encode("utf-8"), digest_size=16).hexdigest()


def _relative(path: str | None, plan: UniversalPlan) -> str | None:
    return None if path is None else os.path.relpath(path, plan.checkpoint).replace(os.sep, "/")


def _archive(file: UniversalFile) -> str:
    """The archive name torch.save gives a file: its base name without ``.pt``."""
    return os.path.splitext(file.name.rsplit("/", 1)[-1])[0]


def _written_size(file: UniversalFile) -> int:
    """The exact size of ``file`` once written: the zip :func:`write_pt` makes, or the copy's."""
    if file.copy_of is not None:
        return file.nbytes
    return pt_size(file.content, archive=_archive(file))


def write_universal(
    plan: UniversalPlan,
    *,
    overwrite: bool = False,
    shard: tuple[int, int] | None = None,
    finalize: bool = False,
    progress: Callable[[int, int], None] | None = None,
    fsync: bool = True,
) -> list[str]:
    """Write ``plan``'s universal tag to ``plan.output`` and ``latest_universal`` after it; return
    the paths written.

    All or nothing: every file is written into a hidden staging folder beside the output
    (:func:`staging_folder`), which is renamed into place only when complete; then
    ``plan.latest`` is replaced (a temporary file renamed) by the output folder's name. Signals
    wait for those renames. So the output folder and ``latest_universal`` are always the old
    ones, the new complete ones, or absent: never a partial tag, never a ``latest_universal``
    naming a folder that is missing or partial.

    An existing output folder is refused (:class:`~ckptkeys.OutputExistsError`, ``option``
    ``"overwrite"``) unless ``overwrite``; then it is replaced whole: ``latest_universal`` is
    removed first if it names it, the old folder moved aside, the new one renamed in, the old
    one removed. ``progress(done, total)`` counts tensor and copied bytes. Unless ``fsync`` is
    false, every file is flushed to disk before the tag is put in place (by a second thread while
    the next files are written), and a shard job's each before its rename.

    Job arrays (docs/universal.md): ``shard=(K, N)`` (1 <= K <= N) writes only the
    ``zero/<param>/`` files of the parameters ``i`` (from 1, over ``plan.params``) with
    ``i % N == K % N`` into the staging folder, each renamed into place there when whole, and
    records the plan's identity (:func:`plan_identity`); the jobs may run at once. Then
    ``finalize`` checks that every planned file is there with its exact size, writes
    ``zero/optimizer_state.pt`` and the copies, and publishes; a staging folder of another plan
    is refused naming it. A whole run (neither) starts afresh from any staging folder that no
    running process holds (a killed run's), and refuses one another run is writing.
    ``shard`` and ``finalize`` together are an :class:`~ckptkeys.ExportError` (``ValueError``).
    """
    if shard is not None and finalize:
        raise OptionError("finalize", "goes without shard: it runs once, after the shard jobs")
    well_formed = isinstance(shard, tuple) and len(shard) == 2 and all(type(n) is int for n in shard)
    if shard is not None and not (well_formed and 1 <= shard[0] <= shard[1]):
        raise OptionError("shard", f"must be (K, N) with 1 <= K <= N, not {shard!r:.40}")
    output, staging = os.path.normpath(plan.output), staging_folder(plan)
    _check_output(output, overwrite)
    if shard is not None:
        params = {p for i, p in enumerate(plan.params, 1) if i % shard[1] == shard[0] % shard[1]}
        files = [f for f in plan.files if f.param in params]
    elif finalize:
        files = [f for f in plan.files if f.param is None]
    else:
        files = list(plan.files)
    identity = plan_identity(plan) if shard is not None or finalize else None
    lock = _enter(staging, shard is not None, finalize, overwrite, identity)
    whole_run = shard is None and not finalize
    try:
        if finalize:
            _check_staged(plan, staging)
        # A job's files are each whole on disk before their rename (the finalize job trusts them);
        # a run that publishes flushes them while it writes the next ones, all before it publishes.
        written = _write_files(files, staging, progress, fsync, behind=shard is None)
        if shard is not None:
            return written

        def release() -> None:  # the lock's descriptor, where an open file can be neither removed nor moved
            nonlocal lock
            if sys.platform == "win32" and lock >= 0:  # (Windows, which has no locks to hold anyway)
                os.close(lock)
                lock = -1

        _publish(plan, staging, fsync, release, identity)
        return [os.path.join(output, f.name) for f in plan.files] + [plan.latest]
    except BaseException:
        if whole_run:  # nothing of a whole run outlives it; a job array's staged files stay for a rerun
            shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if lock >= 0:
            os.close(lock)


def _check_output(output: str, overwrite: bool) -> None:
    """The output folder's path: absent, or (``overwrite``) a folder to replace; its parent folder
    made if absent, and writable."""
    if os.path.lexists(output):
        if not os.path.isdir(output) or os.path.islink(output):  # the path given is wrong, overwrite or not
            raise OutputFolderError(output, "is not a folder: a universal tag is a folder", option="output_folder")
        if not overwrite:
            raise OutputExistsError(output, "already exists", option="overwrite")
    parent = os.path.dirname(output) or os.curdir
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as error:
        raise OutputFolderError(parent, f"cannot be created: {error.strerror or error}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputFolderError(parent, "is read-only: the universal tag cannot be created in it")


def _lock(fd: int, exclusive: bool, wait: bool) -> bool | None:
    """flock ``fd``: True, False if another process holds it, None where there are no locks."""
    if sys.platform == "win32":
        return None
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    except OSError as error:
        if error.errno in _NO_LOCKS:
            return None
        raise
    return True


def _open_lock(staging: str, create: bool) -> int | None:
    """The staging folder's lock file, opened (created with the folder if ``create``); None if absent."""
    path = os.path.join(staging, LOCK_FILE)
    try:
        if create:
            os.makedirs(staging, exist_ok=True)
        flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        return os.open(path, flags | (os.O_CREAT if create else 0), 0o666)
    except FileNotFoundError:
        if create:  # removed between makedirs and open (a whole run publishing it): the caller retries
            return None
        raise
    except OSError as error:
        raise OutputFolderError(path, f"cannot be written: {error.strerror or error}") from None


def _still_there(staging: str, fd: int) -> bool:
    """Whether ``fd`` is still the lock file of the folder at ``staging`` (not published or removed meanwhile)."""
    try:
        named, opened = os.lstat(os.path.join(staging, LOCK_FILE)), os.fstat(fd)
    except OSError:
        return False
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _enter(staging: str, shard: bool, finalize: bool, overwrite: bool, identity: str | None) -> int:
    """Take the staging folder as this run needs it; return its lock file's descriptor (held).

    A whole run: exclusive, the folder emptied (a killed run's). ``finalize``: exclusive, the
    folder of the shard jobs of this very plan. A shard job: shared; the first job of an array
    (the one that finds the lock free) records the plan, emptying a folder of another plan
    only with ``overwrite``.
    """
    if os.path.lexists(staging) and (os.path.islink(staging) or not os.path.isdir(staging)):
        raise OutputFolderError(staging, "is not a folder: it is where the universal tag is staged; remove it")
    for _ in range(16):
        fresh = False  # whether this run made the folder (where nothing else can tell a dead run's)
        if finalize:
            if not os.path.isdir(staging):
                raise ExportError(staging, "does not exist: no shard job has run, or a finalize "
                                  "published it already, or a whole run cleared it", option="finalize")  # fmt: skip
            fd = _open_lock(staging, create=False) if os.path.lexists(os.path.join(staging, LOCK_FILE)) else None
            if fd is None:
                raise ExportError(staging, "holds no job array's files (no lock file): run the shard jobs first",
                                  option="finalize")  # fmt: skip
        else:
            fresh = not os.path.lexists(staging)
            opened = _open_lock(staging, create=True)
            if opened is None:
                continue
            fd = opened
        try:
            held = _lock(fd, exclusive=True, wait=False)
            if held is None:
                _without_locks(staging, shard, finalize, identity, fresh=fresh)
                return fd
            if not _still_there(staging, fd):
                os.close(fd)
                continue
            if held and not shard:
                if finalize:
                    _check_identity(staging, identity)
                    for folder, _, _ in os.walk(staging):  # a killed job's temporary files
                        remove_stale_temps(folder, lambda name: True)
                else:
                    _empty(staging)
                return fd
            if not held and not shard:
                what = "a job of a job array" if finalize else "another run"
                raise OutputFolderError(staging, f"is being written by {what}: wait for it to end")
            if held:  # the first job of an array to come
                try:
                    _check_identity(staging, identity, shard=True)
                except ExportError:
                    if os.path.lexists(os.path.join(staging, PLAN_FILE)) and not overwrite:
                        raise
                    _empty(staging)  # a killed whole run's, or (overwrite) another plan's
                    _write_identity(staging, identity)
                fcntl.flock(fd, fcntl.LOCK_SH)
            else:  # other jobs are writing: they recorded the plan under the exclusive lock
                _lock(fd, exclusive=False, wait=True)
                if not _still_there(staging, fd):
                    os.close(fd)
                    continue
                _check_identity(staging, identity, shard=True)
            return fd
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
    raise ExportError(staging, "keeps changing: another run is publishing or removing it")


def _without_locks(staging: str, shard: bool, finalize: bool, identity: str | None, *, fresh: bool) -> None:
    """:func:`_enter` where the file system has no locks (Lustre without ``-o flock``, some FUSE,
    Windows): nothing tells a live run's staging folder from a dead one's, so a folder this run
    did not create is never emptied; a job array still works, its jobs agreeing by the plan's
    identity, and ``finalize`` (which checks every file) removes the temporary files left in it."""
    if finalize:
        _check_identity(staging, identity)
        for folder, _, names in os.walk(staging):
            for name in names:
                if name.startswith(TEMP_PREFIX):
                    _remove(os.path.join(folder, name))
        return
    if not shard:
        if fresh:
            return
        raise OutputFolderError(staging, "cannot be locked (this file system has no file locks): whether another "
                                "run is writing it cannot be told; remove it if none is")  # fmt: skip
    if not os.path.lexists(os.path.join(staging, PLAN_FILE)):  # the first job (two at once write the same)
        if not fresh and any(n != LOCK_FILE and not n.startswith(TEMP_PREFIX) for n in os.listdir(staging)):
            raise OutputFolderError(staging, "holds files of a run that recorded no plan, and cannot be locked (this "
                                    "file system has no file locks): remove it if no run is writing it")  # fmt: skip
        _write_identity(staging, identity)
    _check_identity(staging, identity, shard=True)


def _check_identity(staging: str, identity: str | None, *, shard: bool = False) -> None:
    """The plan recorded in the staging folder is ``identity``; else :class:`ExportError` naming it
    (``option`` ``"overwrite"`` for a shard job, which may start the folder afresh)."""
    path = os.path.join(staging, PLAN_FILE)
    try:
        with open(path, "rb") as stream:
            found = stream.read(256).decode("ascii", "replace").strip()
    except FileNotFoundError:
        raise ExportError(path, "is missing: the staging folder holds no job array's files (a killed run's, or "
                          "none): run the shard jobs first", option="finalize") from None  # fmt: skip
    except OSError as error:
        raise ExportError(path, f"cannot be read: {error.strerror or error}") from None
    if found != identity:
        raise ExportError(
            path,
            f"records another plan ({found:.12}, this one {identity or '':.12}): the shard jobs converted another "
            "checkpoint or with other options; rerun them, the first one allowed to overwrite the staging folder",
            option="overwrite" if shard else None,
        )


def _write_identity(staging: str, identity: str | None) -> None:
    path = os.path.join(staging, PLAN_FILE)
    temp, stream = _create(path)
    try:
        stream.write((identity or "").encode("ascii"))
        stream.flush()
    except BaseException:
        discard_temp(temp)
        raise
    _rename(temp, path)


def _empty(staging: str) -> None:
    """Remove everything in the staging folder but its lock file (held by this run)."""
    for name in os.listdir(staging):
        if name == LOCK_FILE:
            continue
        path = os.path.join(staging, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def _check_staged(plan: UniversalPlan, staging: str) -> None:
    """Every ``zero/<param>/`` file of ``plan`` in the staging folder with its exact size; else
    :class:`ExportError` naming each one that is not."""
    problems = []
    expected = [f for f in plan.files if f.param is not None]
    for file in expected:
        path = os.path.join(staging, *file.name.split("/"))
        size = _written_size(file)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            problems.append(f"{file.name} is missing (the job of {file.param} has not run, or failed)")
            continue
        if not stat.S_ISREG(info.st_mode):
            problems.append(f"{file.name} is not a regular file")
        elif info.st_size != size:
            problems.append(f"{file.name} is {info.st_size} bytes, the plan says {size} (truncated, or grown)")
    if problems:
        raise ExportError(
            staging,
            f"nothing is published: {len(problems)} of {len(expected)} files of the shard jobs are not as planned: "
            + "; ".join(problems),
            option="finalize",
        )


def _create(path: str) -> tuple[str, Any]:
    try:
        return create_new(path)
    except OSError as error:
        raise OutputFolderError(path, f"cannot be written: {error.strerror or error}") from None


def _rename(temp: str, path: str) -> None:
    try:
        os.replace(temp, path)
    except OSError as error:
        discard_temp(temp)
        raise OutputFolderError(path, f"cannot be written: {error.strerror or error}") from None
    temp_published(temp)


def _write_files(
    files: list[UniversalFile],
    staging: str,
    progress: Callable[[int, int], None] | None,
    fsync: bool,
    *,
    behind: bool = False,
) -> list[str]:
    """Each of ``files`` into the staging folder, under a temporary name renamed when whole.

    With ``fsync``, each file is flushed to disk before its rename; ``behind``, by a second thread
    while this one writes the next files (one fsync after another costs a disk's latency per
    file, ~70 files for a 1 GB tag), every flush done before this returns. Only for a staging
    folder nothing trusts until it is published: the renames inside it may precede the flushes."""
    if fsync and behind:
        flusher = _Flusher()
        try:
            written = _write_each(files, staging, progress, flush=flusher.flush)
        except BaseException:
            flusher.abandon()
            raise
        flusher.finish()
        return written
    return _write_each(files, staging, progress, flush=None, fsync=fsync)


class _Flusher:
    """Files flushed to disk (``fsync``) one after another by one thread: :meth:`finish` waits for
    them all and raises the first error, naming the file; :meth:`abandon` (an error, a signal)
    drops what has not started."""

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ckptkeys-fsync")
        self._pending: list[Any] = []

    def flush(self, path: str) -> None:
        self._pending.append(self._pool.submit(_fsync_file, path))

    def abandon(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def finish(self) -> None:
        try:
            for pending in self._pending:
                pending.result()  # its OutputFolderError, if the flush failed
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _fsync_file(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as error:
        raise OutputFolderError(path, f"cannot be written: {error.strerror or error}") from None


def _write_each(
    files: list[UniversalFile],
    staging: str,
    progress: Callable[[int, int], None] | None,
    *,
    flush: Callable[[str], None] | None,
    fsync: bool = False,
) -> list[str]:
    total = sum(f.nbytes for f in files)
    done = 0

    def advance(nbytes: int) -> None:
        nonlocal done
        done += nbytes
        if progress is not None:
            progress(done, total)

    written = []
    made: set[str] = set()
    for file in files:
        path = os.path.join(staging, *file.name.split("/"))
        folder = os.path.dirname(path)
        if folder not in made:
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as error:
                raise OutputFolderError(folder, f"cannot be created: {error.strerror or error}") from None
            made.add(folder)
        temp, stream = _create(path)
        try:
            if file.copy_of is not None:
                _copy(file.copy_of, file.nbytes, stream, temp)
                advance(file.nbytes)
            else:
                _write_pt(file, stream, advance)
            stream.flush()
            if fsync:
                os.fsync(stream.fileno())
        except OSError as error:
            discard_temp(temp)
            name = error.filename if isinstance(error.filename, str) and error.filename != temp else None
            if name is not None:  # a source that cannot be read names itself; else the output
                raise ExportError(name, f"cannot be read: {error.strerror or error}") from None
            raise OutputFolderError(path, f"cannot be written: {error.strerror or error}") from None
        except EOFError as error:  # copy_range: (path, reason)
            discard_temp(temp)
            raise ExportError(str(error.args[0]), f"is truncated: {error.args[-1]}") from None
        except BaseException:
            discard_temp(temp)
            raise
        _rename(temp, path)
        if flush is not None:
            flush(path)
        written.append(path)
    return written


def _write_pt(file: UniversalFile, out: BinaryIO, advance: Callable[[int], None]) -> None:
    def write_storage(storage: PtStorage, stream: BinaryIO) -> None:
        tensor_entry(storage.source, advance).write(stream)

    write_pt(out, file.content, archive=_archive(file), write_storage=write_storage)


def _copy(source: str, size: int, out: BinaryIO, temp: str) -> None:
    """A model-states file copied byte for byte (as ``shutil.copy2``: its mode and times too)."""
    try:
        info = os.stat(source)
    except OSError as error:
        raise ExportError(source, f"cannot be read: {error.strerror or error}") from None
    if info.st_size != size:
        raise ExportError(source, f"is {info.st_size} bytes, the plan read {size}: it changed since it was read")
    copy_range(source, 0, size, out)
    with contextlib.suppress(OSError):
        os.chmod(temp, stat.S_IMODE(info.st_mode))
        os.utime(temp, ns=(info.st_atime_ns, info.st_mtime_ns))


def _latest_temp(plan: UniversalPlan, fsync: bool) -> str:
    """``latest_universal``'s new content (the output folder's name, no newline) in a temporary file."""
    temp, stream = _create(plan.latest)
    try:
        stream.write(os.path.basename(os.path.normpath(plan.output)).encode("utf-8"))
        stream.flush()
        if fsync:
            os.fsync(stream.fileno())
    except OSError as error:
        discard_temp(temp)
        raise OutputFolderError(plan.latest, f"cannot be written: {error.strerror or error}") from None
    except BaseException:
        discard_temp(temp)
        raise
    return temp


def _names_output(latest: str, output: str) -> bool:
    try:
        with open(latest, "rb") as stream:
            return stream.read(4096).strip().decode("utf-8", "replace") == os.path.basename(output)
    except OSError:
        return False


def _publish(plan: UniversalPlan, staging: str, fsync: bool, release: Callable[[], None], identity: str | None) -> None:
    """The staged tag renamed into place (an old one moved aside first, removed after), then
    ``latest_universal``; signals wait, so an interrupted run leaves the old or the new (and a
    SIGKILL between the renames leaves the old one aside, for the next run to remove)."""
    output, aside = os.path.normpath(plan.output), _aside_folder(plan)
    if os.path.lexists(aside):  # a run killed between its two renames left the old tag here
        _remove_tree(aside)
    if fsync:  # the staged files' names on disk too, before the folder holding them is published
        for folder, _, _ in os.walk(staging):
            _sync_folder(folder)
    # A run killed (SIGKILL) while its new latest_universal waited for the renames left it here.
    remove_stale_temps(os.path.dirname(plan.latest), lambda name: name == os.path.basename(plan.latest))
    latest_temp = ""
    try:
        latest_temp = _latest_temp(plan, fsync)
        with _signals_held():
            replaced = os.path.lexists(output)
            if replaced:
                if _names_output(plan.latest, output):  # no moment where it names a missing folder
                    _remove(plan.latest)
                _move(output, aside)
            # The tag is DeepSpeed's files only. Taken out here, where signals wait: an interrupted
            # finalize keeps them, and runs again (the lock itself stays held by its descriptor).
            release()
            # From here to the rename, a SIGKILL leaves a staging folder a finalize cannot take up
            # again (no lock, no plan): nothing but the two removals and the rename in this window.
            for name in (LOCK_FILE, PLAN_FILE):
                _remove(os.path.join(staging, name))
            try:
                _move(staging, output)
            except OutputFolderError:
                if replaced:  # the old tag back where it was (latest_universal stays removed: rerun)
                    with contextlib.suppress(OSError):
                        os.rename(aside, output)
                if identity is not None:  # a finalize: its lock and plan back, for it to run again
                    with contextlib.suppress(OSError, ExportError):
                        os.close(os.open(os.path.join(staging, LOCK_FILE), os.O_WRONLY | os.O_CREAT, 0o666))
                        _write_identity(staging, identity)
                raise
            if fsync:  # the two removals on disk (the folder is the same, renamed) before latest_universal names it
                _sync_folder(output)
            _rename(latest_temp, plan.latest)
            latest_temp = ""
            if fsync:
                _sync_folder(os.path.dirname(output))
            if replaced:  # as export removes the old files nothing names: a signal waits for it too
                _remove_tree(aside)
    finally:
        if latest_temp:
            discard_temp(latest_temp)


def _move(source: str, target: str) -> None:
    try:
        os.rename(source, target)
    except OSError as error:
        raise OutputFolderError(target, f"cannot be renamed into place: {error.strerror or error}") from None


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        raise OutputFolderError(path, f"cannot be removed: {error.strerror or error}") from None


def _remove_tree(path: str) -> None:
    try:
        if os.path.islink(path) or not os.path.isdir(path):
            os.unlink(path)
        else:
            shutil.rmtree(path)
    except OSError as error:
        raise OutputFolderError(path, f"cannot be removed: {error.strerror or error}") from None


def _sync_folder(folder: str) -> None:
    """The renames in ``folder`` flushed to disk, where a folder can be opened for it."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def universal(
    path: str | os.PathLike[str],
    *,
    tag: str | None = None,
    output_folder: str | os.PathLike[str] | None = None,
    inject_missing_state: bool = False,
    strict: bool = True,
    overwrite: bool = False,
    shard: tuple[int, int] | None = None,
    finalize: bool = False,
    progress: Callable[[int, int], None] | None = None,
    fsync: bool = True,
) -> UniversalPlan:
    """Convert the checkpoint at ``path`` to DeepSpeed's universal format; return the plan it followed.

    :func:`plan_universal` with the first arguments, then :func:`write_universal` with the others.
    """
    from ._entry import plan_universal

    plan = plan_universal(
        path, tag=tag, output_folder=output_folder, inject_missing_state=inject_missing_state, strict=strict
    )
    write_universal(plan, overwrite=overwrite, shard=shard, finalize=finalize, progress=progress, fsync=fsync)
    return plan
