"""Remote stores for the tests: a counted ``memory://`` filesystem and an S3 server (moto) on 127.0.0.1.

Import the fixtures into a test module (``from .remote_support import memory, s3, s3_server``) to use
them; the server is one per test session, each test gets a fresh bucket.
"""

from __future__ import annotations

import atexit
import itertools
import pathlib
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass
class Fetched:
    """Every cat_file a test's reads made, by path: (start, end, bytes returned)."""

    calls: dict[str, list[tuple[int | None, int | None, int]]]
    infos: dict[str, int]


@pytest.fixture
def memory(monkeypatch: pytest.MonkeyPatch) -> Iterator[Fetched]:
    """A fresh memory:// filesystem whose reads are counted (a wrapper around cat_file and info)."""
    fsspec = pytest.importorskip("fsspec")
    from fsspec.implementations.memory import MemoryFileSystem

    fs = fsspec.filesystem("memory")
    saved = dict(fs.store), list(fs.pseudo_dirs)
    fs.store.clear()
    fetched = Fetched({}, {})
    cat_file, info = MemoryFileSystem.cat_file, MemoryFileSystem.info

    def counted_cat_file(self: Any, path: str, start: int | None = None, end: int | None = None, **kw: Any) -> Any:
        data = cat_file(self, path, start, end, **kw)
        fetched.calls.setdefault(self._strip_protocol(path), []).append((start, end, len(data)))
        return data

    def counted_info(self: Any, path: str, **kw: Any) -> Any:
        key = self._strip_protocol(path)
        fetched.infos[key] = fetched.infos.get(key, 0) + 1
        return info(self, path, **kw)

    monkeypatch.setattr(MemoryFileSystem, "cat_file", counted_cat_file)
    monkeypatch.setattr(MemoryFileSystem, "info", counted_info)
    yield fetched
    fs.store.clear()
    fs.store.update(saved[0])
    fs.pseudo_dirs[:] = saved[1]


@dataclass
class Logged:
    method: str
    path: str
    query: str
    range: str | None
    status: str
    sent: int


_SLOW_DOWN = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"


class _Counter:
    """A WSGI wrapper that logs every request the S3 server answers, and the body bytes it sent."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.log: list[Logged] = []
        self.lock = threading.Lock()
        self.slow_down: dict[str, int] = {}
        """Object path -> how many of its next ranged GETs are answered 503 SlowDown (throttling)."""

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        with self.lock:
            throttled = environ.get("HTTP_RANGE") is not None and self.slow_down.get(path, 0) > 0
            if throttled:
                self.slow_down[path] -= 1
                self.log.append(Logged("GET", path, "", environ.get("HTTP_RANGE"), "503", 0))
        if throttled:
            start_response("503 Slow Down", [("Content-Type", "application/xml")])
            return [_SLOW_DOWN]
        status: list[str] = []

        def start(code: str, headers: Any, *info: Any) -> Any:
            status.append(code)
            return start_response(code, headers, *info)

        body = list(self.app(environ, start))
        entry = Logged(
            environ["REQUEST_METHOD"],
            environ.get("PATH_INFO", ""),
            environ.get("QUERY_STRING", ""),
            environ.get("HTTP_RANGE"),
            status[0] if status else "",
            sum(len(chunk) for chunk in body),
        )
        with self.lock:
            self.log.append(entry)
        return body

    def requests(self, key: str) -> dict[str, int]:
        """GETs, HEADs and bytes sent for the object ``key`` (``/bucket/key``), LISTs of its bucket."""
        bucket = key.split("/")[1]
        with self.lock:
            mine = [e for e in self.log if e.path == key]
            lists = [e for e in self.log if e.method == "GET" and e.path.strip("/") == bucket]
        return {
            "GET": sum(e.method == "GET" for e in mine),
            "HEAD": sum(e.method == "HEAD" for e in mine),
            "LIST": len(lists),
            "bytes": sum(e.sent for e in mine if e.method == "GET"),
            "whole": sum(e.method == "GET" and e.range is None for e in mine),
        }


_SERVER: list[tuple[str, _Counter]] = []  # the one server of the process, once started


@pytest.fixture(scope="session")
def s3_server() -> tuple[str, _Counter]:
    """The S3 server (endpoint, request counter): one per process, however many test modules
    import this fixture (each import is a fixture of its own to pytest; moto's store is one)."""
    pytest.importorskip("s3fs")
    server_module = pytest.importorskip("moto.server")
    if not _SERVER:
        server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        atexit.register(server.stop)
        counter = _Counter(server._server.app)
        server._server.app = counter
        host, port = server.get_host_and_port()
        _SERVER.append((f"http://{host}:{port}", counter))
    return _SERVER[0]


_BUCKETS = itertools.count()


@pytest.fixture
def s3(s3_server: tuple[str, _Counter], monkeypatch: pytest.MonkeyPatch) -> Iterator[S3]:
    """Fake credentials (real ones never found), a fresh bucket, the server's request log."""
    endpoint, counter = s3_server
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_CONFIG_FILE": "/dev/null",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    options = {"endpoint_url": endpoint}
    fs = s3fs.S3FileSystem(**options)  # the instance read() gets too: one session for the test
    # Unique in the process: each module importing s3_server gets its own server (and counter), but
    # moto's store is one per process, so a name from the counter's length would come round again.
    bucket = f"ckpt-{next(_BUCKETS)}"
    fs.mkdir(bucket)
    yield S3(fs, bucket, options, counter)
    s3fs.S3FileSystem.clear_instance_cache()


@dataclass
class S3:
    fs: Any
    bucket: str
    options: dict[str, Any]
    counter: _Counter

    def put(self, name: str, data: bytes) -> str:
        self.fs.pipe(f"{self.bucket}/{name}", data)
        return f"s3://{self.bucket}/{name}"

    def requests(self, name: str) -> dict[str, int]:
        return self.counter.requests(f"/{self.bucket}/{name}")


def upload(put: Callable[[str, bytes], object], folder: pathlib.Path, prefix: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            put(f"{prefix}/{path.relative_to(folder)}", path.read_bytes())
