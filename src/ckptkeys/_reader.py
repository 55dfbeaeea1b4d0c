"""``read()``: the structure of one checkpoint file, without torch and without running it.

Two container formats exist. torch >= 1.6 writes a zip archive: ``<name>/data.pkl`` holds the
pickled structure, ``<name>/data/<key>`` one record per storage, ``<name>/byteorder`` the byte
order. Older torch wrote the *legacy* format: five pickles in a row (magic number, protocol
version, system info, the structure, the storage keys) followed by the raw storages. Both are
read by the inert pickle machine in ``_pickle``; only the pickle and the zip directory are
read, never a storage record.
"""

from __future__ import annotations

import itertools
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass

from ._errors import CorruptCheckpointError, LimitError, NotACheckpointError, ReadError
from ._limits import Limits
from ._pickle import GlobalRef, unpickle
from ._torch import TORCH_INTERPRETERS, StorageInfo, storage_dtype

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, BinaryIO, Final, Literal

__all__ = ["Checkpoint", "read"]

# torch.serialization.MAGIC_NUMBER and PROTOCOL_VERSION of the legacy format.
LEGACY_MAGIC_NUMBER: Final = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION: Final = 1001
_ZIP_SIGNATURES: Final = (b"PK\x03\x04", b"PK\x05\x06")
_PICKLE_PROTO: Final = 0x80
# Bytes read to tell the formats apart and to show in an error.
_SNIFF_BYTES: Final = 16
# The end-of-central-directory record is 22 bytes plus a comment of at most 65535 bytes.
_EOCD_SEARCH: Final = 22 + 65535
_EOCD_SIGNATURE: Final = b"PK\x05\x06"
_EOCD_SIZE: Final = 22  # the end-of-central-directory record without a comment
_ZIP64_LOCATOR_SIGNATURE: Final = b"PK\x06\x07"
_ZIP64_EOCD_SIGNATURE: Final = b"PK\x06\x06"
# A local file header is at least 30 bytes (plus its name and extra field).
_LOCAL_HEADER: Final = 30
# What zipfile raises for a malformed archive: unsupported versions and features
# (NotImplementedError), encrypted members (RuntimeError), offsets past any file (OverflowError).
_ZIP_ERRORS: Final = (
    zipfile.BadZipFile,
    zlib.error,
    struct.error,
    ValueError,
    EOFError,
    OverflowError,
    NotImplementedError,
    RuntimeError,
)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One checkpoint file, read: its structure and what the pickle names."""

    path: str
    data: Any
    """The structure: dicts (OrderedDict kept), lists, tuples, scalars, strings,
    :class:`TensorInfo` for tensors and :class:`Opaque` records for every other object."""
    globals: tuple[GlobalRef, ...]
    """Every global the pickle names, in order of first mention (what ``torch.load`` would import)."""
    storages: dict[str, StorageInfo]
    """The storage records the tensors refer to, by key."""
    format: Literal["zip", "legacy"]
    size: int
    """The file's size in bytes."""
    byteorder: str = "little"


def read(path: str | os.PathLike[str], *, limits: Limits | None = None) -> Checkpoint:
    """Read the structure of the checkpoint file at ``path``.

    Nothing named in the file is imported or called, no tensor byte is read, and nothing is
    written. Errors derive from :class:`~ckptkeys.ReadError` and name the file:
    :class:`~ckptkeys.NotACheckpointError`, :class:`~ckptkeys.CorruptCheckpointError`,
    :class:`~ckptkeys.LimitError`, or ``ReadError`` itself when the file cannot be opened.
    """
    name = os.fspath(path)
    limits = limits or Limits()
    try:
        with open(name, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            head = stream.read(_SNIFF_BYTES)
            stream.seek(0)
            if head.startswith(_ZIP_SIGNATURES):
                return _read_zip(name, stream, size, limits)
            if head[:1] == bytes([_PICKLE_PROTO]):
                return _read_legacy(name, stream, size, limits)
    except ReadError:
        raise
    except IsADirectoryError:
        raise ReadError(name, "is a directory, not a checkpoint file") from None
    except OSError as error:
        raise ReadError(name, f"cannot be read: {error.strerror or error}") from None
    if not head:
        raise NotACheckpointError(name, "is empty")
    raise NotACheckpointError(
        name, f"is not a torch checkpoint: neither a zip archive nor torch's legacy format (starts {head[:8]!r})"
    )


# -- zip -------------------------------------------------------------------------------------


def _declared_entries(stream: BinaryIO, size: int) -> int | None:
    """The member count the end-of-central-directory record declares, before zipfile parses it."""
    # Usually the record ends the file (no archive comment): read its 22 bytes, as zipfile does,
    # and search the last 64 KiB only when it is not there (or for the ZIP64 locator before it).
    try:
        for tail in (min(size, _EOCD_SIZE), min(size, _EOCD_SEARCH)):
            stream.seek(size - tail)
            data = stream.read(tail)
            at = data.rfind(_EOCD_SIGNATURE)
            if at < 0 or at + 12 > len(data):
                continue
            entries: int = struct.unpack_from("<H", data, at + 10)[0]
            if entries != 0xFFFF:
                return entries
            # ZIP64: the count is in the zip64 end record the locator (just before) points to.
            locator = data.rfind(_ZIP64_LOCATOR_SIGNATURE, 0, at)
            if locator < 0 or locator + 16 > len(data):
                continue
            record = struct.unpack_from("<Q", data, locator + 8)[0]
            if record + 40 > size:
                return None
            stream.seek(record)
            head = stream.read(40)
            if len(head) < 40 or not head.startswith(_ZIP64_EOCD_SIGNATURE):
                return None
            zip64_entries: int = struct.unpack_from("<Q", head, 32)[0]
            return zip64_entries
        return None
    finally:
        stream.seek(0)


def _check_members(name: str, members: list[zipfile.ZipInfo], size: int) -> None:
    """Refuse member names that escape the archive, duplicates, and members that overlap."""
    seen: set[str] = set()
    for member in members:
        parts = member.filename.replace("\\", "/").split("/")
        if member.filename.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
            raise CorruptCheckpointError(name, f"zip member name {member.filename!r} points outside the archive")
        if member.filename in seen:
            raise CorruptCheckpointError(name, f"zip member {member.filename!r} appears twice")
        seen.add(member.filename)
    spans = sorted((m.header_offset, m.header_offset + _LOCAL_HEADER + m.compress_size, m.filename) for m in members)
    for (_, end, first), (next_start, _, second) in itertools.pairwise(spans):
        if end > next_start:
            raise CorruptCheckpointError(name, f"zip members {first!r} and {second!r} overlap")
    if spans and spans[-1][1] > size:
        raise CorruptCheckpointError(name, f"zip member {spans[-1][2]!r} extends past the end of the file")


def _read_zip(name: str, stream: BinaryIO, size: int, limits: Limits) -> Checkpoint:
    declared = _declared_entries(stream, size)
    if declared is not None and declared > limits.max_zip_members:
        raise LimitError(name, "max_zip_members", limits.max_zip_members)
    try:
        archive = zipfile.ZipFile(stream)
    except _ZIP_ERRORS as error:
        raise CorruptCheckpointError(name, f"broken zip archive: {error}") from None
    with archive:
        members = archive.infolist()
        if len(members) > limits.max_zip_members:
            raise LimitError(name, "max_zip_members", limits.max_zip_members)
        _check_members(name, members, size)
        pickles = [m for m in members if m.filename.count("/") == 1 and m.filename.endswith("/data.pkl")]
        if not pickles:
            raise NotACheckpointError(name, "is a zip archive without <archive>/data.pkl: not a torch checkpoint")
        if len(pickles) > 1:
            found = ", ".join(m.filename for m in pickles)
            raise CorruptCheckpointError(name, f"zip archive holds more than one data.pkl ({found})")
        prefix = pickles[0].filename[: -len("data.pkl")]
        records = {
            m.filename[len(prefix) + len("data/") :]: m for m in members if m.filename.startswith(prefix + "data/")
        }
        data = _read_member(name, archive, pickles[0], limits.max_pickle_bytes, "max_pickle_bytes")
        byteorder = "little"
        if prefix + "byteorder" in archive.NameToInfo:
            raw = _read_member(name, archive, archive.NameToInfo[prefix + "byteorder"], 16, "byteorder")
            byteorder = raw.decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise CorruptCheckpointError(name, f"unknown byte order {byteorder!r}")

        storages: dict[str, StorageInfo] = {}

        def persistent_load(pid: Any) -> StorageInfo:
            storage = _storage_record(name, pid, 5)
            record = records.get(storage.key)
            if record is None:
                raise CorruptCheckpointError(
                    name, f"storage record {prefix}data/{storage.key} is missing from the archive"
                )
            if record.file_size < storage.nbytes:
                raise CorruptCheckpointError(
                    name,
                    f"storage record {prefix}data/{storage.key} holds {record.file_size} bytes, "
                    f"the pickle says {storage.nbytes}",
                )
            return storages.setdefault(storage.key, storage)

        result = unpickle(
            data, source=name, limits=limits, interpreters=TORCH_INTERPRETERS, persistent_load=persistent_load
        )
    return Checkpoint(name, result.value, result.globals, storages, "zip", size, byteorder)


def _read_member(name: str, archive: zipfile.ZipFile, member: zipfile.ZipInfo, limit: int, what: str) -> bytes:
    if member.file_size > limit:
        raise LimitError(name, what, limit)
    try:
        with archive.open(member) as stream:
            data = stream.read(limit + 1)  # never trust the declared size alone
    except _ZIP_ERRORS as error:
        raise CorruptCheckpointError(name, f"zip member {member.filename}: {error}") from None
    if len(data) > limit:
        raise LimitError(name, what, limit)
    return data


def _storage_record(name: str, pid: Any, length: int) -> StorageInfo:
    """A storage persistent id: ('storage', StorageClass, key, location, numel[, view])."""
    if not isinstance(pid, tuple) or len(pid) != length or pid[0] != "storage":
        raise CorruptCheckpointError(name, f"persistent id {pid!r:.80} is not a storage record")
    _, storage_type, key, location, numel = pid[:5]
    dtype = storage_dtype(storage_type)
    if dtype is None:
        raise CorruptCheckpointError(name, f"persistent id names {storage_type!r:.60}, not a torch storage class")
    if not isinstance(key, str) or not key or "/" in key or "\\" in key or key in (".", ".."):
        raise CorruptCheckpointError(name, f"storage key {key!r:.60} is not a record name")
    if not isinstance(location, str) or type(numel) is not int or numel < 0:
        raise CorruptCheckpointError(name, f"storage record {key!r} has a bad location or size")
    return StorageInfo(key, dtype, numel, location)


# -- legacy ----------------------------------------------------------------------------------


def _read_legacy(name: str, stream: BinaryIO, size: int, limits: Limits) -> Checkpoint:
    data = stream.read(limits.max_pickle_bytes + 1)
    if len(data) > limits.max_pickle_bytes and size > limits.max_pickle_bytes:
        # The storages follow the pickles; only the pickles must fit.
        data = data[: limits.max_pickle_bytes]
    header = unpickle(data, source=name, limits=limits)
    if header.value != LEGACY_MAGIC_NUMBER:
        raise NotACheckpointError(name, "is a pickle, but not a torch checkpoint (no torch magic number)")
    version = unpickle(data, source=name, limits=limits, start=header.end)
    if version.value != LEGACY_PROTOCOL_VERSION:
        raise CorruptCheckpointError(name, f"legacy format with unknown protocol version {version.value!r}")
    sys_info = unpickle(data, source=name, limits=limits, start=version.end)
    if isinstance(sys_info.value, dict) and not sys_info.value.get("little_endian", True):
        byteorder = "big"
    else:
        byteorder = "little"
    storages: dict[str, StorageInfo] = {}

    def persistent_load(pid: Any) -> StorageInfo:
        storage = _storage_record(name, pid, 6)
        return storages.setdefault(storage.key, storage)

    main = unpickle(
        data,
        source=name,
        limits=limits,
        interpreters=TORCH_INTERPRETERS,
        persistent_load=persistent_load,
        start=sys_info.end,
    )
    keys = unpickle(data, source=name, limits=limits, start=main.end).value
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise CorruptCheckpointError(name, "legacy format: the storage key list is not a list of strings")
    missing = sorted(set(storages) - set(keys))
    if missing:
        raise CorruptCheckpointError(name, f"storage records {missing[:5]} are missing from the file")
    globals_ = tuple(dict.fromkeys(header.globals + sys_info.globals + main.globals))
    return Checkpoint(name, main.value, globals_, storages, "legacy", size, byteorder)
