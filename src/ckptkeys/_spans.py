"""Where a tensor's bytes are: the byte range of its storage record inside the checkpoint file.

torch writes every storage record of its zip format *stored* (uncompressed), so a contiguous
tensor is one run of bytes in the file: the record's local header offset, plus the header's
30 bytes, its name and its extra field, plus the tensor's storage offset. The local header is
read and checked against the central directory (name, sizes, method) before an offset is
trusted, so a zip whose two directories disagree is refused rather than misread.
"""

from __future__ import annotations

import struct
import zipfile
from dataclasses import dataclass

from ._errors import CorruptCheckpointError, ReadError
from ._reader import Checkpoint
from ._torch import TensorInfo

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO, Final

__all__ = ["FileSpan", "is_contiguous", "record_spans", "tensor_span"]

_LOCAL_SIGNATURE: Final = b"PK\x03\x04"
_LOCAL_HEADER: Final = 30
_FLAG_ENCRYPTED: Final = 0x1


@dataclass(frozen=True, slots=True)
class FileSpan:
    """``length`` bytes of the file at ``path``, from byte ``offset``."""

    path: str
    offset: int
    length: int


def is_contiguous(tensor: TensorInfo) -> bool:
    """True when the tensor's elements are one run of its storage, in row-major order."""
    expected = 1
    for size, stride in zip(reversed(tensor.shape), reversed(tensor.stride), strict=True):
        if size != 1 and stride != expected:
            return False
        expected *= size
    return True


def record_spans(checkpoint: Checkpoint) -> dict[str, FileSpan]:
    """The byte range of every storage record of a zip-format checkpoint, by storage key.

    Raises :class:`~ckptkeys.CorruptCheckpointError` naming the file when a record is
    compressed, encrypted, or its local header disagrees with the central directory.
    """
    name = checkpoint.path
    if checkpoint.format != "zip":
        raise CorruptCheckpointError(name, "is in torch's legacy format: its tensors cannot be located without torch")
    try:
        with open(name, "rb") as stream, zipfile.ZipFile(stream) as archive:
            members = archive.infolist()
            pickles = [m for m in members if m.filename.count("/") == 1 and m.filename.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise CorruptCheckpointError(name, "changed since it was read: no single <archive>/data.pkl")
            prefix = pickles[0].filename[: -len("data.pkl")] + "data/"
            wanted = {prefix + key: key for key in checkpoint.storages}
            spans: dict[str, FileSpan] = {}
            for member in members:
                key = wanted.get(member.filename)
                if key is not None:
                    spans[key] = _member_span(name, stream, member, checkpoint.size)
    except ReadError:
        raise
    except (OSError, zipfile.BadZipFile, ValueError, struct.error) as error:
        raise CorruptCheckpointError(name, f"cannot locate its storage records: {error}") from None
    for key, storage in checkpoint.storages.items():
        span = spans.get(key)
        if span is None:
            raise CorruptCheckpointError(name, f"storage record {prefix}{key} is missing from the archive")
        if span.length < storage.nbytes:
            raise CorruptCheckpointError(
                name, f"storage record {prefix}{key} holds {span.length} bytes, the pickle says {storage.nbytes}"
            )
    return spans


def _member_span(name: str, file: BinaryIO, member: zipfile.ZipInfo, size: int) -> FileSpan:
    where = f"storage record {member.filename}"
    if member.compress_type != zipfile.ZIP_STORED or member.compress_size != member.file_size:
        raise CorruptCheckpointError(name, f"{where} is compressed; torch writes its records stored")
    if member.flag_bits & _FLAG_ENCRYPTED:
        raise CorruptCheckpointError(name, f"{where} is encrypted")
    file.seek(member.header_offset)
    header = file.read(_LOCAL_HEADER)
    if len(header) < _LOCAL_HEADER or not header.startswith(_LOCAL_SIGNATURE):
        raise CorruptCheckpointError(name, f"{where}: no local file header at offset {member.header_offset}")
    method, name_length, extra_length = struct.unpack_from("<H", header, 8)[0], *struct.unpack_from("<HH", header, 26)
    local_name = file.read(name_length)
    if local_name.decode("utf-8", "replace") != member.filename or method != zipfile.ZIP_STORED:
        raise CorruptCheckpointError(name, f"{where}: the local header disagrees with the central directory")
    offset = member.header_offset + _LOCAL_HEADER + name_length + extra_length
    if offset + member.file_size > size:
        raise CorruptCheckpointError(name, f"{where} extends past the end of the file (truncated?)")
    return FileSpan(name, offset, member.file_size)


def tensor_span(checkpoint: Checkpoint, tensor: TensorInfo, spans: dict[str, FileSpan] | None = None) -> FileSpan:
    """The bytes of a contiguous ``tensor`` of ``checkpoint``, as a range of its file.

    ``spans`` (from :func:`record_spans`) saves reopening the archive for every tensor.
    Raises :class:`~ckptkeys.CorruptCheckpointError` naming the file for a tensor without
    storage (meta device) or one that is not contiguous.
    """
    if tensor.storage is None:
        raise CorruptCheckpointError(checkpoint.path, f"a {tensor!r} has no storage (meta device): no bytes to copy")
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
    return FileSpan(record.path, record.offset + start, tensor.nbytes)
