"""Remote bytes for the reader: an object named by a URL, read by byte ranges, pinned to one version.

A local file is opened and read as it always was (``_reader``: ``open_regular``, ``mmap``); this
module is the other source of bytes. A URL (``s3://``, ``gs://``, ``hf://``, ``memory://``: any
fsspec protocol) becomes a :class:`RemoteObject`: its size and identity (version, ETag,
generation) known from one ``info()`` or a folder's listing, and :meth:`RemoteObject.fetch`, which
gets byte ranges, concurrently, never through fsspec's buffered file objects (s3fs's fetch 50 MiB
per miss). ``_ranged.RangedStream`` shows the reader the parts fetched as one seekable file and
fetches only what a read misses.

Every read of one object is tied to the identity pinned at first contact: on S3 each ranged GET
carries ``VersionId`` or ``If-Match``, on GCS the ``generation``; a Hub path at a branch is read
at the commit the branch named when first opened; elsewhere the identity is compared again after
the last read (:meth:`RemoteObject.confirm`). An object that changed meanwhile is refused, never
read as a mix. Many objects (a tag's files) are read by ``_many.read_many``: their heads and tails
fetched a bounded number of objects ahead, on the filesystem's event loop (:func:`get_many`); what
a failure means to the user is ``_remote_errors``'s. fsspec is imported here only, on first use:
``import ckptkeys`` imports none of it.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

from ._errors import ReadError
from ._remote_errors import CHANGED, Refused, remote_error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence
    from typing import Any, Final

__all__ = [
    "FETCH_CONCURRENCY",
    "HEAD_BYTES",
    "TAIL_BYTES",
    "RemoteFolder",
    "RemoteObject",
    "Requests",
    "get_many",
    "is_url",
    "list_remote",
    "local_only",
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
# GETs in flight at once when many objects are read together (read_many): what a store serves a
# client without throttling it, and more than s3fs's pool of 10 connections keeps busy.
FETCH_CONCURRENCY: Final = 32
# A scheme of two letters or more before "://": "C:\\x" stays a path.
_URL: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]+://")
# The fields of fsspec's info() that name an object's version, first the exact ones.
_IDENTITY_FIELDS: Final = ("VersionId", "generation", "blob_id", "ETag", "etag", "mtime", "LastModified", "created")
# fsspec's message for a missing filesystem package names it: "Install s3fs to access S3".
_INSTALL: Final = re.compile(r"[Ii]nstall ([A-Za-z0-9_.\-]+)")
# A git commit id, as the Hub names one (a revision that is no branch or tag name).
_COMMIT: Final = re.compile(r"[0-9a-f]{40}")


def is_url(path: object) -> bool:
    """Whether ``path`` names a remote object (a ``str`` with a scheme and ``://``), not a local file."""
    return isinstance(path, str) and _URL.match(path) is not None


def local_only(path: str, storage_options: Mapping[str, Any] | None) -> None:
    """Refuse ``storage_options`` given with the local ``path`` (``ValueError``): they are for a URL's filesystem."""
    if storage_options is not None and not is_url(path):
        raise ValueError(f"storage_options apply to URLs only, not to the local path {path!r}")


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
        self._pin = _pin(fs, info)
        self._tie_lock = threading.Lock()
        self.held: dict[int, bytes] = {}
        """Parts fetched ahead (``_many.read_many``) by their start: taken by the next ``RangedStream``."""

    def fetch(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """The bytes of each ``[start, end)`` in ``ranges`` (within the object), fetched concurrently."""
        ranges = [(start, end) for start, end in ranges if end > start]
        if not ranges:
            return []
        parts: list[Any]  # bytes, or the exception cat_ranges returns for a range
        try:
            if self._pin is not None:
                parts = _pinned_fetch(self.fs, self.path, ranges, self._pin, self.size)
            elif type(self.fs).__name__ == "HTTPFileSystem" and hasattr(self.fs, "set_session"):
                parts = _http_fetch(self.fs, self.path, ranges, self.size)
            else:
                starts, ends = [r[0] for r in ranges], [r[1] for r in ranges]
                parts = self.fs.cat_ranges([self.path] * len(ranges), starts, ends, on_error="return")
        except Exception as error:
            raise remote_error(self.url, error, self.fs) from None
        return self._accept(ranges, parts)

    def _accept(self, ranges: Sequence[tuple[int, int]], parts: Sequence[Any]) -> list[bytes]:
        """``parts`` (bytes, on S3 ``(bytes, ETag)``, or the exception a range ended in) as fetched for
        ``ranges``: counted, and refused (a :class:`ReadError` naming the URL) if one failed, came back
        short, or (S3) was answered by another version than the pinned one."""
        self.requests.gets += len(ranges)
        self.requests.ranges.extend(ranges)
        data: list[bytes] = []
        etags: set[str] = set()
        for part in parts:
            if isinstance(part, FileNotFoundError) and self._pin and "generation" in self._pin:
                # gcsfs: the generation first seen is gone (replaced in a bucket without versioning)
                raise ReadError(self.url, f"{CHANGED}: generation {self._pin['generation']} is no longer stored")
            if isinstance(part, BaseException):
                raise remote_error(self.url, part, self.fs)
            if isinstance(part, tuple):  # S3: the bytes and the ETag of the version that answered
                part, etag = part
                if etag:
                    etags.add(etag)
            data.append(part)
        self._tie(etags)
        for (start, end), part in zip(ranges, data, strict=True):
            self.requests.bytes += len(part)
            if len(part) != end - start:  # the object is shorter than when it was listed
                asked = f"{end - start} bytes asked at byte {start}, {len(part)} received"
                raise ReadError(self.url, f"{CHANGED}: {asked}")
        return data

    def _tie(self, etags: set[str]) -> None:
        """Each S3 answer's own ETag must be the pinned one too (a store or proxy may serve what it
        holds now despite ``If-Match``); with nothing to pin (a listing without ETags), the first
        answers' ETag becomes the pin (the ``If-Match`` of the reads that follow), and answers of
        two ETags are refused. Under a lock: an export's threads fetch one object at once."""
        if not etags or self._pin is None:
            return
        with self._tie_lock:
            if self._pin.get("IfMatch"):
                etags = etags | {self._pin["IfMatch"].strip('"')}
            if len(etags) > 1:
                raise ReadError(self.url, f"{CHANGED}: answered by versions of ETags {', '.join(sorted(etags))}")
            if not self._pin:  # nothing was pinned: the reads that follow are tied to this version
                self._pin["IfMatch"] = f'"{etags.pop()}"'

    def confirm(self) -> None:
        """Refuse the object if it is not the version pinned at first contact.

        S3's and GCS's reads each carried the pin (nothing to ask); elsewhere one more ``info()``.
        """
        if self._pin is not None:
            return
        self.requests.infos += 1
        try:
            info = self.fs.info(self.path)
        except Exception as error:
            raise remote_error(self.url, error, self.fs) from None
        now = (_size(self.url, info), _identity(info))
        if now != (self.size, self.identity):
            raise ReadError(self.url, f"{CHANGED}: its version or size is not the one first seen")


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
            raise remote_error(url, error, fs) from None
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
        found = _find(fs, path)
    except Exception as error:
        raise remote_error(url, error, fs) from None
    base = path.rstrip("/") + "/"
    entries = {}
    for key, info in sorted(found.items()):
        name = key[len(base) :]
        if not key.startswith(base) or info.get("type", "file") != "file":
            continue
        if (name == "" or name.endswith("/")) and info.get("size", info.get("Size")) == 0:
            continue  # a folder marker ("Create folder" in the S3 console): a folder, as in a local copy
        if "" in name.split("/"):
            raise ReadError(url, f"lists {name}, a key with an empty path segment: no local folder can hold it")
        entries[name] = info
    for name in entries:  # "a" and "a/b" at once: a local copy would hold one, this listing shows one
        folder = name.rpartition("/")[0]
        while folder:
            if folder in entries:
                raise ReadError(url, f"lists {folder} both as an object and as a folder: no local folder holds both")
            folder = folder.rpartition("/")[0]
    if not entries and not fs.isdir(path):
        raise ReadError(url, "does not exist (no object under this prefix)")
    return RemoteFolder(url, fs, path, entries)


def _find(fs: Any, path: str) -> Mapping[str, Mapping[str, Any]]:
    """``fs.find(path, detail=True)``; on S3 (s3fs, not version-aware) the ``ListObjectsV2`` pages are
    asked here, each through s3fs (its retries), so that a store whose pages never end (the same
    continuation token again: s3fs asks for the next page forever) is refused, not listed forever."""
    if type(fs).__name__ != "S3FileSystem" or not hasattr(fs, "_call_s3") or getattr(fs, "version_aware", True):
        found: Mapping[str, Mapping[str, Any]] = fs.find(path, detail=True)
        return found
    from fsspec.asyn import sync

    bucket, key, _ = fs.split_path(path)
    request = {"Bucket": bucket, "Prefix": key.rstrip("/") + "/" if key else "", **getattr(fs, "req_kw", {})}

    async def pages() -> dict[str, Mapping[str, Any]]:
        entries: dict[str, Mapping[str, Any]] = {}
        tokens: set[str] = set()
        while True:
            page = await fs._call_s3("list_objects_v2", **request)
            for item in page.get("Contents", []):
                name = f"{bucket}/{item['Key']}"  # as s3fs's find names and describes it
                entries[name] = {**item, "Key": name, "name": name, "size": item["Size"], "type": "file"}
            if not page.get("IsTruncated"):
                return entries
            token = page.get("NextContinuationToken")
            if not token or token in tokens:
                raise Refused(f"cannot be listed: the store's listing pages never end (next page {token!r} again)")
            tokens.add(token)
            request["ContinuationToken"] = token

    result: dict[str, Mapping[str, Any]] = sync(fs.loop, pages)
    return result


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
    if "HfFileSystem" in _classes(fs):
        path = _at_commit(url, fs, path)
    return fs, path


def _classes(fs: Any) -> set[str]:
    """The names of the filesystem's classes (gcsfs's is ExtendedGcsFileSystem, a GCSFileSystem):
    told apart without importing s3fs, gcsfs or huggingface_hub."""
    return {cls.__name__ for cls in type(fs).__mro__}


def _at_commit(url: str, fs: Any, path: str) -> str:
    """A Hub path (``user/repo[@revision]/file``) at the commit its branch or tag names now (one API
    call), so that the listing and every read of it see that one commit, however the branch moves
    meanwhile; a path at a commit already, or in a bucket (no revision), is kept."""
    try:
        resolved = fs.resolve_path(path)
        revision = getattr(resolved, "revision", None)
        if not isinstance(revision, str) or _COMMIT.fullmatch(revision):
            return path
        commit = fs._api.repo_info(resolved.repo_id, repo_type=resolved.repo_type, revision=revision).sha
        pinned: str = type(resolved)(resolved.repo_type, resolved.repo_id, commit, resolved.path_in_repo).unresolve()
    except Exception as error:
        raise remote_error(url, error, fs) from None
    return pinned


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


def _pin(fs: Any, info: Mapping[str, Any]) -> dict[str, str] | None:
    """The condition every ranged read of this object carries, or None where a read cannot carry one.

    s3fs: ``VersionId`` (a versioned bucket), else ``IfMatch`` with the ETag (a replaced object
    answers 412). gcsfs: ``generation``, which ``cat_file`` puts in the URL (GCS serves that
    generation or 404). Elsewhere (the Hub: a commit pinned in the path, see :func:`_filesystem`;
    memory://) :meth:`RemoteObject.confirm` compares the identity once more after the last read.
    """
    kind = _classes(fs)
    if "S3FileSystem" in kind and hasattr(fs, "_call_s3"):
        version = info.get("VersionId")
        if version and version != "null":
            return {"VersionId": str(version)}
        etag = info.get("ETag")
        return {"IfMatch": str(etag)} if etag else {}
    if "GCSFileSystem" in kind and hasattr(fs, "_cat_file") and info.get("generation"):
        return {"generation": str(info["generation"])}
    return None


def _pinned_fetch(fs: Any, path: str, ranges: Sequence[tuple[int, int]], pin: dict[str, str], size: int) -> list[Any]:
    """Ranged reads of one object of ``size`` bytes, concurrently on the filesystem's loop, each
    carrying ``pin`` (one range per GET: S3 serves no more); each range's answer (bytes, on S3 with
    its ETag: see :func:`get_many`) or the exception it ended in."""
    from fsspec.asyn import sync

    result: list[Any] = sync(fs.loop, get_many, fs, [(path, start, end, pin, size) for start, end in ranges])
    return result


_CONTENT_RANGE: Final = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


async def _ranged_body(
    status: Any, answered: Any, length: Any, read: Callable[[int], Awaitable[bytes]], start: int, end: int, size: int
) -> bytes:
    """The body of a ranged GET of ``[start, end)`` of an object of ``size`` bytes (its HTTP status,
    ``Content-Range``, ``Content-Length`` and ``read(n)``), taken only as that range: ``206`` with
    exactly that ``Content-Range`` (its total the size first seen) and ``Content-Length``, and read
    no further than that. A server or proxy that ignores ``Range`` (``200``, the whole object),
    answers another range, or announces or sends more bytes is refused by the headers, its body
    left unread (the caller closes it: never downloaded whole, never held unbounded).
    """
    asked = f"bytes {start}-{end - 1}"
    if status == 412:
        raise Refused(f"{CHANGED}: the store no longer holds the version first seen (HTTP 412)")
    if status == 404:
        raise FileNotFoundError(f"HTTP 404 for a GET of {asked}")
    matched = _CONTENT_RANGE.fullmatch(str(answered or ""))
    if status == 200 and matched is None and (start, end) == (0, size):  # the whole object was asked: a 200 is it
        status, matched = 206, _CONTENT_RANGE.fullmatch(f"bytes 0-{size - 1}/{size}")
    if status != 206 or matched is None:
        if status == 200 or (status == 206 and matched is None):
            reason = f"the store answered a GET of {asked} with HTTP {status} and no byte range (it ignores Range)"
            raise Refused(f"cannot be read: {reason}: refused unread, not downloaded whole")
        raise Refused(f"cannot be read: the store answered a GET of {asked} with HTTP {status}")
    first, last, total = matched.groups()
    if total != "*" and int(total) != size:
        raise Refused(f"{CHANGED}: the store holds {total} bytes, {size} were first seen")
    if (int(first), int(last)) != (start, end - 1):
        raise Refused(f"cannot be read: the store answered bytes {first}-{last} to a GET of {asked}")
    if length != end - start:
        raise Refused(f"cannot be read: the store announced {length} bytes for the {end - start} of {asked}")
    data = bytearray()
    while len(data) <= end - start:  # up to one byte past the range: a body longer than announced
        chunk = await read(end - start + 1 - len(data))
        if not chunk:
            break
        data += chunk
    if len(data) > end - start:
        raise Refused(f"cannot be read: the store sent more than the {end - start} bytes of {asked}")
    return bytes(data)


def _http_fetch(fs: Any, url: str, ranges: Sequence[tuple[int, int]], size: int) -> list[bytes]:
    """Ranged GETs of an ``http(s)://`` object on fsspec's HTTPFileSystem session, concurrently, each
    answer checked by :func:`_ranged_body` (fsspec's ``cat_file`` reads a ``200`` to its end: a
    server that ignores ``Range`` would be downloaded whole, once per range)."""
    import asyncio

    from fsspec.asyn import sync

    options = dict(getattr(fs, "kwargs", {}))

    async def get(start: int, end: int) -> bytes:
        session = await fs.set_session()
        headers = {**options.get("headers", {}), "Range": f"bytes={start}-{end - 1}"}
        async with session.get(fs.encode_url(url), **{**options, "headers": headers}) as response:
            try:
                length = response.headers.get("Content-Length")
                length = int(length) if length is not None and length.isdigit() else length
                answered = response.headers.get("Content-Range")
                return await _ranged_body(response.status, answered, length, response.content.read, start, end, size)
            finally:
                response.close()  # an unread body goes with its connection

    async def get_all() -> list[bytes]:
        return list(await asyncio.gather(*(get(start, end) for start, end in ranges)))

    result: list[bytes] = sync(fs.loop, get_all)
    return result


async def get_many(fs: Any, gets: Sequence[tuple[str, int, int, dict[str, str], int]], gate: Any = None) -> list[Any]:
    """``(path, start, end, pin, size)`` ranged reads, at most :data:`FETCH_CONCURRENCY` in flight
    (those of ``gate``, an asyncio.Semaphore, if given): each one's answer, or the exception it ended
    in (after the filesystem's own retries). S3: GetObject with the pin's ``IfMatch``/``VersionId``,
    its answer checked by :func:`_ranged_body` (``size``: the object's, first seen) and given as
    ``(bytes, ETag)`` (:meth:`RemoteObject._accept` checks the ETag against the pin); other async
    filesystems: ``_cat_file``, GCS's with the pin's ``generation``, its bytes."""
    import asyncio

    gate = gate or asyncio.Semaphore(FETCH_CONCURRENCY)
    s3 = hasattr(fs, "_call_s3")

    async def get(path: str, start: int, end: int, pin: dict[str, str], size: int) -> bytes | tuple[bytes, str]:
        async with gate:
            if not s3:
                data: bytes = await fs._cat_file(path, start=start, end=end, **pin)
                return data
            bucket, key, version = fs.split_path(path)
            if version and "VersionId" not in pin:
                pin = {**pin, "VersionId": version}
            response = await fs._call_s3("get_object", Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}", **pin)
            body = response["Body"]
            try:
                status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                answered, length = response.get("ContentRange"), response.get("ContentLength")
                data = await _ranged_body(status, answered, length, body.read, start, end, size)
            finally:
                body.close()  # an unread body goes with its connection
        return data, str(response.get("ETag") or "").strip('"')

    return list(await asyncio.gather(*(get(*one) for one in gets), return_exceptions=True))
