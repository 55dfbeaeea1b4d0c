"""The remote reader against a hostile or broken store, proxy or network, and a racing writer.

Every answer an S3 ranged GET can get (206 with the range asked, 200 with the whole body from a
server or proxy that ignores ``Range``, 206 with another ``Content-Range``, a body shorter or
longer than its ``Content-Length``, 304/412/416/500/503, a redirect, a connection reset or a stall
mid-body), every listing answer (pages that never end, a name that is a file and a folder at
once, ``//`` in a key, a listed size that is not the object's) and every moment a writer can
replace an object. The guarantees: the local copy's result or one ``ReadError`` naming the URL;
never a mix of two versions; never a whole-object download or a body read without bound; no hang
(the timeouts are in the storage options).

The S3 answers are rewritten by a WSGI layer in front of moto (``_Counter.__call__`` patched for
the test, so a body can be streamed, stalled or cut); what the client took in is counted at
aiobotocore's ``StreamingBody.read``.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import re
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

import ckptkeys
from ckptkeys import ReadError
from ckptkeys._read import _source
from ckptkeys._read._limits import Limits
from ckptkeys._read._reader import _read_zip, read_object
from ckptkeys._read._source import HEAD_BYTES, TAIL_BYTES, list_remote

from . import remote_support
from .conftest import FIXTURES
from .remote_support import S3, Fetched, memory, s3, s3_server  # noqa: F401 (fixtures)

fsspec = pytest.importorskip("fsspec")

SMALL = FIXTURES / "z2_bf16_ws2" / "global_step3" / "mp_rank_00_model_states.pt"
TAG = FIXTURES / "z2_bf16_ws2"


def _padded(after: int, before: int = 0) -> bytes:
    """The small fixture rebuilt with ``before`` bytes ahead of data.pkl and ``after`` bytes after the
    storages: a file whose head and tail are two GETs (and a third, with ``before``)."""
    with zipfile.ZipFile(SMALL) as original:
        infos = original.infolist()
        folder = infos[0].filename.split("/", 1)[0]
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as rebuilt:
            if before:
                rebuilt.writestr(f"{folder}/padding_before", bytes(before))
            for info in infos:
                rebuilt.writestr(info, original.read(info))
            rebuilt.writestr(f"{folder}/padding_after", bytes(after))
    return out.getvalue()


def _outcome(read: Callable[[], ckptkeys.Checkpoint]) -> tuple[Any, ...]:
    try:
        checkpoint = read()
    except ReadError as error:
        return (type(error), error.reason)
    return (repr(checkpoint.data), checkpoint.globals, checkpoint.storages, checkpoint.format, checkpoint.size)


def _local(raw: bytes, name: str) -> tuple[Any, ...]:
    return _outcome(lambda: _read_zip(name, io.BytesIO(raw), len(raw), Limits()))


# -- a hostile S3 -----------------------------------------------------------------------------------

Answer = tuple[str, list[tuple[str, str]], Iterable[bytes]]
Layer = Callable[[dict[str, Any], Callable[[dict[str, Any]], Answer]], Answer]


def _moto(app: Any, environ: dict[str, Any]) -> Answer:
    """moto's answer to ``environ``: status, headers, body (whole)."""
    got: list[Any] = []

    def start(status: str, headers: list[tuple[str, str]], *info: Any) -> None:
        got.extend((status, list(headers)))

    body = b"".join(app(environ, start))
    return got[0], got[1], [body]


def _header(headers: list[tuple[str, str]], name: str, value: str | None) -> list[tuple[str, str]]:
    kept = [(k, v) for k, v in headers if k.lower() != name.lower()]
    return kept if value is None else [*kept, (name, value)]


def _range(environ: dict[str, Any]) -> tuple[int, int]:
    """The ``[start, end)`` a ranged GET asked for."""
    match = re.fullmatch(r"bytes=(\d+)-(\d+)", environ["HTTP_RANGE"])
    assert match is not None
    return int(match.group(1)), int(match.group(2)) + 1


class Hostile:
    """Ranged GETs of one object answered by a layer over moto; what the client read, counted."""

    def __init__(self, s3: S3, monkeypatch: pytest.MonkeyPatch) -> None:
        self.s3 = s3
        self.layers: dict[str, Layer] = {}
        self.listing: Callable[[bytes], bytes] | None = None
        self.first_page_only = False
        self.plain: dict[str, tuple[bytes, bool]] = {}
        """Paths answered by a plain HTTP server (no moto): the bytes, and whether it honours Range."""
        self.lists = 0
        self.received = 0
        self.lock = threading.Lock()
        counter_call = remote_support._Counter.__call__
        hostile = self

        def call(counter: Any, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            method = environ["REQUEST_METHOD"]
            hostile_answer = method == "GET" and (
                (environ.get("HTTP_RANGE") and path in hostile.layers)
                or (path.strip("/") == s3.bucket and hostile.listing is not None)
            )
            if hostile_answer:  # in the server's log too, as every request
                with counter.lock:
                    counter.log.append(remote_support.Logged(method, path, "", environ.get("HTTP_RANGE"), "", 0))
            if path in hostile.plain:  # a plain HTTP server; one that ignores Range answers 200, the whole body
                data, honours_range = hostile.plain[path]
                headers = [("ETag", '"v1"'), ("Accept-Ranges", "bytes")]
                if honours_range and environ.get("HTTP_RANGE"):
                    start, end = _range(environ)
                    headers.append(("Content-Range", f"bytes {start}-{end - 1}/{len(data)}"))
                    data = data[start:end]
                start_response("206 Partial Content" if len(headers) == 3 else "200 OK",
                               [*headers, ("Content-Length", str(len(data)))])  # fmt: skip
                return [] if method == "HEAD" else [data]
            if method == "GET" and environ.get("HTTP_RANGE") and path in hostile.layers:
                status, headers, body = hostile.layers[path](environ, functools.partial(_moto, counter.app))
                start_response(status, headers)
                return body
            if method == "GET" and path.strip("/") == s3.bucket and hostile.listing is not None:
                with hostile.lock:
                    hostile.lists += 1
                query = environ.get("QUERY_STRING", "")
                if hostile.first_page_only:  # every page asked is answered as the first
                    query = re.sub(r"&?continuation-token=[^&]*", "", query)
                status, headers, [raw] = _moto(counter.app, {**environ, "QUERY_STRING": query})
                data = hostile.listing(bytes(raw))
                start_response(status, _header(headers, "Content-Length", str(len(data))))
                return [data]
            return counter_call(counter, environ, start_response)

        monkeypatch.setattr(remote_support._Counter, "__call__", call)
        streaming = pytest.importorskip("aiobotocore.response").AioStreamingBody
        body_read = streaming.read

        async def counted_read(body: Any, amt: int | None = None) -> bytes:
            chunk: bytes = await body_read(body, amt)
            with hostile.lock:
                hostile.received += len(chunk)
            return chunk

        monkeypatch.setattr(streaming, "read", counted_read)

    def answer(self, name: str, layer: Layer) -> None:
        self.layers[f"/{self.s3.bucket}/{name}"] = layer


@pytest.fixture
def hostile(s3: S3, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hostile]:
    pytest.importorskip("aiobotocore")
    monkeypatch.setattr(type(s3.fs), "retries", 1)  # s3fs's own retries (5, with back-off)
    yield Hostile(s3, monkeypatch)


def _options(s3: S3, timeout: float = 10.0) -> dict[str, Any]:
    """Timeouts and no retries: a stalled store ends in an error, not a wait (and every test is fast).
    The short timeout only where the store stalls: a loaded machine must not time out a sound answer."""
    config = {"read_timeout": timeout, "connect_timeout": timeout, "retries": {"max_attempts": 1}}
    return {**s3.options, "config_kwargs": config, "skip_instance_cache": True}


def _refused(url: str, options: dict[str, Any], reason: str = "") -> ReadError:
    """The one clean error ``read(url)`` must end in: a plain ReadError (not a verdict on the
    checkpoint's bytes) naming the URL, on one line."""
    with pytest.raises(ReadError) as caught:
        ckptkeys.read(url, storage_options=options)
    error = caught.value
    assert type(error) is ReadError, f"a verdict on bytes the store did not hold: {error}"
    assert str(error).startswith(f"{url}: ") and "\n" not in str(error)
    assert re.search(reason, error.reason), error.reason
    return error


BIG = 16 << 20  # the object a misbehaving store must not make us download


def test_a_store_ignoring_range_is_refused_without_reading_the_body(s3: S3, hostile: Hostile) -> None:
    raw = _padded(after=BIG)
    url = s3.put("whole.pt", raw)

    def whole(environ: dict[str, Any], moto: Callable[[dict[str, Any]], Answer]) -> Answer:
        return moto({k: v for k, v in environ.items() if k != "HTTP_RANGE"})  # 200, the whole object

    hostile.answer("whole.pt", whole)
    _refused(url, _options(s3), "Range")
    assert hostile.received <= 2 * (HEAD_BYTES + TAIL_BYTES), f"{hostile.received} bytes of {len(raw)} read"
    small = SMALL.read_bytes()  # one GET of the whole object (head and tail merged): a 200 is what was asked
    small_url = s3.put("small.pt", small)
    hostile.answer("small.pt", whole)
    assert _outcome(functools.partial(ckptkeys.read, small_url, storage_options=_options(s3))) == _local(
        small, small_url
    )


def test_another_content_range_than_asked_is_refused(s3: S3, hostile: Hostile) -> None:
    raw = _padded(after=1 << 20)
    url = s3.put("shifted.pt", raw)

    def shifted(environ: dict[str, Any], moto: Callable[[dict[str, Any]], Answer]) -> Answer:
        start, end = _range(environ)
        move = 1 if start == 0 else -1  # as long as asked, one byte off: only Content-Range tells
        return moto({**environ, "HTTP_RANGE": f"bytes={start + move}-{end - 1 + move}"})

    hostile.answer("shifted.pt", shifted)
    _refused(url, _options(s3), "Content-Range|bytes")


def test_a_content_length_beyond_the_range_is_not_read(s3: S3, hostile: Hostile) -> None:
    raw = _padded(after=BIG)
    url = s3.put("long.pt", raw)

    def longer(environ: dict[str, Any], moto: Callable[[dict[str, Any]], Answer]) -> Answer:
        start, end = _range(environ)  # the range asked in Content-Range, 8 MiB more in the body
        status, headers, body = moto({**environ, "HTTP_RANGE": f"bytes={max(0, start - (8 << 20))}-{end - 1}"})
        return status, _header(headers, "Content-Range", f"bytes {start}-{end - 1}/{len(raw)}"), body

    hostile.answer("long.pt", longer)
    _refused(url, _options(s3))
    assert hostile.received <= 2 * (HEAD_BYTES + TAIL_BYTES), f"{hostile.received} bytes read"


def test_a_body_shorter_than_its_content_length_times_out_to_one_error(s3: S3, hostile: Hostile) -> None:
    raw = _padded(after=1 << 20)
    url = s3.put("short.pt", raw)

    def short(environ: dict[str, Any], moto: Callable[[dict[str, Any]], Answer]) -> Answer:
        status, headers, [body] = moto(environ)
        return status, headers, [bytes(body)[: len(body) // 2]]  # Content-Length still the whole range

    hostile.answer("short.pt", short)
    _refused(url, _options(s3, timeout=0.5), "cannot be read")


def test_a_connection_reset_mid_body_is_one_error(s3: S3, hostile: Hostile) -> None:
    raw = _padded(after=1 << 20)
    url = s3.put("reset.pt", raw)

    def reset(environ: dict[str, Any], moto: Callable[[dict[str, Any]], Answer]) -> Answer:
        status, headers, [body] = moto(environ)

        def cut() -> Iterator[bytes]:
            yield bytes(body)[: len(body) // 2]
            raise ConnectionResetError("the proxy dropped the connection")  # werkzeug closes the socket

        return status, headers, cut()

    hostile.answer("reset.pt", reset)
    _refused(url, _options(s3), "cannot be read")


def test_a_stall_mid_body_ends_at_the_read_timeout(s3: S3, hostile: Hostile) -> None:
    raw = _padded(after=1 << 20)
    url = s3.put("stall.pt", raw)

    def stall(environ: dict[str, Any], moto: Callable[[dict[str, Any]], Answer]) -> Answer:
        status, headers, [body] = moto(environ)

        def slow() -> Iterator[bytes]:
            yield bytes(body)[:1024]
            time.sleep(1.5)  # three read timeouts: the read must have given up by then
            yield bytes(body)[1024:]

        return status, headers, slow()

    hostile.answer("stall.pt", stall)
    _refused(url, _options(s3, timeout=0.5), "cannot be read")


_ERROR_XML = b"<Error><Code>%s</Code><Message>m</Message></Error>"
STATUSES = {
    "304 Not Modified": ("", "cannot be read"),
    "412 Precondition Failed": ("PreconditionFailed", "changed while being read"),
    "416 Requested Range Not Satisfiable": ("InvalidRange", "cannot be read|changed while being read"),
    "500 Internal Server Error": ("InternalError", "cannot be read"),
    "503 Service Unavailable": ("ServiceUnavailable", "cannot be read"),
    "301 Moved Permanently": ("PermanentRedirect", "cannot be read"),
    "307 Temporary Redirect": ("TemporaryRedirect", "cannot be read"),
}


@pytest.mark.parametrize("status", sorted(STATUSES))
def test_every_error_status_of_a_ranged_get_is_one_error(s3: S3, hostile: Hostile, status: str) -> None:
    code, reason = STATUSES[status]
    url = s3.put("status.pt", _padded(after=1 << 20))

    def answer(environ: dict[str, Any], moto: Callable[[dict[str, Any]], Answer]) -> Answer:
        body = _ERROR_XML % code.encode() if code else b""
        headers = [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))]
        if status.startswith("3"):  # somewhere that answers nothing: a redirect must not be followed off
            headers.append(("Location", "http://127.0.0.1:9/elsewhere/status.pt"))
        return status, headers, [body]

    hostile.answer("status.pt", answer)
    _refused(url, _options(s3), reason)


# -- listings ---------------------------------------------------------------------------------------


def test_a_listing_that_never_ends_is_refused(s3: S3, hostile: Hostile) -> None:
    for name in ("a.pt", "b.pt"):
        s3.put(f"pages/{name}", SMALL.read_bytes())

    def endless(xml: bytes) -> bytes:  # every page "truncated", with the same next token
        if hostile.lists > 50:  # a real store of this kind never stops: the test does
            return xml
        xml = xml.replace(b"<IsTruncated>false</IsTruncated>", b"<IsTruncated>true</IsTruncated>")
        return xml.replace(b"</ListBucketResult>", b"<NextContinuationToken>same</NextContinuationToken></ListBucketResult>")

    hostile.listing = endless
    hostile.first_page_only = True
    s3.fs.invalidate_cache()
    url = f"s3://{s3.bucket}/pages"
    with pytest.raises(ReadError, match=rf"^{url}: ") as caught:
        list_remote(url, _options(s3))
    assert "\n" not in str(caught.value)
    assert hostile.lists <= 3


def test_a_listed_size_that_is_not_the_objects_is_refused(s3: S3, hostile: Hostile) -> None:
    raw = _padded(after=1 << 20)
    s3.put("sized/a.pt", raw)

    def smaller(xml: bytes) -> bytes:  # a stale or lying listing: the object is larger
        return xml.replace(f"<Size>{len(raw)}</Size>".encode(), f"<Size>{len(raw) - 4096}</Size>".encode())

    hostile.listing = smaller
    s3.fs.invalidate_cache()
    folder = list_remote(f"s3://{s3.bucket}/sized", _options(s3))
    assert folder.entries["a.pt"]["size"] == len(raw) - 4096
    url = f"s3://{s3.bucket}/sized/a.pt"
    with pytest.raises(ReadError) as caught:
        read_object(folder.open("a.pt"), Limits())
    # Not "no end record": the object is whole, the listing's size is not its size.
    assert type(caught.value) is ReadError and str(caught.value).startswith(f"{url}: changed while being read")


def _tag_copy(fs: Any, url: str) -> None:
    for path in sorted(TAG.rglob("*")):
        if path.is_file():
            fs.pipe(f"{url}/{path.relative_to(TAG)}", path.read_bytes())


def test_a_name_that_is_a_file_and_a_folder_is_refused(memory: Fetched) -> None:
    """A store holds ``run/global_step3`` and ``run/global_step3/x.pt`` at once; no local copy can.
    The scan must not silently keep the folder and drop the object (or a ``latest`` object shadowed
    by a ``latest/`` prefix)."""
    fs = fsspec.filesystem("memory")
    _tag_copy(fs, "memory://both")
    fs.pipe("memory://both/global_step3", b"an object named as the tag folder")
    with pytest.raises(ReadError, match=r"^memory://both: lists global_step3 both as an object and as a folder"):
        ckptkeys.scan("memory://both", read=False)


def test_a_key_with_an_empty_segment_is_refused(memory: Fetched) -> None:
    """``run//x.pt`` lists as a name whose first segment is empty: never a folder named ""."""
    fs = fsspec.filesystem("memory")
    _tag_copy(fs, "memory://slashes")
    fs.pipe("memory://slashes//stray.pt", b"x")
    with pytest.raises(ReadError, match=r"^memory://slashes: lists /stray.pt, a key with an empty path segment"):
        ckptkeys.scan("memory://slashes", read=False)


def test_folder_markers_are_folders(s3: S3) -> None:
    """Zero-byte ``name/`` keys (the S3 console's "Create folder") are folders, as in a local copy."""
    _tag_copy(s3.fs, f"{s3.bucket}/marked")
    s3.put("marked/", b"")
    s3.put("marked/global_step3/", b"")
    s3.put("marked/empty/", b"")
    s3.fs.invalidate_cache()
    url = f"s3://{s3.bucket}/marked"
    folder = list_remote(url, storage_options=s3.options)
    assert all(name and not name.endswith("/") for name in folder.entries), sorted(folder.entries)
    assert [c for c in folder.children(f"{url}/global_step3") if not c[0].endswith(".pt")] == []
    remote = ckptkeys.scan(url, read=True, storage_options=s3.options)
    local = ckptkeys.scan(TAG, read=True)
    # Everything the scans found, each tag folder's path taken out (a repr would shorten a long one).
    found = repr(dataclasses.astuple(remote.tags[0])).replace(remote.tags[0].path, "TAG")
    assert found == repr(dataclasses.astuple(local.tags[0])).replace(local.tags[0].path, "TAG")


def test_a_key_equal_to_the_prefix_is_not_inside_the_folder(s3: S3) -> None:
    raw = SMALL.read_bytes()
    s3.put("same", b"an object named as the folder")
    s3.put("same/a.pt", raw)
    s3.fs.invalidate_cache()
    folder = list_remote(f"s3://{s3.bucket}/same", storage_options=s3.options)
    assert sorted(folder.entries) == ["a.pt"]
    assert _outcome(lambda: read_object(folder.open("a.pt"), Limits())) == _local(raw, f"s3://{s3.bucket}/same/a.pt")
    with pytest.raises(ReadError, match=r"is not a checkpoint|not a|too short|empty|Not|truncated"):
        ckptkeys.read(f"s3://{s3.bucket}/same", storage_options=s3.options)


# -- a racing writer --------------------------------------------------------------------------------

MOMENTS = ("listing-first-get", "between-gets", "after-last-get")


def _race(monkeypatch: pytest.MonkeyPatch, moment: str, replace: Callable[[], object]) -> None:
    """Replace the object at ``moment`` of a read: before the first fetch, after the first, after the last."""
    fetch = _source.RemoteObject.fetch
    confirm = _source.RemoteObject.confirm
    done = threading.Event()

    def once() -> None:
        if not done.is_set():
            done.set()
            replace()

    def racing_fetch(self: _source.RemoteObject, ranges: Any) -> list[bytes]:
        if moment == "listing-first-get":
            once()
        parts = fetch(self, ranges)
        if moment == "between-gets":
            once()
        return parts

    def racing_confirm(self: _source.RemoteObject) -> None:
        if moment == "after-last-get":
            once()
        confirm(self)

    monkeypatch.setattr(_source.RemoteObject, "fetch", racing_fetch)
    monkeypatch.setattr(_source.RemoteObject, "confirm", racing_confirm)


def _two_versions() -> tuple[bytes, bytes]:
    """Two versions of one object, the same size, data.pkl past the head (a third GET): a mix of
    the two is a zip whose directory and pickle disagree."""
    old = _padded(before=1 << 20, after=1 << 20)
    new = old.replace(b"padding_after", b"PADDING_AFTER")
    assert len(new) == len(old) and new != old
    return old, new


_GONE = ("changed while being read", "does not exist")  # replaced, or deleted


@pytest.mark.parametrize("deleted", [False, True], ids=["replaced", "deleted"])
@pytest.mark.parametrize("moment", MOMENTS)
def test_s3_a_writer_at_any_moment_gives_one_version_or_changed(
    s3: S3, monkeypatch: pytest.MonkeyPatch, moment: str, deleted: bool
) -> None:
    old, new = _two_versions()
    url = s3.put("race/a.pt", old)
    s3.fs.invalidate_cache()
    folder = list_remote(f"s3://{s3.bucket}/race", storage_options=s3.options)
    _race(monkeypatch, moment, lambda: s3.fs.rm(f"{s3.bucket}/race/a.pt") if deleted else s3.put("race/a.pt", new))
    result = _outcome(lambda: read_object(folder.open("a.pt"), Limits()))
    if moment == "after-last-get":  # every byte read was the old version's
        assert result == _local(old, url)
    else:
        assert result[0] is ReadError and result[1].startswith(_GONE), result


@pytest.mark.parametrize("deleted", [False, True], ids=["replaced", "deleted"])
@pytest.mark.parametrize("moment", MOMENTS)
def test_memory_a_writer_at_any_moment_gives_one_version_or_changed(
    memory: Fetched, monkeypatch: pytest.MonkeyPatch, moment: str, deleted: bool
) -> None:
    old, new = _two_versions()
    fs = fsspec.filesystem("memory")
    fs.pipe("memory://race/a.pt", old)
    folder = list_remote("memory://race")
    _race(monkeypatch, moment, lambda: fs.rm("memory://race/a.pt") if deleted else fs.pipe("memory://race/a.pt", new))
    result = _outcome(lambda: read_object(folder.open("a.pt"), Limits()))
    assert result == _local(old, "memory://race/a.pt") or (
        result[0] is ReadError and result[1].startswith(_GONE)
    ), result


@pytest.mark.xfail(
    strict=True,
    reason="a filesystem whose info() names no version (no ETag, generation, mtime: fsspec's HTTP "
    "without those headers) pins the size only: a same-size replacement between two GETs is read "
    "as a mix. Fix: refuse to read such an object in more than one round (or at all), saying it has "
    "no version to pin; not done here, it changes which stores can be read",
)
def test_memory_without_a_version_a_same_size_replacement_is_refused(
    memory: Fetched, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fsspec.implementations.memory import MemoryFileSystem

    info = MemoryFileSystem.info  # the fixture's counting wrapper

    def no_version(self: Any, path: str, **kw: Any) -> Any:
        return {k: v for k, v in info(self, path, **kw).items() if k not in ("created", "mtime")}

    monkeypatch.setattr(MemoryFileSystem, "info", no_version)
    old, new = _two_versions()
    fs = fsspec.filesystem("memory")
    fs.pipe("memory://bare/a.pt", old)
    _race(monkeypatch, "between-gets", lambda: fs.pipe("memory://bare/a.pt", new))
    result = _outcome(lambda: ckptkeys.read("memory://bare/a.pt"))
    assert result[0] is ReadError and result[1].startswith("changed while being read"), result


@pytest.mark.parametrize("answer", ["whole", "longer", "shorter"])
def test_memory_cat_file_answering_other_bytes_than_asked_is_one_error(
    memory: Fetched, monkeypatch: pytest.MonkeyPatch, answer: str
) -> None:
    from fsspec.implementations.memory import MemoryFileSystem

    cat_file = MemoryFileSystem.cat_file

    def wrong(self: Any, path: str, start: int | None = None, end: int | None = None, **kw: Any) -> Any:
        if answer == "whole":
            return cat_file(self, path, **kw)
        data = cat_file(self, path, start, end, **kw)
        return data + b"\0" if answer == "longer" else data[:-1]

    monkeypatch.setattr(MemoryFileSystem, "cat_file", wrong)
    fsspec.filesystem("memory").pipe("memory://wrong/a.pt", _padded(after=1 << 20))
    with pytest.raises(ReadError) as caught:
        ckptkeys.read("memory://wrong/a.pt")
    assert type(caught.value) is ReadError and str(caught.value).startswith("memory://wrong/a.pt: ")



def test_http_a_server_ignoring_range_is_refused_without_reading_the_body(
    s3: S3, hostile: Hostile, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``https://`` (fsspec's HTTPFileSystem) against a plain server that ignores ``Range`` (the
    layer in front of moto answers ``/plain/`` itself)."""
    streams = pytest.importorskip("aiohttp.streams")
    raw = _padded(after=BIG)
    hostile.plain["/plain/a.pt"] = (raw, False)
    hostile.plain["/plain/b.pt"] = (raw, True)
    stream_read = streams.StreamReader.read
    received = [0]

    async def counted(stream: Any, n: int = -1) -> bytes:
        chunk: bytes = await stream_read(stream, n)
        received[0] += len(chunk)
        return chunk

    monkeypatch.setattr(streams.StreamReader, "read", counted)
    url = f"{s3.options['endpoint_url']}/plain/a.pt"
    with pytest.raises(ReadError) as caught:
        ckptkeys.read(url)
    assert type(caught.value) is ReadError and str(caught.value).startswith(f"{url}: ")
    assert received[0] <= 2 * (HEAD_BYTES + TAIL_BYTES), f"{received[0]} bytes of {len(raw)} read"
    received[0] = 0  # a server that honours Range: the local result, from the head and the tail
    honest = f"{s3.options['endpoint_url']}/plain/b.pt"
    assert _outcome(lambda: ckptkeys.read(honest)) == _local(raw, honest)
    assert received[0] == HEAD_BYTES + TAIL_BYTES


@pytest.mark.parametrize("store", ["ignores If-Match", "lists no ETag"])
def test_s3_a_store_that_does_not_pin_is_still_never_read_as_a_mix(
    s3: S3, hostile: Hostile, monkeypatch: pytest.MonkeyPatch, store: str
) -> None:
    """A store (or proxy) that serves whatever it holds now despite ``If-Match``, or whose listing
    gives no ETag (nothing to pin): each answer's own ETag must still tie the reads together."""
    old, new = _two_versions()
    s3.put("nopin/a.pt", old)
    if store == "ignores If-Match":
        hostile.answer("nopin/a.pt", lambda environ, moto: moto({k: v for k, v in environ.items() if k != "HTTP_IF_MATCH"}))
    else:
        hostile.listing = lambda xml: re.sub(rb"<ETag>[^<]*</ETag>", b"", xml)
    s3.fs.invalidate_cache()
    folder = list_remote(f"s3://{s3.bucket}/nopin", _options(s3))
    _race(monkeypatch, "between-gets", lambda: s3.put("nopin/a.pt", new))
    result = _outcome(lambda: read_object(folder.open("a.pt"), Limits()))
    assert result[0] is ReadError and result[1].startswith("changed while being read"), result


def test_s3_listing_pages_and_odd_keys_are_read_as_listed(
    s3: S3, hostile: Hostile, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The S3 listing asked page by page (1,000 keys a page; here 2 keys a page, moto's MaxKeys):
    every key once, keys with a space, a plus, non-ASCII and percent signs as stored, each readable."""
    raw = SMALL.read_bytes()
    names = ["a b.pt", "c+d.pt", "é%20f.pt", "g/h.pt", "i.pt"]
    for name in names:
        s3.put(f"odd/{name}", raw)
    hostile.listing = lambda xml: xml  # counted only
    s3.fs.invalidate_cache()
    original = type(s3.fs)._call_s3

    async def small_pages(fs: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        if method == "list_objects_v2":
            kwargs["MaxKeys"] = 2
        return await original(fs, method, *args, **kwargs)

    folder = list_remote(f"s3://{s3.bucket}/odd", _options(s3))
    assert sorted(folder.entries) == sorted(names)
    monkeypatch.setattr(type(s3.fs), "_call_s3", small_pages)  # the same names from pages of 2 keys
    lists = hostile.lists
    paged = list_remote(f"s3://{s3.bucket}/odd", _options(s3))
    assert sorted(paged.entries) == sorted(names) and hostile.lists - lists == 3
    for name in names:
        url = f"s3://{s3.bucket}/odd/{name}"
        assert _outcome(lambda: read_object(folder.open(name), Limits())) == _local(raw, url), name
