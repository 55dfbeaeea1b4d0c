"""``scan_run()``: a run, a folder of save folders (a Trainer ``output_dir``, a Lightning
``dirpath``, Accelerate's ``checkpoints/``), its saves newest first; no checkpoint file is read.

A remote run (a URL) is its one listing (``_read._source.RemoteFolder``): its saves, their tag
folders and ``trainer_state.json`` are found there, with no listing per sub-folder."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .._keys._registry import NamingKeys
from .._read._errors import NotACheckpointError, ReadError
from .._read._repr import counted, one_line, severities
from .._read._source import RemoteFolder, is_url, list_remote, local_only
from . import _frameworks
from ._folders import is_tag_folder, list_entries
from ._problems import Problem, Severity

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, Final

__all__ = ["Run", "Save", "run_of", "scan_run"]


@dataclass(frozen=True, slots=True, repr=False)
class Save:
    """One save folder of a run. Its repr is one line: the folder and its step."""

    name: str
    path: str
    step: int | None
    """The training step, from the folder's name (``checkpoint-500``, ``epoch=0-step=4.ckpt``;
    Accelerate's ``checkpoint_N`` gives the save's number) or ``trainer_state.json``."""
    mtime: float
    """When the folder's ``latest`` file (else the folder) was last written."""

    def __repr__(self) -> str:
        return one_line(self, self.path, () if self.step is None else (f"step {self.step}",))


@dataclass(frozen=True, slots=True, repr=False)
class Run:
    """A folder whose subfolders are save folders: a Trainer ``output_dir``, a Lightning
    ``dirpath``, Accelerate's ``checkpoints/``.

    Its repr is one line (folder, framework, saves, problems); the saves are :attr:`saves`.
    """

    path: str
    framework: str | None
    saves: tuple[Save, ...]
    """Newest first: by step where every save has one, else by time."""
    framework_files: tuple[str, ...]
    """Files beside the saves that a framework writes (the final ``model.safetensors``, ``config.json``, ...)."""
    other_entries: tuple[str, ...]
    """Everything else in the folder (subfolders with a ``/``)."""
    problems: tuple[Problem, ...] = ()
    """Entries skipped while listing (symlinks out, FIFOs, devices) and side files that could not be read."""

    def __repr__(self) -> str:
        facts = [self.framework or "no framework", counted(len(self.saves), "save")]
        return one_line(self, self.path, (*facts, severities(p.severity for p in self.problems)))

    def save(self, name: str) -> Save:
        """The save called ``name``; ``KeyError`` if there is none. A trailing separator is
        allowed (``checkpoint-4/``, as a shell's tab completion types a folder's name)."""
        wanted = name.rstrip("/" + os.sep) or name
        for save in self.saves:
            if save.name == wanted:
                return save
        raise KeyError(name)

    def no_save(self, name: str) -> str:
        """What ``inspect``, ``validate`` and ``export`` say of a ``--save NAME`` the run does not have."""
        return f"no save {name!r}; the saves are: {', '.join(s.name for s in self.saves)}"


def scan_run(path: str | os.PathLike[str], *, storage_options: Mapping[str, Any] | None = None) -> Run:
    """The saves of the run folder at ``path``, newest first; no checkpoint file is read.

    ``path`` may be a URL (``storage_options`` passed to its filesystem): the run is listed once
    (one recursive listing: its saves, their tags and side files), never a listing per save.
    Raises :class:`~ckptkeys.ReadError` if ``path`` is not a readable folder, and
    :class:`~ckptkeys.NotACheckpointError` if none of its subfolders is a save folder;
    ``ValueError`` for ``storage_options`` with a local path.
    """
    root = os.fspath(path)
    if is_url(root):
        return run_of(root, list_remote(root, storage_options))
    local_only(root, storage_options)
    if not os.path.isdir(root):
        raise ReadError(root, "does not exist" if not os.path.exists(root) else "is a file, not a folder")
    return run_of(root, os.path.realpath(root))


def run_of(root: str, boundary: str | RemoteFolder) -> Run:
    """The run folder ``root``: listed inside ``boundary`` (a local folder's real path), or from a
    remote folder's listing (``root`` or a folder in it)."""
    problems: list[Problem] = []
    saves: list[Save] = []
    framework_files: list[str] = []
    others: list[str] = []
    for entry in list_entries(root, boundary, problems):
        if entry.is_dir and _is_save_folder(entry.path, boundary):
            step = _step(entry.path, boundary, problems)
            saves.append(Save(entry.name, entry.path, step, _mtime(entry.path, boundary)))
        elif not entry.is_dir and _frameworks.is_framework_file(entry.name):
            framework_files.append(entry.name)
        else:
            others.append(entry.name + "/" if entry.is_dir else entry.name)
    if not saves:
        raise NotACheckpointError(
            root, "holds no DeepSpeed checkpoint: no checkpoint files, no tag folders and no save folders"
        )
    if all(save.step is not None for save in saves):
        saves.sort(key=lambda save: (save.step, save.mtime, save.name), reverse=True)
    else:
        saves.sort(key=lambda save: (save.mtime, save.name), reverse=True)
    names = {_frameworks.framework_of_save_name(save.name) for save in saves}
    framework = names.pop() if len(names) == 1 else None
    return Run(root, framework, tuple(saves), tuple(framework_files), tuple(others), tuple(problems))


def _step(path: str, boundary: str | RemoteFolder, problems: list[Problem]) -> int | None:
    try:
        return _frameworks.save_step(path, boundary)
    except ReadError as error:
        problems.append(
            Problem(Severity.WARNING, "unreadable-side-file", f"{error.reason}: the save's step is unknown", error.path)
        )
        return None


def _is_save_folder(path: str, boundary: str | RemoteFolder) -> bool:
    """A folder with a ``latest`` pointer or a tag folder in it (not itself a tag folder)."""
    try:
        entries = list_entries(path, boundary, [])
    except ReadError:
        return False
    if is_tag_folder(path, entries, boundary):
        return False
    for entry in entries:
        if not entry.is_dir and entry.name in (NamingKeys.LATEST, NamingKeys.LATEST_UNIVERSAL):
            return True
        if entry.is_dir:
            try:
                if is_tag_folder(entry.path, list_entries(entry.path, boundary, []), boundary):
                    return True
            except ReadError:
                continue
    return False


def _mtime(path: str, boundary: str | RemoteFolder) -> float:
    if isinstance(boundary, RemoteFolder):  # a store's folders have no time: the latest file's, as listed
        return _listed_time(boundary, os.path.join(path, NamingKeys.LATEST))
    for candidate in (os.path.join(path, NamingKeys.LATEST), path):
        try:
            return os.stat(candidate).st_mtime
        except OSError:
            continue
    return 0.0


# The fields of a listing entry that tell when the object was written: S3's, GCS's, memory://'s.
_TIME_FIELDS: Final = ("LastModified", "mtime", "updated", "created", "last_modified")


def _listed_time(listing: RemoteFolder, url: str) -> float:
    """When the listed file ``url`` was written (a POSIX time), or 0.0 when the listing does not say."""
    if not listing.is_file(url):
        return 0.0
    info = listing.entries[listing.name_of(url)]
    for name in _TIME_FIELDS:
        value = info.get(name)
        timestamp = getattr(value, "timestamp", None)  # a datetime
        if callable(timestamp):
            return float(timestamp())
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return 0.0
