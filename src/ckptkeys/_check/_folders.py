"""The file system of a checkpoint folder: its entries listed inside the folder given, tag folders
recognised by their files, and the ``latest`` pointer files read.

Only folders and regular files are listed: a symlink leading out of the folder, a FIFO, a device or
a socket is skipped with a warning, and what is read is opened by ``_read._files``, which checks
again on the opened file (a name can be swapped between listing and reading).

A remote folder (a URL) is its one listing (``_read._source.RemoteFolder``), given where a local
folder gives its real path as the ``boundary``: its entries, files and pointers come from that
listing, without a request per folder or file."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from .. import naming
from .._keys._registry import NamingKeys
from .._read._errors import ReadError
from .._read._files import kind_of, read_small
from .._read._source import RemoteFolder
from ..naming import FileKind
from ._problems import Problem, Severity

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = ["POINTER_KINDS", "Entry", "is_tag_folder", "list_entries", "read_pointer"]

# The pointer files are a few bytes; anything longer is not a tag name.
_MAX_POINTER_BYTES: Final = 4096


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    path: str
    is_dir: bool
    size: int


def list_entries(folder: str, boundary: str | RemoteFolder, problems: list[Problem]) -> list[Entry]:
    """The entries of ``folder``, sorted; symlinks that lead out of ``boundary`` are skipped."""
    if isinstance(boundary, RemoteFolder):  # a listing holds only objects: no link, no special file
        base = folder.rstrip("/")
        return [Entry(name, f"{base}/{name}", is_dir, size) for name, is_dir, size in boundary.children(folder)]
    try:
        with os.scandir(folder) as it:
            raw = sorted(it, key=lambda e: e.name)
    except OSError as error:
        raise ReadError(folder, f"cannot be listed: {error.strerror or error}") from None
    entries = []
    for entry in raw:
        try:
            if entry.is_symlink():
                target = os.path.realpath(entry.path)
                if os.path.commonpath([target, boundary]) != boundary and entry.name in _POINTER_NAMES:
                    problems.append(Problem(Severity.ERROR, "latest-unreadable",
                                            f"is a symlink to {target}, outside the scanned folder: not followed",
                                            entry.path))  # fmt: skip
                    continue
                if os.path.commonpath([target, boundary]) != boundary:
                    problems.append(
                        Problem(
                            Severity.WARNING,
                            "symlink-outside",
                            f"skipped: a symlink to {target}, outside the scanned folder",
                            entry.path,
                        )
                    )
                    continue
            is_dir = entry.is_dir()
            info = None if is_dir else entry.stat()
        except OSError as error:  # a dangling link, a file removed while scanning
            if entry.name in _POINTER_NAMES:  # the pointer is there, and names no tag: as export finds it
                problems.append(Problem(Severity.ERROR, "latest-unreadable", f"cannot be read: {error.strerror}",
                                        entry.path))  # fmt: skip
            else:
                problems.append(Problem(Severity.WARNING, "unlistable-entry", f"skipped: {error.strerror}",
                                        entry.path))  # fmt: skip
            continue
        if info is not None and not stat.S_ISREG(info.st_mode):
            if entry.name in _POINTER_NAMES:
                problems.append(Problem(Severity.ERROR, "latest-unreadable",
                                        f"is {kind_of(info.st_mode)}, not a regular file", entry.path))  # fmt: skip
                continue
            problems.append(
                Problem(
                    Severity.WARNING,
                    "special-file",
                    f"skipped: is {kind_of(info.st_mode)}, not a regular file",
                    entry.path,
                )
            )
            continue
        entries.append(Entry(entry.name, entry.path, is_dir, 0 if info is None else info.st_size))
    return entries


def is_tag_folder(path: str, entries: list[Entry], boundary: str | RemoteFolder) -> bool:
    for entry in entries:
        if entry.is_dir:
            if entry.name == NamingKeys.UNIVERSAL_ZERO_FOLDER:
                state = os.path.join(entry.path, NamingKeys.UNIVERSAL_OPTIMIZER_STATE_FILE)
                if boundary.is_file(state) if isinstance(boundary, RemoteFolder) else os.path.isfile(state):
                    return True
        else:
            parsed = naming.parse(entry.name)
            if parsed is not None and parsed.kind not in POINTER_KINDS:
                return True
    return False


POINTER_KINDS: Final = frozenset({FileKind.LATEST, FileKind.LATEST_UNIVERSAL, FileKind.RECOVERY_SCRIPT})
# The pointer files: one that is there but no regular file (a FIFO, a dangling link) names no tag.
_POINTER_NAMES: Final = frozenset({str(NamingKeys.LATEST), str(NamingKeys.LATEST_UNIVERSAL)})


def read_pointer(boundary: str | RemoteFolder, entry: Entry | None, problems: list[Problem]) -> str | None:
    """The tag a pointer file (``latest``) names; a problem and ``None`` if it names none."""
    if entry is None:
        return None
    if entry.is_dir:  # names no tag; export says the same of it
        problems.append(Problem(Severity.ERROR, "latest-unreadable", "is a folder, not a file", entry.path))
        return None
    try:
        if isinstance(boundary, RemoteFolder):
            raw = boundary.read_small(entry.path, _MAX_POINTER_BYTES)
        else:
            raw = read_small(entry.path, boundary=boundary, max_bytes=_MAX_POINTER_BYTES)
        text = raw.decode("utf-8").strip()
    except ReadError as error:
        problems.append(Problem(Severity.ERROR, "latest-unreadable", error.reason, entry.path))
        return None
    except UnicodeDecodeError as error:
        problems.append(Problem(Severity.ERROR, "latest-unreadable", f"cannot be read: {error}", entry.path))
        return None
    if not text:  # DeepSpeed writes the tag and nothing else; an empty file names none
        problems.append(Problem(Severity.ERROR, "latest-unreadable", "is empty: it names no tag", entry.path))
        return None
    if "\n" in text or os.sep in text:
        problems.append(Problem(Severity.ERROR, "latest-unreadable", "does not hold a tag name", entry.path))
        return None
    return text
