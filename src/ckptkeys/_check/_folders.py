"""The file system of a checkpoint folder: its entries listed inside the folder given, tag folders
recognised by their files, and the ``latest`` pointer files read."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .. import naming
from .._keys._registry import NamingKeys
from .._read._errors import ReadError
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


def list_entries(folder: str, boundary: str, problems: list[Problem]) -> list[Entry]:
    """The entries of ``folder``, sorted; symlinks that lead out of ``boundary`` are skipped."""
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
            size = 0 if is_dir else entry.stat().st_size
        except OSError as error:  # a dangling link, a file removed while scanning
            problems.append(Problem(Severity.WARNING, "unlistable-entry", f"skipped: {error.strerror}", entry.path))
            continue
        entries.append(Entry(entry.name, entry.path, is_dir, size))
    return entries


def is_tag_folder(path: str, entries: list[Entry], boundary: str) -> bool:
    for entry in entries:
        if entry.is_dir:
            if entry.name == NamingKeys.UNIVERSAL_ZERO_FOLDER and os.path.isfile(
                os.path.join(entry.path, NamingKeys.UNIVERSAL_OPTIMIZER_STATE_FILE)
            ):
                return True
        else:
            parsed = naming.parse(entry.name)
            if parsed is not None and parsed.kind not in POINTER_KINDS:
                return True
    return False


POINTER_KINDS: Final = frozenset({FileKind.LATEST, FileKind.LATEST_UNIVERSAL, FileKind.RECOVERY_SCRIPT})


def read_pointer(root: str, entry: Entry | None, problems: list[Problem]) -> str | None:
    if entry is None or entry.is_dir:
        return None
    try:
        with open(entry.path, "rb") as stream:
            raw = stream.read(_MAX_POINTER_BYTES + 1)
        text = raw.decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        problems.append(Problem(Severity.ERROR, "latest-unreadable", f"cannot be read: {error}", entry.path))
        return None
    if len(raw) > _MAX_POINTER_BYTES or not text or "\n" in text or os.sep in text:
        problems.append(Problem(Severity.ERROR, "latest-unreadable", "does not hold a tag name", entry.path))
        return None
    return text
