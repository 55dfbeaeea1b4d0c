"""Where a tensor's bytes are: the byte range of its storage record inside the checkpoint file.

torch writes every storage record of its zip format *stored* (uncompressed), so a contiguous
tensor is one run of bytes in the file: where the record's data start (after its local header,
name and extra field), plus the tensor's storage offset. The archive is read as ``torch.load``
reads it (``_zip``, miniz's rules, refusing what readers disagree on), so the bytes exported are
the bytes torch would load.

A remote file (a URL) is located the same way, on the bytes of its tail (end records, central
directory) and of its records' local headers, fetched by ranged GETs from the object pinned to
the version listed (``_read._source``); its spans carry that object, for the writer to fetch from.
"""

from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass, field
from typing import cast

from .._read._errors import CorruptCheckpointError, ReadError
from .._read._files import open_regular
from .._read._limits import Limits
from .._read._ranged import RangedStream
from .._read._reader import Checkpoint
from .._read._source import TAIL_BYTES
from .._read._torch import TensorInfo
from .._read._zip import Archive, Member, open_archive

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import BinaryIO, Final

    from .._read._source import RemoteObject
    from .._read._torch import StorageInfo

__all__ = ["FileSpan", "is_contiguous", "record_spans", "tensor_span", "value_problem"]

_STORED = 0
_FLAG_ENCRYPTED = 0x1
# A zip local header's fixed part: its name's and extra field's lengths say where the data start.
_LOCAL_FIXED: Final = 30


@dataclass(frozen=True, slots=True)
class FileSpan:
    """``length`` bytes of the file at ``path``, from byte ``offset``."""

    path: str
    offset: int
    length: int
    swap: int = 1
    """Reverse every ``swap`` bytes, from ``offset``, to get the values torch gives (a big-endian
    file: torch.load byte-swaps its storages); 1 copies the bytes as they are."""
    remote: RemoteObject | None = field(default=None, compare=False, repr=False)
    """The object ``path`` names when it is a URL (pinned to the version listed), else None."""


def is_contiguous(tensor: TensorInfo) -> bool:
    """True when the tensor's elements are one run of its storage, in row-major order."""
    expected = 1
    for size, stride in zip(reversed(tensor.shape), reversed(tensor.stride), strict=True):
        if size != 1 and stride != expected:
            return False
        expected *= size
    return True


def record_spans(checkpoint: Checkpoint, remote: RemoteObject | None = None) -> dict[str, FileSpan]:
    """The byte range of every storage record of a zip-format checkpoint, by storage key.

    ``remote``: the checkpoint is that object (a URL), not a local file (:func:`_remote_record_spans`).

    Raises :class:`~ckptkeys.CorruptCheckpointError` naming the file when a record is
    missing, compressed, encrypted or shorter than the pickle says, or the file changed since
    it was read.
    """
    name = checkpoint.path
    if checkpoint.format != "zip":
        raise CorruptCheckpointError(name, "is in torch's legacy format: its tensors cannot be located without torch")
    if remote is not None:
        return _remote_record_spans(checkpoint, remote)
    try:
        with io.BufferedReader(open_regular(name)) as stream:  # a FIFO swapped in since read(): refused
            size = os.fstat(stream.fileno()).st_size
            if size != checkpoint.size:
                raise CorruptCheckpointError(name, f"changed since it was read ({checkpoint.size} bytes, now {size})")
            archive = open_archive(name, stream, size, Limits())
            if archive.defects:
                raise CorruptCheckpointError(name, archive.defects[0])
            spans: dict[str, FileSpan] = {}
            for storage, member, where in _storage_members(checkpoint, archive):
                span = spans[storage.key] = _member_span(archive, member, where)
                if span.length < storage.nbytes:
                    raise CorruptCheckpointError(
                        name, f"{where} holds {span.length} bytes, the pickle says {storage.nbytes}"
                    )
    except ReadError:
        raise
    except OSError as error:
        raise CorruptCheckpointError(name, f"cannot locate its storage records: {error.strerror or error}") from None
    return spans


def _remote_record_spans(checkpoint: Checkpoint, remote: RemoteObject) -> dict[str, FileSpan]:
    """:func:`record_spans` of a remote object: its tail (one ranged GET; more only for a central
    directory that starts before it), then the fixed part of every record's local header, in one
    concurrent round (only headers that touch are merged: no tensor byte is fetched here)."""
    name = checkpoint.path
    if remote.size != checkpoint.size:
        raise CorruptCheckpointError(name, f"changed since it was read ({checkpoint.size} bytes, now {remote.size})")
    ranged = RangedStream(remote)
    size = remote.size
    ranged.prefetch([(size - TAIL_BYTES, size)])
    archive = open_archive(name, cast("BinaryIO", ranged), size, Limits())
    if archive.defects:
        raise CorruptCheckpointError(name, archive.defects[0])
    members: dict[str, tuple[Member, str]] = {}
    for storage, member, where in _storage_members(checkpoint, archive):
        if member.size < storage.nbytes:
            raise CorruptCheckpointError(name, f"{where} holds {member.size} bytes, the pickle says {storage.nbytes}")
        members[storage.key] = (member, where)
    headers = [(m.header_offset, m.header_offset + _LOCAL_FIXED) for m, _ in members.values()]
    ranged.prefetch(headers, gap=0)
    return {key: _member_span(archive, member, where, remote) for key, (member, where) in members.items()}


def _storage_members(checkpoint: Checkpoint, archive: Archive) -> Iterator[tuple[StorageInfo, Member, str]]:
    """Each storage of ``checkpoint``, its record in ``archive`` and the record's name for messages;
    :class:`~ckptkeys.CorruptCheckpointError` for a record missing. By record name: two storages torch
    tells apart (keys 2 and '2') may share a record."""
    for storage in checkpoint.storages.values():
        member = archive.find(f"data/{storage.key}")
        where = f"storage record {archive.folder.decode('utf-8', 'replace')}/data/{storage.key}"
        if member is None:
            raise CorruptCheckpointError(checkpoint.path, f"{where} is missing from the archive")
        yield storage, member, where


def _member_span(archive: Archive, member: Member, where: str, remote: RemoteObject | None = None) -> FileSpan:
    if member.method != _STORED or member.compressed_size != member.size:
        raise CorruptCheckpointError(archive.path, f"{where} is compressed; torch writes its records stored")
    if member.flags & _FLAG_ENCRYPTED:
        raise CorruptCheckpointError(archive.path, f"{where} is encrypted")
    return FileSpan(archive.path, archive.data_offset(member), member.size, remote=remote)


def tensor_span(checkpoint: Checkpoint, tensor: TensorInfo, spans: dict[str, FileSpan] | None = None) -> FileSpan:
    """The bytes of a contiguous ``tensor`` of ``checkpoint``, as a range of its file.

    ``spans`` (from :func:`record_spans`) saves reopening the archive for every tensor.
    Raises :class:`~ckptkeys.CorruptCheckpointError` naming the file for a tensor without
    storage (meta device), one that is not contiguous, and one whose values torch.load would
    not take from its bytes as they are (:func:`value_problem`).
    """
    if tensor.storage is None:
        raise CorruptCheckpointError(checkpoint.path, f"a {tensor!r} has no storage (meta device): no bytes to copy")
    problem = value_problem(checkpoint, tensor)
    if problem is not None:
        raise CorruptCheckpointError(checkpoint.path, f"a {tensor!r}: {problem}: not exported")
    if not is_contiguous(tensor):
        raise CorruptCheckpointError(
            checkpoint.path, f"a {tensor!r} with stride {tensor.stride} is not contiguous: not exported"
        )
    record = (spans if spans is not None else record_spans(checkpoint))[tensor.storage.key]
    start = tensor.storage_offset * tensor.itemsize
    if start + tensor.nbytes > record.length:
        raise CorruptCheckpointError(
            checkpoint.path, f"a {tensor!r} reaches past the end of storage record {tensor.storage.key!r}"
        )
    swap = tensor.storage.swap_size if checkpoint.byteorder != sys.byteorder else 1
    return FileSpan(record.path, record.offset + start, tensor.nbytes, swap, record.remote)


def value_problem(checkpoint: Checkpoint, tensor: TensorInfo) -> str | None:
    """Why the values ``torch.load`` gives for ``tensor`` are not its bytes copied (byte-swapped
    for a big-endian file), or ``None``.

    torch byte-swaps a storage of a file whose byte order is not the machine's in units of the
    *storage's* element size: the tensor's elements must be whole units (a tensor of another
    dtype than its storage may not be). What the rebuild applies after (``TensorInfo.altered_by``:
    negation or conjugation, a pickled state replacing ``data``, a subclass) is never applied here.
    """
    if tensor.altered_by is not None:
        return tensor.altered_by
    storage = tensor.storage
    if storage is not None and checkpoint.byteorder != sys.byteorder and tensor.itemsize % storage.swap_size:
        return (
            f"torch byte-swaps its {storage.dtype} storage {storage.key!r} ({checkpoint.byteorder}-endian file) "
            f"in units of {storage.swap_size} bytes, which split its {tensor.dtype} elements"
        )
    return None
