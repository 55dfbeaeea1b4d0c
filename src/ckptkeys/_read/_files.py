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
"""

from __future__ import annotations

import errno
import io
import os
import stat

from ._errors import ReadError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = ["TEMP_PREFIX", "create_new", "kind_of", "open_regular", "read_small"]

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
    """
    folder, base = os.path.split(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC | _BINARY
    for _ in range(_TEMP_ATTEMPTS):
        temp = os.path.join(folder, f"{TEMP_PREFIX}{base}.{_random_suffix()}")
        try:
            fd = os.open(temp, flags, 0o666)
        except FileExistsError:
            continue
        try:
            return temp, open(fd, "wb")
        except BaseException:
            os.close(fd)
            raise
    raise FileExistsError(errno.EEXIST, f"no free temporary name after {_TEMP_ATTEMPTS} attempts", path)
