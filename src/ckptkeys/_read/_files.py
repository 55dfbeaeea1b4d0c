"""Opening files whose names a hostile folder controls: read only regular files, create only new ones.

A name in a checkpoint folder can be a FIFO (opening it for reading blocks until a writer comes,
forever), a device (``/dev/zero`` never ends), a socket, or a symlink leading out of the folder.
:func:`open_regular` opens with ``O_NONBLOCK``, so that opening a FIFO returns at once, then asks
``fstat`` of the opened descriptor (not of the name, which could be swapped in between) whether it
is a regular file, and only then makes the descriptor blocking again. With a ``boundary`` the
name's real path must lie inside it, and the real path is opened with ``O_NOFOLLOW``.

An output folder can hold a symlink under the very name a writer is about to create.
:func:`create_new` creates a file under a fresh random name with ``O_CREAT|O_EXCL|O_NOFOLLOW``:
the kernel refuses any existing entry, a symlink (even a dangling one) included, so no planted
name redirects the bytes.

A temporary file is locked (``flock``) from its creation until it is renamed or removed, and
every live one is known to :func:`remove_live_temps`, which a signal handler calls. After a crash
(SIGKILL, a power cut) its name still says what it was (``.tmp-<final name>.<12 hex digits>``),
and :func:`remove_stale_temps` removes those whose lock it can take: never one a concurrent
process is still writing.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import stat
import sys

from ._errors import ReadError

if sys.platform != "win32":
    import fcntl

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Final

__all__ = [
    "TEMP_PREFIX",
    "create_new",
    "discard_temp",
    "kind_of",
    "open_regular",
    "read_small",
    "remove_live_temps",
    "remove_stale_temps",
    "removed_temps",
    "temp_published",
]

# Flags that do not exist everywhere (Windows has no FIFOs to block on and no O_NOFOLLOW).
_NONBLOCK: Final[int] = getattr(os, "O_NONBLOCK", 0)
_NOFOLLOW: Final[int] = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC: Final[int] = getattr(os, "O_CLOEXEC", 0)
_BINARY: Final[int] = getattr(os, "O_BINARY", 0)
# What each kind of file that is not a regular file is called in an error.
_KINDS: Final = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
TEMP_PREFIX: Final = ".tmp-"
"""Temporary files are named ``.tmp-<final name>.<random>`` in the folder of the final name."""
# Random names tried before giving up: a collision of 12 random hex digits is already unheard of.
_TEMP_ATTEMPTS: Final = 16
# A temporary name: the final name it stands for, and the random suffix of _random_suffix().
_TEMP_NAME: Final = re.compile(re.escape(TEMP_PREFIX) + r"(.+)\.[0-9a-f]{12}")
# Lock errors that mean "this file system has no locks" (Lustre mounted without -o flock, some FUSE).
_NO_LOCKS: Final = frozenset({errno.ENOLCK, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP})


class _Temps:
    """The temporary files of this process not yet renamed or removed, and how many were removed."""

    live: Final[dict[str, io.BufferedWriter]] = {}
    removed = 0


def _lock(fd: int) -> bool | None:
    """Take an exclusive lock on ``fd`` without waiting: True, False if another holds it, None if
    the file system has no locks (then nothing can tell a live temporary file from a dead one)."""
    if sys.platform == "win32":
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as error:
        if error.errno in _NO_LOCKS:
            return None
        raise
    return True


def kind_of(mode: int) -> str:
    """What a file of this ``st_mode`` is, for an error: ``"a FIFO"``, ``"a regular file"``."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def open_regular(path: str, *, boundary: str | None = None, max_bytes: int | None = None) -> io.FileIO:
    """``path`` opened for reading (unbuffered: wrap it in ``io.BufferedReader`` for small reads),
    if it is a regular file (inside ``boundary``, if given).

    Raises :class:`ReadError` naming ``path``: it "is a FIFO, not a regular file" (or a device,
    a socket, a directory), it "leads outside the folder", it "is larger than N bytes"
    (``max_bytes``), or it cannot be opened. Never blocks on a FIFO.
    """
    target, nofollow = path, 0
    if boundary is not None:
        target = os.path.realpath(path)
        if os.path.commonpath([target, boundary]) != boundary:
            raise ReadError(path, f"leads outside the folder {boundary} (to {target}): not followed")
        nofollow = _NOFOLLOW  # the checked path: a symlink swapped in after the check is refused
    try:
        fd = os.open(target, os.O_RDONLY | _NONBLOCK | _CLOEXEC | _BINARY | nofollow)
    except OSError as error:
        if error.errno == errno.EISDIR:
            raise ReadError(path, "is a directory, not a regular file") from None
        if error.errno == errno.ELOOP and nofollow:
            raise ReadError(path, "became a symlink while being opened: not followed") from None
        raise ReadError(path, f"cannot be read: {error.strerror or error}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ReadError(path, f"is {kind_of(info.st_mode)}, not a regular file")
        if max_bytes is not None and info.st_size > max_bytes:
            raise ReadError(path, f"is larger than {max_bytes} bytes ({info.st_size} bytes)")
        if _NONBLOCK:
            os.set_blocking(fd, True)
        return open(fd, "rb", buffering=0)
    except BaseException:
        # A signal's exception can come right after open() returned: the file object it made is
        # dropped then, closing fd itself, and a second close must not replace that exception.
        with contextlib.suppress(OSError):
            os.close(fd)
        raise


def read_small(path: str, *, boundary: str | None, max_bytes: int) -> bytes:
    """The bytes of the regular file at ``path``, at most ``max_bytes`` of them (:func:`open_regular`).

    A file that grows past ``max_bytes`` while it is read is refused like one that was larger.
    """
    with io.BufferedReader(open_regular(path, boundary=boundary, max_bytes=max_bytes)) as stream:
        try:
            data = stream.read(max_bytes + 1)
        except OSError as error:
            raise ReadError(path, f"cannot be read: {error.strerror or error}") from None
    if len(data) > max_bytes:
        raise ReadError(path, f"is larger than {max_bytes} bytes")
    return data


def _random_suffix() -> str:
    # os.urandom, not secrets: importing secrets (hashlib, random) cost a reader's first call ~4 ms.
    return os.urandom(6).hex()


def create_new(path: str) -> tuple[str, io.BufferedWriter]:
    """A new file to be renamed to ``path`` later: its name (``.tmp-<name>.<random>`` beside ``path``) and stream.

    Created with ``O_CREAT|O_EXCL|O_NOFOLLOW``, so an entry planted under the name (a symlink to a
    file elsewhere, a FIFO) is never opened, let alone written through. The mode is ``0o666``,
    from which the kernel takes the umask: the permissions a plain ``open(path, "wb")`` gives,
    with no window in which another mode is visible.

    The file is locked (``flock``) until its stream is closed, which :func:`temp_published` and
    :func:`discard_temp` do: :func:`remove_stale_temps` of another process leaves it alone. If such
    a cleaner took the name between its creation and the lock, the name is given up for another.
    """
    folder, base = os.path.split(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC | _BINARY
    for _ in range(_TEMP_ATTEMPTS):
        temp = os.path.join(folder, f"{TEMP_PREFIX}{base}.{_random_suffix()}")
        fd = -1
        try:
            fd = os.open(temp, flags, 0o666)
            if _lock(fd) is False or not _same_file(temp, fd):  # a cleaner holds it, or removed it
                os.close(fd)
                fd = -1
                continue
            stream = open(fd, "wb")  # noqa: SIM115  # the caller closes it (temp_published, discard_temp)
            _Temps.live[temp] = stream
            return temp, stream
        except FileExistsError:  # from os.open only: the name is taken
            continue
        except BaseException:
            # A signal's exception can come between os.open's return and the assignment of fd
            # (Python runs handlers right after a call): the name is ours, remove it either way.
            # Right after open(fd) returned, the dropped file object has closed fd already: the
            # close here fails then (EBADF), and must neither skip the removal nor replace the signal.
            if temp not in _Temps.live:
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(temp)
            raise
    raise FileExistsError(errno.EEXIST, f"no free temporary name after {_TEMP_ATTEMPTS} attempts", path)


def _same_file(path: str, fd: int) -> bool:
    """Whether the name ``path`` still leads to the open file ``fd`` (not removed, not replaced)."""
    try:
        named, opened = os.lstat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def temp_published(temp: str) -> None:
    """``temp`` was renamed to its final name: close its stream (releasing its lock) and forget it."""
    stream = _Temps.live.pop(temp, None)
    if stream is not None:
        stream.close()


def discard_temp(temp: str) -> bool:
    """Remove the temporary file ``temp`` (closing its stream); whether a file was removed."""
    stream = _Temps.live.pop(temp, None)
    try:
        os.unlink(temp)
    except FileNotFoundError:
        removed = False
    else:
        removed = True
        _Temps.removed += 1
    finally:
        if stream is not None:
            with contextlib.suppress(OSError):  # a full disk refusing the buffered rest: the file is gone anyway
                stream.close()
    return removed


def remove_live_temps() -> int:
    """Remove every temporary file of this process still being written (on a signal, at exit);
    return how many temporary files were removed since :func:`removed_temps` was reset."""
    for temp in list(_Temps.live):
        discard_temp(temp)
    return _Temps.removed


def removed_temps(*, reset: bool = False) -> int:
    """How many temporary files :func:`discard_temp` removed (since the last reset)."""
    count = _Temps.removed
    if reset:
        _Temps.removed = 0
    return count


def remove_stale_temps(folder: str, wanted: Callable[[str], bool]) -> list[str]:
    """Remove the temporary files of ``folder`` left by a process that died (SIGKILL, a power cut);
    return their names.

    Only names :func:`create_new` gives (``.tmp-<name>.<12 hex digits>``) whose final name
    ``wanted`` accepts, that are regular files, and whose lock can be taken: a temporary file that
    another process (a concurrent job of the same job array) is still writing is locked, and
    left alone. Where the file system has no locks, nothing is removed. On NFS, ``flock`` is
    carried out as a POSIX lock by the server (Linux 2.6.12 and later), which still tells a live
    writer on another node; on Lustre only with the ``flock`` mount option (docs/export.md).
    """
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    removed = []
    for name in names:
        match = _TEMP_NAME.fullmatch(name)
        if match is None or not wanted(match.group(1)):
            continue
        path = os.path.join(folder, name)
        try:
            fd = os.open(path, os.O_RDWR | _NOFOLLOW | _NONBLOCK | _CLOEXEC | _BINARY)
        except OSError:  # a symlink, a FIFO opened by no one, no permission: not ours to remove
            continue
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode) or not _lock(fd) or not _same_file(path, fd):
                continue
            os.unlink(path)  # under the lock: a writer that comes now finds its name gone and picks another
            removed.append(name)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed
