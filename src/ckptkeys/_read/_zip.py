"""torch's zip checkpoints, read the way ``torch.load`` reads them.

``torch.load`` does not use Python's ``zipfile``: it reads the archive with miniz, through
``PyTorchStreamReader``. The two disagree on doctored archives, and a file that shows one
reader a benign pickle and the other a payload is exactly what an attacker builds. So this
module reads an archive as miniz does, and refuses (:class:`~ckptkeys.AmbiguousFileError`,
naming both readings) what readers can disagree on:

- the end record is the last ``PK\\x05\\x06`` with a whole record after it (miniz; ``zipfile``
  takes the last signature even where no record fits);
- the central directory is at the offset the end record gives (miniz) -- ``zipfile`` assumes it
  ends where the end record starts and shifts every offset when that disagrees: refused;
- the ZIP64 end record is where the locator points (miniz), ``zipfile`` reads it 56 bytes before
  the locator: refused when they differ;
- the archive's folder is the first member's, and every member must be in it
  (``PyTorchStreamReader``); a member is looked up in it with ASCII case ignored (miniz): two
  members whose names differ only in case are refused;
- an archive with a record ``<folder>/constants.pkl`` (exactly as ``PyTorchStreamReader.getAllRecords``
  names it: case counts, the name cut at 511 bytes and at a NUL byte) is a TorchScript archive:
  ``torch.load`` hands it to ``torch.jit.load``, which runs its code, so it is refused unread
  (:class:`~ckptkeys.TorchScriptArchiveError`);
- a member miniz "extracts" without writing a byte (a directory, or 0 compressed bytes) while it
  declares some: torch would read an uninitialised buffer, so it is refused;
- as in miniz, CRC-32s, "version needed" and the local header's copy of the name are not
  checked (torch loads such files); a member's data starts after the local header's own name
  and extra field.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from dataclasses import dataclass

from ._errors import (
    AmbiguousFileError,
    CorruptCheckpointError,
    LimitError,
    NotACheckpointError,
    TorchScriptArchiveError,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO, Final

    from ._limits import Limits

__all__ = ["LOCAL_HEADER_SIZE", "Archive", "Member", "open_archive"]

LOCAL_SIGNATURE: Final = b"PK\x03\x04"  # torch.serialization._is_zipfile: the file starts with it
_END_SIGNATURE: Final = b"PK\x05\x06"
_END_SIZE: Final = 22
_ZIP64_LOCATOR_SIGNATURE: Final = b"PK\x06\x07"
_ZIP64_LOCATOR_SIZE: Final = 20
_ZIP64_END_SIGNATURE: Final = b"PK\x06\x06"
_ZIP64_END_SIZE: Final = 56
_CENTRAL_SIGNATURE: Final = b"PK\x01\x02"
_CENTRAL_SIZE: Final = 46
_LOCAL_SIZE: Final = 30
LOCAL_HEADER_SIZE: Final = _LOCAL_SIZE  # a local header before its name and extra field
# miniz scans the file backwards in 4 KiB blocks for the end record, and gives up once it has
# looked 64 KiB + 22 bytes back (the largest comment).
_SCAN_BLOCK: Final = 4096
_SCAN_REACH: Final = 0xFFFF + _END_SIZE
_END: Final = struct.Struct("<4s4H2LH")
_ZIP64_LOCATOR: Final = struct.Struct("<4sLQL")
_ZIP64_END: Final = struct.Struct("<4sQ2H2L4Q")
_CENTRAL: Final = struct.Struct("<4s4B4HL2L5H2L")
_LOCAL: Final = struct.Struct("<4s5H3L2H")
_U16: Final = struct.Struct("<H")
_U64: Final = struct.Struct("<Q")
_MAX32: Final = 0xFFFFFFFF
_STORED: Final = 0
_DEFLATED: Final = 8
# General-purpose flags miniz will not extract: encrypted, compressed patch data, strong encryption.
_UNREADABLE_FLAGS: Final = 0x0001 | 0x0020 | 0x0040
_DOS_DIRECTORY: Final = 0x10
# torch.serialization._is_torchscript_zip: the record that makes torch.load call torch.jit.load.
_TORCHSCRIPT_RECORD: Final = b"constants.pkl"
# PyTorchStreamReader.getAllRecords reads each name into MZ_ZIP_MAX_ARCHIVE_FILENAME_SIZE (512) bytes.
_MAX_RECORD_NAME: Final = 511


@dataclass(frozen=True, slots=True)
class Member:
    """One entry of the central directory, as miniz reads it."""

    raw_name: bytes
    method: int
    flags: int
    compressed_size: int
    size: int
    header_offset: int
    is_directory: bool

    @property
    def name(self) -> str:
        """The name for messages (zip names are bytes; torch writes UTF-8)."""
        return self.raw_name.decode("utf-8", "replace")


@dataclass(slots=True)
class Archive:
    """The central directory of one zip checkpoint, and torch's view of it."""

    path: str
    stream: BinaryIO
    size: int
    members: list[Member]
    folder: bytes
    """The folder every record is looked up in: the first member's (``PyTorchStreamReader``)."""
    _index: dict[bytes, Member]
    defects: list[str]
    """What is wrong with the archive that miniz does not check (inconsistent sizes, members that
    overlap or end past the file, a name with a NUL byte or one that points outside): the reader
    still reads the pickle torch would read, for its globals, then refuses the file with the
    first of these."""

    def find(self, record: str) -> Member | None:
        """The member ``torch.load`` reads for ``<folder>/<record>`` (ASCII case ignored, as miniz)."""
        return self._index.get((self.folder + b"/" + record.encode("utf-8")).lower())

    def read(self, member: Member, limit: int, what: str) -> bytes:
        """The member's bytes as miniz extracts them (stored or deflated), at most ``limit``."""
        if member.size > limit:
            raise LimitError(self.path, what, limit)
        if member.size and (member.is_directory or not member.compressed_size):
            # mz_zip_reader_extract_to_mem returns at once, writing nothing, for a directory or
            # a member of 0 compressed bytes, and PyTorchStreamReader::getRecord hands torch the
            # buffer it allocated for the declared size: whatever that memory held.
            kind = "is marked as a directory" if member.is_directory else "declares 0 compressed bytes"
            raise AmbiguousFileError(
                self.path,
                f"zip member {member.name!r} {kind} and {member.size} bytes",
                (
                    f"torch (miniz) extracts none of them and reads an uninitialised buffer of {member.size} bytes",
                    "no reader can know those bytes",
                ),
            )
        if member.is_directory:  # an empty record torch reads as b"": no pickle, no byte order
            raise CorruptCheckpointError(self.path, f"zip member {member.name!r} is marked as a directory")
        if member.flags & _UNREADABLE_FLAGS:
            raise CorruptCheckpointError(self.path, f"zip member {member.name!r} is encrypted or a patch")
        if member.method not in (_STORED, _DEFLATED):
            raise CorruptCheckpointError(
                self.path, f"zip member {member.name!r} uses compression method {member.method}"
            )
        start = self.data_offset(member)
        if member.method == _STORED:
            raw = self._at(start, member.size)  # miniz reads the uncompressed size of a stored member
            if len(raw) != member.size:
                raise CorruptCheckpointError(self.path, f"zip member {member.name!r} extends past the end of the file")
            return raw
        raw = self._at(start, member.compressed_size)
        inflater = zlib.decompressobj(-15)
        try:
            data = inflater.decompress(raw, member.size + 1)  # never trust the declared size alone
        except zlib.error as error:
            # miniz's own inflater is more lenient than zlib (it reads a distance "too far back"
            # from its window, for one): torch may still inflate the member and unpickle it.
            raise AmbiguousFileError(
                self.path,
                f"zip member {member.name!r} is a deflate stream zlib refuses ({error})",
                ("torch (miniz's inflater) may inflate it all the same", "zlib, and ckptkeys, cannot"),
            ) from None
        if len(data) > member.size:
            # miniz inflates into torch's buffer of the declared size and stops when it is full
            # (TINFL_STATUS_HAS_MORE_OUTPUT sets no zip error, and getRecord checks only that):
            # torch reads the first bytes, so they are read too, and the file refused after.
            declared = f"the {member.size} bytes declared"
            self.defects.append(f"zip member {member.name!r:.80} inflates to more than {declared}")
            return data[: member.size]
        if len(data) != member.size:  # miniz: MZ_ZIP_UNEXPECTED_DECOMPRESSED_SIZE, torch fails
            raise CorruptCheckpointError(
                self.path, f"zip member {member.name!r} inflates to fewer than the {member.size} bytes declared"
            )
        return data

    def data_offset(self, member: Member) -> int:
        """Where the member's data start, as miniz finds them: after the local header's own name and extra field."""
        header = self._at(member.header_offset, _LOCAL_SIZE)
        if len(header) < _LOCAL_SIZE or not header.startswith(LOCAL_SIGNATURE):
            raise CorruptCheckpointError(self.path, f"zip member {member.name!r} has no local header")
        fields = _LOCAL.unpack(header)
        start: int = member.header_offset + _LOCAL_SIZE + fields[9] + fields[10]
        if start + member.compressed_size > self.size:
            raise CorruptCheckpointError(self.path, f"zip member {member.name!r} extends past the end of the file")
        return start

    def _at(self, offset: int, n: int) -> bytes:
        return _read_at(self.stream, offset, n)


def _read_at(stream: BinaryIO, offset: int, n: int) -> bytes:
    stream.seek(offset)
    return stream.read(n)


def _find_end_record(stream: BinaryIO, size: int) -> int | None:
    """Where miniz finds the end record: the last signature with 22 bytes after it, scanning back."""
    if size < _END_SIZE:
        return None
    stream.seek(size - _END_SIZE)
    if stream.read(4) == _END_SIGNATURE:  # no archive comment: the usual case, one small read
        return size - _END_SIZE
    # miniz's block loop, on one read of everything it can reach.
    floor = max(size - _SCAN_BLOCK, 0)
    while floor and size - floor < _SCAN_REACH:
        floor = max(floor - (_SCAN_BLOCK - 3), 0)
    stream.seek(floor)
    tail = stream.read(size - floor)
    at = tail.rfind(_END_SIGNATURE, 0, len(tail) - _END_SIZE + 4)
    return floor + at if at >= 0 else None


def open_archive(path: str, stream: BinaryIO, size: int, limits: Limits) -> Archive:
    """Read the central directory as miniz does; refuse what readers disagree on."""
    end_at = _find_end_record(stream, size)
    if end_at is None:
        raise CorruptCheckpointError(path, "broken zip archive: no end-of-central-directory record")
    stream.seek(end_at)
    end = _END.unpack(stream.read(_END_SIZE))
    disk, cdir_disk, entries_here, entries, cdir_size, cdir_offset = end[1:7]
    directory_end = end_at  # where the central directory should stop
    if end_at >= _ZIP64_LOCATOR_SIZE + _ZIP64_END_SIZE:
        stream.seek(end_at - _ZIP64_LOCATOR_SIZE)
        locator = _ZIP64_LOCATOR.unpack(stream.read(_ZIP64_LOCATOR_SIZE))
        if locator[0] == _ZIP64_LOCATOR_SIGNATURE:
            record_at, disks = locator[2], locator[3]
            expected = end_at - _ZIP64_LOCATOR_SIZE - _ZIP64_END_SIZE
            if record_at > size - _ZIP64_END_SIZE:
                raise CorruptCheckpointError(path, "broken zip archive: the ZIP64 locator points past the file")
            # miniz takes the record the locator points to, zipfile the one just before the
            # locator; each only if its signature is there, else the plain end record.
            record = _ZIP64_END.unpack(_read_at(stream, record_at, _ZIP64_END_SIZE))
            theirs = _read_at(stream, expected, 4)
            if record_at != expected and _ZIP64_END_SIGNATURE in (record[0], theirs):
                raise AmbiguousFileError(
                    path,
                    "two ZIP64 end records",
                    (
                        f"torch (miniz) reads the one at byte {record_at}, where the locator points",
                        f"Python's zipfile reads the one at byte {expected}, just before the locator",
                    ),
                )
            if record[0] == _ZIP64_END_SIGNATURE:
                if record[1] < _ZIP64_END_SIZE - 12 or disks != 1:
                    raise CorruptCheckpointError(path, "broken zip archive: bad ZIP64 end record")
                disk, cdir_disk, entries_here, entries, cdir_size, cdir_offset = record[4:10]
                directory_end = record_at
    if entries > limits.max_zip_members:  # before a byte of the directory is parsed
        raise LimitError(path, "max_zip_members", limits.max_zip_members)
    if entries != entries_here or ((disk | cdir_disk) != 0 and (disk, cdir_disk) != (1, 1)):
        raise CorruptCheckpointError(path, "broken zip archive: multi-disk archives are not supported")
    if cdir_size < entries * _CENTRAL_SIZE or cdir_offset + cdir_size > size:
        raise CorruptCheckpointError(path, "broken zip archive: the central directory does not fit in the file")
    if cdir_offset + cdir_size != directory_end:
        shift = directory_end - cdir_size - cdir_offset
        raise AmbiguousFileError(
            path,
            "the central directory is not where the end record says",
            (
                f"torch (miniz) reads it at byte {cdir_offset}",
                f"Python's zipfile at byte {cdir_offset + shift}, with every member shifted by {shift} bytes",
            ),
        )
    stream.seek(cdir_offset)
    directory = stream.read(cdir_size)
    unusable: list[str] = []
    members = _parse_directory(path, directory, entries, unusable)
    if not members:
        raise NotACheckpointError(path, "is an empty zip archive: not a torch checkpoint")
    first = members[0].raw_name
    slash = first.find(b"/")
    if slash < 0:  # PyTorchStreamReader's constructor refuses it too
        raise NotACheckpointError(path, f"is a zip archive whose first member {members[0].name!r} is in no folder")
    folder = first[: slash + 1]
    if b"\0" in folder:
        # PyTorchStreamReader compares names with the folder as C strings, up to that NUL byte:
        # what torch takes for a record (a TorchScript one included) then depends on stale bytes.
        raise AmbiguousFileError(
            path,
            f"the archive's folder name {first[:slash]!r:.80} holds a NUL byte",
            (
                "torch (PyTorchStreamReader) compares member names with it only up to the NUL",
                "a reader of the whole name sees other records",
            ),
        )
    # Every name is in the directory's bytes: one search spares the walk over a torch.save archive.
    script = _torchscript_record(members, folder) if _TORCHSCRIPT_RECORD in directory else None
    if script is not None:  # torch.load dispatches before it reads anything else
        raise TorchScriptArchiveError(path, script.name)
    index: dict[bytes, Member] = {}
    for member in members:
        key = member.raw_name.lower()  # ASCII only, as miniz's MZ_TOLOWER
        other = index.setdefault(key, member)
        if other is not member:
            same = other.raw_name == member.raw_name
            raise AmbiguousFileError(
                path,
                f"zip member {member.name!r} appears twice" if same else "two members whose names differ only in case",
                (
                    f"torch (miniz, case ignored) may read either {other.name!r} or {member.name!r}",
                    "another reader the first or the last one" if same else "a case-sensitive reader the one asked for",
                ),
            )
    defects = [f"zip member {name!r:.80} has no usable ZIP64 extra field" for name in unusable]
    defects += _defects(members, size)
    for member in members:  # PyTorchStreamReader refuses the archive otherwise (case counts here)
        if not member.raw_name.startswith(folder):
            raise CorruptCheckpointError(
                path, f"zip member {member.name!r} is outside the archive's folder {members[0].name[:slash]!r}"
            )
    return Archive(path, stream, size, members, first[:slash], index, defects)


def _torchscript_record(members: list[Member], folder: bytes) -> Member | None:
    """The member that makes ``torch.load`` take the archive for TorchScript, as torch finds it.

    ``torch.serialization._is_torchscript_zip`` asks whether ``"constants.pkl"`` is among
    ``PyTorchStreamReader.getAllRecords()``: each name copied into a 512-byte C buffer (cut at
    511 bytes and at a NUL byte), the folder stripped, and compared exactly (case counts, no
    nested path). ``getAllRecords`` throws on a name outside the folder and its caller on a name
    that is not UTF-8; ``torch.load`` then fails before running anything, and so no member counts.
    """
    found = None
    for member in members:
        name = member.raw_name[:_MAX_RECORD_NAME]
        nul = name.find(b"\0")
        if nul >= 0:
            name = name[:nul]
        if not name.startswith(folder):
            return None
        record = name[len(folder) :]
        if record == _TORCHSCRIPT_RECORD:
            found = found or member
        elif not record.isascii():
            try:
                record.decode("utf-8")
            except UnicodeDecodeError:
                return None
    return found


def _parse_directory(path: str, directory: bytes, entries: int, unusable: list[str]) -> list[Member]:
    members: list[Member] = []
    at = 0
    for _ in range(entries):
        if at + _CENTRAL_SIZE > len(directory) or directory[at : at + 4] != _CENTRAL_SIGNATURE:
            raise CorruptCheckpointError(path, f"broken zip archive: bad central directory entry {len(members)}")
        fields = _CENTRAL.unpack_from(directory, at)
        flags, method = fields[5], fields[6]
        compressed, plain = fields[10], fields[11]
        name_len, extra_len, comment_len = fields[12], fields[13], fields[14]
        external, offset = fields[17], fields[18]
        total = _CENTRAL_SIZE + name_len + extra_len + comment_len
        if at + total > len(directory):
            raise CorruptCheckpointError(path, f"broken zip archive: central directory entry {len(members)} is cut off")
        name = directory[at + _CENTRAL_SIZE : at + _CENTRAL_SIZE + name_len]
        if _MAX32 in (compressed, plain, offset):
            extra = directory[at + _CENTRAL_SIZE + name_len : at + _CENTRAL_SIZE + name_len + extra_len]
            sizes = _zip64_sizes(extra, plain, compressed, offset)
            if sizes is None:
                # miniz keeps the 32-bit values (and fails on the member only when it is read):
                # torch unpickles data.pkl first, so its globals are read before the refusal.
                unusable.append(name.decode("utf-8", "replace"))
            else:
                plain, compressed, offset = sizes
        is_directory = name.endswith(b"/") or bool(external & _DOS_DIRECTORY)
        members.append(Member(name, method, flags, compressed, plain, offset, is_directory))
        at += total
    return members


def _zip64_sizes(extra: bytes, plain: int, compressed: int, offset: int) -> tuple[int, int, int] | None:
    """The 64-bit sizes and offset of the ZIP64 extra field, for the 32-bit fields that say 0xFFFFFFFF.

    None if there is no such field, or it is too short.
    """
    at = 0
    while at + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, at)
        if tag == 0x0001:
            body = extra[at + 4 : at + 4 + length]
            values = [plain, compressed, offset]
            read = 0
            for i, value in enumerate(values):
                if value == _MAX32:
                    if read + 8 > len(body):
                        break
                    values[i] = _U64.unpack_from(body, read)[0]
                    read += 8
            else:
                return values[0], values[1], values[2]
            break
        at += 4 + length
    return None


def _defects(members: list[Member], size: int) -> list[str]:
    """Inconsistent sizes, names with a NUL byte or that point outside, members that overlap or end past the file."""
    found = []
    for member in members:
        name = member.name
        if (member.method == _STORED and member.size != member.compressed_size) or (
            member.size and not member.compressed_size
        ):
            found.append(f"zip member {name!r:.80} declares inconsistent sizes")
        elif member.is_directory and member.size:
            # miniz extracts a directory as nothing: a storage record read from it would hold
            # whatever torch's freshly allocated buffer held.
            found.append(f"zip member {name!r:.80} is marked as a directory, yet declares {member.size} bytes")
        if member.header_offset + _LOCAL_SIZE + member.compressed_size > size:
            found.append(f"zip member {name!r:.80} extends past the end of the file")
        parts = name.replace("\\", "/").split("/")
        if "\0" in name:
            found.append(f"zip member name {name!r:.80} holds a NUL byte")
        elif name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
            found.append(f"zip member name {name!r} points outside the archive")
    spans = sorted(
        (m.header_offset, m.header_offset + _LOCAL_SIZE + m.compressed_size, i) for i, m in enumerate(members)
    )
    for (_, end, first), (next_start, _, second) in itertools.pairwise(spans):
        if end > next_start:
            found.append(f"zip members {members[first].name!r} and {members[second].name!r} overlap")
    return found
