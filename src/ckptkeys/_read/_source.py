"""Remote bytes for the reader: an object named by a URL, read by byte ranges, pinned to one version.

A local file is opened and read as it always was (``_reader``: ``open_regular``, ``mmap``); this
module is the other source of bytes. A URL (``s3://``, ``gs://``, ``hf://``, ``memory://``: any
fsspec protocol) becomes a :class:`RemoteObject`: its size and identity (version, ETag,
generation) known from one ``info()`` or a folder's listing, and :meth:`RemoteObject.fetch`, which
gets byte ranges, concurrently, never through fsspec's buffered file objects (s3fs's fetch 50 MiB
per miss). :class:`RangedStream` shows the reader the parts fetched as one seekable file and
fetches only what a read misses.

Every read of one object is tied to the identity pinned at first contact: on S3 each ranged GET
carries ``VersionId`` or ``If-Match``; elsewhere the identity is compared again after the last
read (:meth:`RemoteObject.confirm`). An object that changed meanwhile is refused, never read as a
mix. fsspec is imported here only, inside :func:`open_remote`: ``import ckptkeys`` imports none of it.
"""

from __future__ import annotations

import errno
import io
import re
from dataclasses import dataclass, field

from ._errors import ReadError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any, Final

__all__ = [
    "HEAD_BYTES",
    "TAIL_BYTES",
    "RangedStream",
    "RemoteFolder",
    "RemoteObject",
    "Requests",
    "is_url",
    "list_remote",
    "open_remote",
]

KiB: Final = 1 << 10
# torch.save writes data.pkl (and byteorder) first: 2.8-4.9 KB in the ~1 GB ZeRO-2 checkpoint; a
# state dict of ~2,000 tensors still fits in 256 KiB.
HEAD_BYTES: Final = 256 * KiB
# The end records and the central directory (~80 B per record) are at the end. miniz scans back
# for the end record in 4 KiB blocks until it has looked 64 KiB + 22 bytes back, i.e. up to
# 69,650 bytes: a tail of 72 KiB holds the whole scan, so a cut-off upload costs no extra GET.
TAIL_BYTES: Final = 72 * KiB
# A read that misses fetches at least this much (clipped to the object): a local header, then
# the member's data after it, are one GET, not two.
MIN_FETCH: Final = 64 * KiB
# A scheme of two letters or more before "://": "C:\\x" stays a path.
_URL: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]+://")
# The fields of fsspec's info() that name an object's version, first the exact ones.
_IDENTITY_FIELDS: Final = ("VersionId", "generation", "blob_id", "ETag", "etag", "mtime", "LastModified", "created")
# fsspec's message for a missing filesystem package names it: "Install s3fs to access S3".
_INSTALL: Final = re.compile(r"[Ii]nstall ([A-Za-z0-9_.\-]+)")
_CHANGED: Final = "changed while being read"


def is_url(path: object) -> bool:
    """Whether ``path`` names a remote object (a ``str`` with a scheme and ``://``), not a local file."""
    return isinstance(path, str) and _URL.match(path) is not None


@dataclass(slots=True)
class Requests:
    """What reading one object cost: ranged GETs, ``info()`` calls, bytes received."""

    gets: int = 0
    infos: int = 0
    bytes: int = 0
    ranges: list[tuple[int, int]] = field(default_factory=list)


class RemoteObject:
    """One remote object: its size and pinned identity, and ranged reads of that version only."""

    def __init__(self, url: str, fs: Any, path: str, info: Mapping[str, Any], requests: Requests) -> None:
        self.url = url
        self.fs = fs
        self.path = path
        self.requests = requests
        self.size = _size(url, info)
        self.identity = _identity(info)
        self._s3 = _s3_pin(fs, info)

    def fetch(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """The bytes of each ``[start, end)`` in ``ranges`` (within the object), fetched concurrently."""
        ranges = [(start, end) for start, end in ranges if end > start]
        if not ranges:
            return []
        self.requests.gets += len(ranges)
        self.requests.ranges.extend(ranges)
        parts: list[Any]  # bytes, or the exception cat_ranges returns for a range
        try:
            if self._s3 is not None:
                parts = _s3_fetch(self.fs, self.path, ranges, self._s3)
            else:
                starts, ends = [r[0] for r in ranges], [r[1] for r in ranges]
                parts = self.fs.cat_ranges([self.path] * len(ranges), starts, ends, on_error="return")
        except Exception as error:
            raise _remote_error(self.url, error) from None
        for (start, end), part in zip(ranges, parts, strict=True):
            if isinstance(part, BaseException):
                raise _remote_error(self.url, part)
            self.requests.bytes += len(part)
            if len(part) != end - start:  # the object is shorter than when it was listed
                asked = f"{end - start} bytes asked at byte {start}, {len(part)} received"
                raise ReadError(self.url, f"{_CHANGED}: {asked}")
        return list(parts)

    def confirm(self) -> None:
        """Refuse the object if it is not the version pinned at first contact.

        S3's reads each carried the pin (nothing to ask); elsewhere one more ``info()``.
        """
        if self._s3 is not None:
            return
        self.requests.infos += 1
        try:
            info = self.fs.info(self.path)
        except Exception as error:
            raise _remote_error(self.url, error) from None
        now = (_size(self.url, info), _identity(info))
        if now != (self.size, self.identity):
            raise ReadError(self.url, f"{_CHANGED}: its version or size is not the one first seen")


def open_remote(
    url: str, storage_options: Mapping[str, Any] | None = None, *, info: Mapping[str, Any] | None = None
) -> RemoteObject:
    """The object at ``url``, its size and identity pinned (from ``info``, a listing's entry, or one ``fs.info``).

    Raises :class:`ReadError` naming ``url``: fsspec or the filesystem's package is not installed
    (the message names what to install), the object is missing, access is refused, the network failed.
    """
    fs, path = _filesystem(url, storage_options)
    requests = Requests()
    if info is None:
        requests.infos += 1
        try:
            info = fs.info(path)
        except Exception as error:
            raise _remote_error(url, error) from None
    if info.get("type", "file") != "file":
        raise ReadError(url, f"is a {info.get('type')}, not a file")
    return RemoteObject(url, fs, path, info, requests)


@dataclass(frozen=True, slots=True)
class RemoteFolder:
    """A remote folder's files, from one listing: their names (relative, with ``/``) and sizes."""

    url: str
    fs: Any
    path: str
    entries: dict[str, Mapping[str, Any]]
    """Each file's listing entry by its name relative to the folder: size and identity, no HEAD needed."""

    def open(self, name: str) -> RemoteObject:
        """The file ``name`` of the listing, pinned to the version listed (no request)."""
        url = self.url.rstrip("/") + "/" + name
        return RemoteObject(url, self.fs, self.path.rstrip("/") + "/" + name, self.entries[name], Requests())

    def name_of(self, url: str) -> str:
        """The name, relative to the folder, of ``url`` (the folder itself: ``""``)."""
        root = self.url.rstrip("/")
        if url.rstrip("/") == root:
            return ""
        if not url.startswith(root + "/"):
            raise ReadError(url, f"is not inside the listed folder {self.url}")
        return url[len(root) + 1 :].rstrip("/")

    def children(self, url: str) -> list[tuple[str, bool, int]]:
        """The entries right under the folder ``url``, from the listing: (name, is a folder, size), sorted."""
        prefix = self.name_of(url)
        prefix = prefix + "/" if prefix else ""
        found: dict[str, tuple[bool, int]] = {}
        for name, info in self.entries.items():
            if name.startswith(prefix):
                head, slash, _ = name[len(prefix) :].partition("/")
                found[head] = (True, 0) if slash else (False, _size(self.url, info))
        return [(name, *found[name]) for name in sorted(found)]

    def is_file(self, url: str) -> bool:
        """Whether ``url`` is a file of the listing."""
        return self.name_of(url) in self.entries

    def read_small(self, url: str, max_bytes: int) -> bytes:
        """The bytes of the listed file ``url`` (one GET), refused beyond ``max_bytes``."""
        source = self.open(self.name_of(url))
        if source.size > max_bytes:
            raise ReadError(url, f"is larger than {max_bytes} bytes")
        [data] = source.fetch([(0, source.size)]) or [b""]
        source.confirm()
        return data


def list_remote(url: str, storage_options: Mapping[str, Any] | None = None) -> RemoteFolder:
    """The files under the folder ``url`` (at any depth), from one recursive listing (``fs.find``):
    on S3 one ``ListObjectsV2`` (paged by 1,000 keys), whose entries carry every size and ETag."""
    fs, path = _filesystem(url, storage_options)
    try:
        found = fs.find(path, detail=True)
    except Exception as error:
        raise _remote_error(url, error) from None
    base = path.rstrip("/") + "/"
    entries = {
        name[len(base) :]: info
        for name, info in sorted(found.items())
        if name.startswith(base) and info.get("type", "file") == "file"
    }
    if not entries and not fs.isdir(path):
        raise ReadError(url, "does not exist (no object under this prefix)")
    return RemoteFolder(url, fs, path, entries)


def _filesystem(url: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, str]:
    """fsspec's filesystem for ``url`` and the path in it; fsspec imported here, on first use only."""
    try:
        import fsspec.core  # only here: import ckptkeys imports no fsspec
    except ImportError:
        raise ReadError(url, "is a URL: reading it needs fsspec (pip install fsspec: the remote extra)") from None
    try:
        fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    except ImportError as error:
        wanted = _INSTALL.search(str(error))
        package = wanted.group(1) if wanted else "the filesystem package of its protocol"
        raise ReadError(url, f"is a URL whose filesystem needs {package} (pip install {package})") from None
    except (ValueError, TypeError) as error:
        raise ReadError(url, f"cannot be opened: {error}") from None
    return fs, path


class RangedStream(io.RawIOBase):
    """The parts of a :class:`RemoteObject` fetched so far, read as one seekable file.

    A read of bytes not yet fetched fetches the missing spans only, each at least
    :data:`MIN_FETCH` long (clipped to the object and to the parts already held).
    """

    def __init__(self, source: RemoteObject) -> None:
        super().__init__()
        self.source = source
        self._parts: dict[int, bytes] = {}  # start -> bytes, never overlapping
        self._pos = 0

    def prefetch(self, ranges: Sequence[tuple[int, int]], gap: int = MIN_FETCH) -> None:
        """Fetch ``ranges`` (clipped to the object) in one concurrent round, merging those less than
        ``gap`` apart (:data:`MIN_FETCH`; 0: only those that touch), and leaving out what is held already."""
        size = self.source.size
        clipped = sorted((max(0, s), min(size, e)) for s, e in ranges if min(size, e) > max(0, s))
        merged: list[tuple[int, int]] = []
        for start, end in clipped:
            if merged and start <= merged[-1][1] + gap:  # close ranges: one GET
                merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
            else:
                merged.append((start, end))
        missing = [gap for start, end in merged for gap in self._gaps(start, end)]
        for (start, _), data in zip(missing, self.source.fetch(missing), strict=True):
            self._parts[start] = data

    def holds(self, start: int, end: int) -> bool:
        """Whether the bytes ``[start, end)`` (clipped to the object) are fetched already."""
        return not self._gaps(max(0, start), min(self.source.size, end))

    def _gaps(self, start: int, end: int) -> list[tuple[int, int]]:
        gaps = []
        at = start
        for part_start in sorted(self._parts):
            part_end = part_start + len(self._parts[part_start])
            if part_end <= at:
                continue
            if part_start >= end:
                break
            if part_start > at:
                gaps.append((at, part_start))
            at = max(at, part_end)
        if at < end:
            gaps.append((at, end))
        return gaps

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.source.size}[whence]
        if base + offset < 0:
            raise OSError(errno.EINVAL, "negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        end = self.source.size if size is None or size < 0 else min(self.source.size, self._pos + size)
        if end <= self._pos:
            return b""
        gaps = self._gaps(self._pos, end)
        if gaps:
            limit = self.source.size
            widened = []
            for start, stop in gaps:
                following = [p for p in self._parts if p >= stop]
                ceiling = min([limit, *following])
                widened.append((start, min(ceiling, max(stop, start + MIN_FETCH))))
            for (start, _), data in zip(widened, self.source.fetch(widened), strict=True):
                self._parts[start] = data
        chunks = []
        at = self._pos
        for part_start in sorted(self._parts):
            data = self._parts[part_start]
            part_end = part_start + len(data)
            if part_end <= at or part_start >= end:
                continue
            chunks.append(data[at - part_start : min(end, part_end) - part_start])
            at = min(end, part_end)
        self._pos = end
        return b"".join(chunks)


def _size(url: str, info: Mapping[str, Any]) -> int:
    size = info.get("size", info.get("Size"))
    if not isinstance(size, int) or size < 0:
        raise ReadError(url, "has no known size: the filesystem's listing gives none")
    return size


def _identity(info: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The version fields of a listing entry or ``info()``, each as one text: a listing and
    ``info()`` may give a time as a datetime or as a number (memory://), and an ETag quoted or not."""
    fields = []
    for name in _IDENTITY_FIELDS:
        value = info.get(name)
        if value in (None, ""):
            continue
        if hasattr(value, "timestamp"):
            value = value.timestamp()
        fields.append((name, repr(float(value)) if isinstance(value, (int, float)) else str(value).strip('"')))
    return tuple(fields)


def _s3_pin(fs: Any, info: Mapping[str, Any]) -> dict[str, str] | None:
    """The condition every GetObject of this object carries on S3 (s3fs), or None elsewhere."""
    if type(fs).__name__ != "S3FileSystem" or not hasattr(fs, "_call_s3"):
        return None
    version = info.get("VersionId")
    if version and version != "null":
        return {"VersionId": str(version)}
    etag = info.get("ETag")
    return {"IfMatch": str(etag)} if etag else {}


def _s3_fetch(fs: Any, path: str, ranges: Sequence[tuple[int, int]], pin: dict[str, str]) -> list[bytes]:
    """Ranged GetObjects, concurrently on s3fs's loop, each carrying ``pin`` (one range per GET: S3 serves no more)."""
    import asyncio

    from fsspec.asyn import sync

    bucket, key, version = fs.split_path(path)
    if version and "VersionId" not in pin:
        pin = {**pin, "VersionId": version}

    async def get(start: int, end: int) -> bytes:
        response = await fs._call_s3("get_object", Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}", **pin)
        body = response["Body"]
        try:
            data: bytes = await body.read()
        finally:
            body.close()
        return data

    async def get_all() -> list[bytes]:
        return list(await asyncio.gather(*(get(start, end) for start, end in ranges)))

    result: list[bytes] = sync(fs.loop, get_all)
    return result


def _remote_error(url: str, error: BaseException) -> ReadError:
    """One line naming the URL, for whatever the filesystem raised after its own retries."""
    if isinstance(error, ReadError):
        return error
    text = " ".join(str(error).split()) or type(error).__name__
    if "PreconditionFailed" in text or "pre-condition" in text.lower() or "412" in text.split(":")[0]:
        return ReadError(url, f"{_CHANGED}: the store no longer holds the version first seen ({text:.200})")
    if isinstance(error, FileNotFoundError):
        return ReadError(url, f"does not exist ({text:.200})")
    if isinstance(error, PermissionError):
        return ReadError(url, f"cannot be read: access denied ({text:.200})")
    if isinstance(error, OSError) and error.errno == errno.EBUSY:  # s3fs's SlowDown / 503, retried already
        return ReadError(url, f"cannot be read: the store is throttling requests, still after retries ({text:.200})")
    if type(error).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
        return ReadError(url, f"cannot be read: no credentials for the store ({text:.200})")
    return ReadError(url, f"cannot be read: {text:.300}")
