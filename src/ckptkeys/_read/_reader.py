"""``read()``: the structure of one checkpoint file, without torch and without running it.

``torch.load`` knows three container formats and tells them apart as it does here: a file
that starts with a zip local header is torch's zip format (torch >= 1.6): ``<folder>/data.pkl``
holds the pickled structure, ``<folder>/data/<key>`` one record per storage,
``<folder>/byteorder`` the byte order; a zip with a ``<folder>/constants.pkl`` record is a
TorchScript archive, which torch hands to ``torch.jit.load`` to compile and run, and is
refused unread (:class:`~ckptkeys.TorchScriptArchiveError`). Any other file torch first tries
as its pre-1.0 *tar* format, which is refused here (:class:`~ckptkeys.UnsupportedFormatError`), then as the *legacy*
format: five pickles in a row (magic number, protocol version, system info, the structure, the
storage keys) followed by the raw storages. Every pickle torch would unpickle is read by the inert
machine in ``_pickle``, and the globals of all of them are reported; the zip directory is read as
torch reads it (``_zip``). Storage records are never read.
"""

from __future__ import annotations

import io
import mmap
import os
import tarfile
from dataclasses import dataclass
from typing import cast

from ._errors import (
    AmbiguousFileError,
    CorruptCheckpointError,
    LimitError,
    NotACheckpointError,
    ReadError,
    UnsupportedFormatError,
)
from ._files import open_regular
from ._globalref import GlobalRef
from ._limits import INFLATE_ALLOWANCE, Limits
from ._pickle import Opaque, PersistentRef, Unpickled, unpickle
from ._ranged import RangedStream
from ._repr import counted, nbytes, one_line
from ._safetensors import looks_like_safetensors
from ._source import HEAD_BYTES, TAIL_BYTES, RemoteObject, is_url, local_only, open_remote
from ._torch import TORCH_INTERPRETERS, StorageInfo, TensorInfo, legacy_find_class, storage_dtype, zip_find_class
from ._zip import LOCAL_HEADER_SIZE, LOCAL_SIGNATURE, Member, open_archive

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, BinaryIO, Final, Literal

__all__ = ["Checkpoint", "read", "read_inside", "read_object", "read_object_records"]

# torch.serialization.MAGIC_NUMBER and PROTOCOL_VERSION of the legacy format.
LEGACY_MAGIC_NUMBER: Final = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION: Final = 1001
# Bytes shown in the error for a file that is no checkpoint.
_SNIFF_BYTES: Final = 8
# The zip compression method of a deflated member.
_DEFLATED: Final = 8
# The byte orders torch.load accepts in <folder>/byteorder, exactly.
_BYTEORDERS: Final = {b"little": "little", b"big": "big"}


@dataclass(frozen=True, slots=True, repr=False)
class Checkpoint:
    """One checkpoint file, read: its structure and what the pickle names.

    Its repr is one line (path, format, size, tensors, storages, globals); the structure is
    :attr:`data`: ``pprint.pprint(checkpoint.data)`` shows it whole.
    """

    path: str
    data: Any
    """The structure: dicts (OrderedDict kept), lists, tuples, scalars, strings,
    :class:`TensorInfo` for tensors and :class:`Opaque` records for every other object."""
    globals: tuple[GlobalRef, ...]
    """Every global the pickle names, in order of first mention (what ``torch.load`` would import)."""
    storages: dict[Any, StorageInfo]
    """The storages the tensors refer to, by their key as pickled (``StorageInfo.pickled_key``):
    torch's own dict of them, so keys ``2`` and ``'2'`` are two storages of one record."""
    format: Literal["zip", "legacy"]
    size: int
    """The file's size in bytes."""
    byteorder: str = "little"
    """The byte order the file declares (the zip's ``byteorder`` record, the legacy system info)."""
    storages_end: int | None = None
    """Legacy format: where the raw storages after the pickles end, as the pickles declare them
    (an 8-byte size, then the bytes, per listed storage): beyond :attr:`size` when the file was cut
    short. ``None`` for the zip format, whose records the zip directory locates."""

    def __repr__(self) -> str:
        return one_line(
            self,
            self.path,
            (
                self.format,
                nbytes(self.size),
                counted(_count_tensors(self.data), "tensor"),
                counted(len(self.storages), "storage"),
                counted(len(self.globals), "global"),
            ),
        )


def _count_tensors(data: Any) -> int:
    """The tensors in a structure, each counted once however often it is referred to."""
    seen: set[int] = set()
    stack = [data]
    tensors = 0
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, TensorInfo):
            tensors += 1
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        elif isinstance(item, Opaque):
            stack.extend((item.args, item.kwargs, item.state, item.items, item.dict_items))
    return tensors


def read(
    path: str | os.PathLike[str], *, limits: Limits | None = None, storage_options: Mapping[str, Any] | None = None
) -> Checkpoint:
    """Read the structure of the checkpoint file at ``path``: a local path, or a URL (``s3://``, ``gs://``, ...).

    A URL is read by byte ranges through fsspec (``pip install fsspec``, the ``remote`` extra and the store's
    package, such as s3fs), passing it ``storage_options``: the zip end records and central directory
    and the pickle, never the tensors' bytes (docs/remote.md); an object that changes while it is
    read is refused (a ``ReadError`` saying it "changed while being read").

    Nothing named in the file is imported or called, no tensor byte is read, and nothing is
    written. Errors derive from :class:`~ckptkeys.ReadError` and name the file:
    :class:`~ckptkeys.NotACheckpointError`, :class:`~ckptkeys.CorruptCheckpointError` (and its
    :class:`~ckptkeys.AmbiguousFileError`, for a file readers disagree on),
    :class:`~ckptkeys.UnsupportedFormatError` (torch's tar format; its
    :class:`~ckptkeys.TorchScriptArchiveError`, a TorchScript archive), :class:`~ckptkeys.LimitError`,
    or ``ReadError`` itself when the file cannot be opened. An error raised after a pickle named
    globals carries them in ``globals``: ``torch.load`` would have imported them before failing.
    """
    if is_url(path):
        assert isinstance(path, str)  # is_url says so
        return _read_remote(path, limits or Limits(), storage_options)
    local_only(os.fspath(path), storage_options)
    return read_inside(path, None, limits=limits)


def read_inside(path: str | os.PathLike[str], boundary: str | None, *, limits: Limits | None = None) -> Checkpoint:
    """:func:`read`, opening ``path`` only if its real path lies inside the folder ``boundary``
    (a real path): a folder's file replaced by a symlink out of it after the folder was listed is
    refused when it is opened, not read."""
    name = os.fspath(path)
    limits = limits or Limits()
    try:
        # A FIFO or device is refused, never waited on; a symlink out of ``boundary`` is not followed.
        with io.BufferedReader(open_regular(name, boundary=boundary)) as stream:
            size = os.fstat(stream.fileno()).st_size
            head = stream.read(len(LOCAL_SIGNATURE))
            if head == LOCAL_SIGNATURE:  # torch.serialization._is_zipfile
                return _read_zip(name, stream, size, limits)
            if not head:
                raise NotACheckpointError(name, "is empty")
            _refuse_tar(name, stream)
            return _read_legacy(name, stream, size, limits)
    except ReadError:
        raise
    except OSError as error:
        raise ReadError(name, f"cannot be read: {error.strerror or error}") from None


def _read_remote(url: str, limits: Limits, storage_options: Mapping[str, Any] | None) -> Checkpoint:
    """:func:`read` of a URL: one ``info()``, then :func:`read_object`."""
    return read_object(open_remote(url, storage_options), limits)


def read_object(source: RemoteObject, limits: Limits) -> Checkpoint:
    """:func:`read` of a remote object (from :func:`open_remote`, or a folder's listing: no HEAD):
    the head and the tail in one round of ranged GETs, then only what they miss."""
    return read_object_records(source, limits)[0]


def read_object_records(source: RemoteObject, limits: Limits) -> tuple[Checkpoint, str | None]:
    """:func:`read_object`, and why a storage record of the zip ends past the object (None if
    none is found): what ``validate`` checks of a local file by reading the record's local
    header, here while the object's head and tail are held (see :func:`_record_ends`)."""
    url = source.url
    ranged = RangedStream(source)
    stream = cast("BinaryIO", ranged)  # a seekable binary file, as the readers want
    size = source.size
    try:
        ranged.prefetch([(0, HEAD_BYTES), (size - TAIL_BYTES, size)])
        head = stream.read(len(LOCAL_SIGNATURE))
        if head == LOCAL_SIGNATURE:
            checkpoint = _read_zip(url, stream, size, limits)
            records = _record_ends(url, ranged, checkpoint, limits)
        elif not head:
            raise NotACheckpointError(url, "is empty")
        else:
            _refuse_tar(url, stream)
            checkpoint = _read_legacy_remote(url, stream, size, limits)
            records = None  # its storages' extent is checkpoint.storages_end, as for a local file
    except ReadError as error:
        if error.path == url and "changed while being read" not in error.reason:
            source.confirm()  # a file refused because it changed is refused as changed
        raise
    source.confirm()
    return checkpoint, records


# torch.save aligns each record's data to 64 bytes by the local header's extra field: 4 bytes of
# field header and fewer than 64 of padding.
_ALIGNMENT_EXTRA: Final = 4 + 63


def _record_ends(url: str, ranged: RangedStream, checkpoint: Checkpoint, limits: Limits) -> str | None:
    """Why a storage record ends past the object, as a local file's check says it, or None.

    A record's data start after its local header's name and extra field, so where they end is
    exact only from that header. Headers the head and tail hold are read exactly; for the others
    the central directory bounds the end: at least ``header + 30 + data`` (past the object: the
    header is fetched, exactly), at most ``header + 30 + name + 67 + data`` with torch's alignment
    padding (inside the object: it fits, no GET). Only a header between the two bounds is fetched,
    all of them in one round; a torch file has none (its last record is followed by others).
    """
    if not checkpoint.storages:
        return None
    stream = cast("BinaryIO", ranged)
    archive = open_archive(url, stream, checkpoint.size, limits)  # the directory: held already
    members = [m for s in checkpoint.storages.values() if (m := archive.find(f"data/{s.key}")) is not None]
    unsettled = []
    for member in members:
        header = (member.header_offset, member.header_offset + LOCAL_HEADER_SIZE)
        most = header[1] + len(member.raw_name) + _ALIGNMENT_EXTRA + member.compressed_size
        if not ranged.holds(*header) and most > checkpoint.size:
            unsettled.append(header)
    ranged.prefetch(unsettled)
    for member in members:
        if ranged.holds(member.header_offset, member.header_offset + LOCAL_HEADER_SIZE):
            try:
                archive.data_offset(member)  # raises for a record that ends past the object
            except CorruptCheckpointError as error:
                return error.reason
    return None


def _read_legacy_remote(name: str, stream: BinaryIO, size: int, limits: Limits) -> Checkpoint:
    """The legacy format's pickles from a remote object: its first bytes, four times more while the
    pickles run past them, up to ``max_pickle_bytes`` (the storages after the pickles are never fetched)."""
    bound = min(size, limits.max_pickle_bytes)
    length = min(bound, HEAD_BYTES)
    while True:
        stream.seek(0)
        data = stream.read(length)
        try:
            return _read_legacy_pickles(name, data, size, limits)
        except CorruptCheckpointError as error:
            # Reading stopped at the end of what was fetched: fetch more; any other stop is the file's.
            if length >= bound or "truncated" not in error.reason:
                raise
        length = min(bound, length * 4)


# -- zip -------------------------------------------------------------------------------------


def _read_zip(name: str, stream: BinaryIO, size: int, limits: Limits) -> Checkpoint:
    archive = open_archive(name, stream, size, limits)
    folder = archive.folder.decode("utf-8", "replace")
    pickle_member = archive.find("data.pkl")
    if pickle_member is None:
        raise NotACheckpointError(name, f"is a zip archive without {folder}/data.pkl: not a torch checkpoint")
    byteorder = "little"
    byteorder_member = archive.find("byteorder")
    if isinstance(stream, RangedStream):  # remote: the records read next, in one GET if not held yet
        stream.prefetch(_record_span(pickle_member, byteorder_member, limits))
    if byteorder_member is not None:  # torch checks it before unpickling
        raw = archive.read(byteorder_member, 16, "byteorder")
        if raw not in _BYTEORDERS:
            raise CorruptCheckpointError(name, f"unknown byte order {raw!r:.40}")
        byteorder = _BYTEORDERS[raw]
    # Reading costs time by the pickle's size: a deflated one must not be a small file's bomb. Its
    # declared size bounds what is inflated (miniz stops there, and so does _zip).
    inflatable = max(INFLATE_ALLOWANCE, limits.max_inflate_ratio * pickle_member.compressed_size)
    if pickle_member.method == _DEFLATED and inflatable < pickle_member.size <= limits.max_pickle_bytes:
        raise LimitError(name, "max_inflate_ratio", limits.max_inflate_ratio)
    data = archive.read(pickle_member, limits.max_pickle_bytes, "max_pickle_bytes")
    # torch.load's loaded_storages: by the key exactly as pickled (2 and '2' are two storages,
    # read from the one record data/2, each with its own dtype); empty storages are not kept.
    storages: dict[Any, StorageInfo] = {}
    loaded: dict[Any, StorageInfo] = {}
    # What torch may not check is found, the pickle is still read to its end for its globals,
    # and then the file is refused with the first defect.
    defects = list(archive.defects)

    def persistent_load(pid: Any) -> StorageInfo:
        key, storage = _storage_record(name, pid, 5)
        found = loaded.get(key)
        if found is not None:
            return found
        record = archive.find(f"data/{storage.key}")
        if record is None:
            raise CorruptCheckpointError(
                name, f"storage record {folder}/data/{storage.key} is missing from the archive"
            )
        if record.size != storage.nbytes:  # torch.load refuses a record of any other size
            record_name = f"{folder}/data/{storage.key}"
            defects.append(f"storage record {record_name} holds {record.size} bytes, the pickle says {storage.nbytes}")
        if storage.nbytes:
            loaded[key] = storage
        storages.setdefault(key, storage)
        return storage  # an empty one is read again at every mention, with that mention's dtype

    result = unpickle(
        data,
        source=name,
        limits=limits,
        interpreters=TORCH_INTERPRETERS,
        persistent_load=persistent_load,
        find_class=zip_find_class,
    )
    if defects:
        error = CorruptCheckpointError(name, defects[0])
        error.globals = result.globals
        raise error
    return Checkpoint(name, result.value, result.globals, storages, "zip", size, byteorder)


# Room for a local header's own name and extra field (torch pads its records to 64 bytes) beyond
# what the central directory says; a larger one is fetched when read.
_LOCAL_HEADER_ROOM: Final = 30 + 4096


def _record_span(pickle: Member, byteorder: Member | None, limits: Limits) -> list[tuple[int, int]]:
    """Where data.pkl and byteorder lie, local headers included: the ranges a remote read fetches
    together (merged when they touch: torch writes the two next to each other). A record the
    limits refuse unread (larger than ``max_pickle_bytes``, a byteorder of more than 16 bytes) is
    left out: it is never fetched."""
    wanted = [(pickle, limits.max_pickle_bytes), (byteorder, 16)]
    spans = []
    for member, limit in wanted:
        if member is not None and max(member.size, member.compressed_size) <= limit:
            start = member.header_offset
            spans.append((start, start + _LOCAL_HEADER_ROOM + len(member.raw_name) + member.compressed_size))
    return spans


# Types of storage key whose record name (f"data/{key}") is known without running anything.
_KEY_TYPES: Final = (str, int, float, bytes, type(None))


def _storage_record(name: str, pid: Any, length: int) -> tuple[Any, StorageInfo]:
    """A storage persistent id, ('storage', StorageClass, key, location, numel[, view]), read as
    torch's ``persistent_load`` reads it: the key as pickled (for its ``loaded_storages``) and the
    storage. torch decodes a bytes type name or location as ASCII, uses the key itself as the
    dict key and ``f"data/{key}"`` as the record name (a C string in its zip reader: it ends at
    the first NUL)."""
    if not isinstance(pid, tuple) or len(pid) != length:
        raise CorruptCheckpointError(name, f"persistent id {pid!r:.80} is not a storage record")
    typename, storage_type, key, location, numel = pid[:5]
    try:
        typename = _ascii(typename)
        location = _ascii(location)
    except UnicodeDecodeError:
        raise CorruptCheckpointError(name, f"persistent id {pid!r:.80} holds bytes that are not ASCII") from None
    if typename != "storage":
        raise CorruptCheckpointError(name, f"persistent id {pid!r:.80} is not a storage record")
    dtype = storage_dtype(storage_type)
    if dtype is None:
        raise CorruptCheckpointError(name, f"persistent id names {storage_type!r:.60}, not a torch storage class")
    if not isinstance(key, _KEY_TYPES):
        raise CorruptCheckpointError(name, f"storage key {key!r:.60} is a {type(key).__name__}: its record is unknown")
    record = str(key).split("\x00", 1)[0]  # str() is f"{key}" for these types (b'2' for bytes)
    try:
        record.encode("utf-8")
    except UnicodeEncodeError:  # torch's zip reader takes UTF-8: the encoding fails there too
        raise CorruptCheckpointError(name, f"storage key {key!r:.60} cannot be a record name") from None
    if not isinstance(location, str) or not isinstance(numel, int) or numel < 0:
        raise CorruptCheckpointError(name, f"storage record {record!r} has a bad location or size")
    return key, StorageInfo(record, dtype, int(numel), location, key)


def _ascii(value: Any) -> Any:
    # torch.serialization._maybe_decode_ascii
    return value.decode("ascii") if isinstance(value, bytes) else value


# -- tar -------------------------------------------------------------------------------------


def _refuse_tar(name: str, stream: BinaryIO) -> None:
    """Refuse what torch.load would read as its tar format: whatever tarfile opens."""
    stream.seek(0)
    try:
        # What torch.serialization._legacy_load does first; reading the first header runs nothing.
        with tarfile.open(fileobj=stream, mode="r:", format=tarfile.PAX_FORMAT) as archive:
            first = archive.next()  # the member tarfile.open just read
    except tarfile.TarError:  # torch then goes on to the legacy pickles, as we do
        return
    except Exception:
        return
    finally:
        stream.seek(0)
    member = first.name if first is not None else "none"
    raise UnsupportedFormatError(
        name,
        f"is a tar archive (first member {member!r:.60}): torch.load reads it as its pre-1.0 tar format "
        "and unpickles its members 'storages', 'tensors' and 'pickle', which ckptkeys does not read; "
        "treat it as unverified and never load it with weights_only=False",
    )


# -- legacy ----------------------------------------------------------------------------------


def _read_legacy(name: str, stream: BinaryIO, size: int, limits: Limits) -> Checkpoint:
    try:
        fileno = stream.fileno()
    except (OSError, ValueError):  # an in-memory stream (io.UnsupportedOperation is both)
        stream.seek(0)
        return _read_legacy_pickles(name, stream.read(min(size, limits.max_pickle_bytes)), size, limits)
    # Mapped, not read: only the pickles at the start are looked at, whatever the file's size.
    with mmap.mmap(fileno, 0, access=mmap.ACCESS_READ) as data:
        return _read_legacy_pickles(name, data, size, limits)


def _read_legacy_pickles(name: str, data: bytes | mmap.mmap, size: int, limits: Limits) -> Checkpoint:
    stop = min(size, limits.max_pickle_bytes)  # the storages follow the pickles; only the pickles must fit
    named: dict[GlobalRef, None] = {}
    storages: dict[Any, StorageInfo] = {}

    def persistent_load(pid: Any) -> Any:
        if isinstance(pid, tuple) and len(pid) >= 2 and pid[0] == "module":
            # A module class saved with its source (torch < 1.6 pickling whole nn.Modules):
            # torch.load returns the class, named by a global the pickle already reported.
            return pid[1]
        key, storage = _storage_record(name, pid, 6)
        return storages.setdefault(key, storage)  # torch's deserialized_objects, by the key as pickled

    def next_pickle(start: int, what: str, **options: Any) -> Unpickled:
        # torch.load runs pickle.load on the file five times; each pickle's globals are reported,
        # and an error carries those of every pickle before it.
        try:
            result = unpickle(data, source=name, limits=limits, start=start, stop=stop, **options)
        except ReadError as error:
            named.update(dict.fromkeys(error.globals))
            error.globals = tuple(named)
            if start == 0 and not error.globals and isinstance(error, CorruptCheckpointError):
                if looks_like_safetensors(bytes(data[: _SNIFF_BYTES + 1]), size):
                    raise NotACheckpointError(name, "is a safetensors file, not a torch checkpoint") from None
                raise NotACheckpointError(
                    name,
                    "is not a torch checkpoint: neither a zip archive nor torch's legacy format "
                    f"(starts {data[:_SNIFF_BYTES]!r})",
                ) from None
            raise
        named.update(dict.fromkeys(result.globals))
        if result.frame_end is not None:
            raise _with_globals(
                AmbiguousFileError(
                    name,
                    f"the {what} pickle's last frame runs on past its STOP",
                    (
                        (
                            f"torch.load (C pickle on the file) may read the next pickle from byte {result.frame_end}, "
                            "where the frame ends"
                        ),
                        f"a reader that stops at STOP reads it from byte {result.end}",
                    ),
                ),
                named,
            )
        return result

    # torch compares the first two pickles' values with its constants and stops where they differ.
    # A value ckptkeys does not compute (a call's result, a global such as
    # torch.serialization.MAGIC_NUMBER itself) may well be equal: then torch reads on, so every
    # pickle is read here too, for its globals, and the file is refused at the end.
    undecided: list[str] = []
    header = next_pickle(0, "magic-number")
    if _computed(header.value):
        undecided.append(f"its magic number is {_computed(header.value)}")
    elif header.value != LEGACY_MAGIC_NUMBER:
        raise _with_globals(
            NotACheckpointError(name, "is a pickle, but not a torch checkpoint (no torch magic number)"), named
        )
    version = next_pickle(header.end, "protocol-version")
    if _computed(version.value):
        undecided.append(f"its protocol version is {_computed(version.value)}")
    elif version.value != LEGACY_PROTOCOL_VERSION:
        raise _with_globals(
            CorruptCheckpointError(name, f"legacy format with unknown protocol version {version.value!r:.60}"), named
        )
    sys_info = next_pickle(version.end, "system-info")
    if isinstance(sys_info.value, dict) and not sys_info.value.get("little_endian", True):
        byteorder = "big"
    else:
        byteorder = "little"
    main = next_pickle(
        sys_info.end,
        "object",
        interpreters=TORCH_INTERPRETERS,
        persistent_load=persistent_load,
        find_class=legacy_find_class,
    )
    key_list = next_pickle(main.end, "storage-keys")
    keys, keys_end = key_list.value, key_list.end
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise _with_globals(
            CorruptCheckpointError(name, "legacy format: the storage key list is not a list of strings"), named
        )
    listed = set(keys)
    missing = [key for key in storages if not isinstance(key, str) or key not in listed]
    if missing:
        raise _with_globals(
            CorruptCheckpointError(name, f"storage records {missing[:5]!r:.200} are missing from the file"), named
        )
    if undecided:
        raise _with_globals(
            CorruptCheckpointError(
                name,
                f"{undecided[0]}, which torch.load computes (running what the pickle names) and compares "
                "with its own; every pickle of the file was read for its globals",
            ),
            named,
        )
    by_record = {storage.key: storage for storage in storages.values()}
    # torch.load reads, for each listed key in turn, an int64 element count and the storage's bytes.
    end = keys_end + sum(8 + by_record[key].nbytes for key in keys if key in by_record)
    return Checkpoint(name, main.value, tuple(named), storages, "legacy", size, byteorder, end)


def _computed(value: Any) -> str:
    """What a pickled value is when only running the pickle tells its value (else "")."""
    if isinstance(value, Opaque):
        return f"the result of a call of {value.qualname}"
    if isinstance(value, GlobalRef):
        return f"the global {value.qualname}"
    if isinstance(value, PersistentRef):
        return "a persistent id"
    return ""


def _with_globals(error: ReadError, named: dict[GlobalRef, None]) -> ReadError:
    error.globals = tuple(named)
    return error
