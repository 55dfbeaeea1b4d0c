"""Many remote files and the ways a store fails: ``read_many``'s batches, and one line per error.

A tag of many files is read with its heads and tails fetched :data:`READ_AHEAD` objects ahead of
the one parsed, at most :data:`FETCH_CONCURRENCY` GETs in flight on the filesystem's loop, each
object's bytes dropped once parsed. Every failure of the store
(no credentials, access denied, a missing bucket, prefix or object, throttling or a timeout that
stays, a refused connection) ends in one :class:`ReadError` naming the URL and saying what to fix,
after the filesystem's own retries. The S3 cases run against moto's server on 127.0.0.1 (the
timeout and the refused connection against a socket that never answers or nothing listening).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import pathlib
import pprint
import re
import socket
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

import ckptkeys
from ckptkeys import ReadError
from ckptkeys._read import _many, _remote_errors, _source
from ckptkeys._read._limits import Limits
from ckptkeys._read._reader import read_object
from ckptkeys._read._many import READ_AHEAD, read_many
from ckptkeys._read._source import FETCH_CONCURRENCY, list_remote

from .conftest import FIXTURES
from .remote_support import S3, Fetched, memory, s3, s3_server, upload  # noqa: F401 (fixtures)

fsspec = pytest.importorskip("fsspec")

TAG = FIXTURES / "z2_bf16_ws2" / "global_step3"
SHARD = TAG / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt"


def _wide_tag(folder: pathlib.Path, ranks: int) -> pathlib.Path:
    """A tag of ``ranks`` optimizer shards (copies of the fixture's) and its model states."""
    folder.mkdir()
    for rank in range(ranks):
        (folder / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").write_bytes(SHARD.read_bytes())
    (folder / "mp_rank_00_model_states.pt").write_bytes((TAG / "mp_rank_00_model_states.pt").read_bytes())
    return folder


def _same_layout(remote: ckptkeys.Layout, local: ckptkeys.Layout, root: str, url: str) -> bool:
    """Everything both scans found, every path spelled from ``url``."""
    return repr(dataclasses.astuple(remote)) == repr(dataclasses.astuple(local)).replace(root, url)


# -- many files --------------------------------------------------------------------------------------


def test_s3_tag_is_fetched_a_bounded_number_of_files_ahead_and_its_bytes_dropped(
    s3: S3, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    monkeypatch.setattr(_many, "READ_AHEAD", 8)
    tag = _wide_tag(tmp_path / "global_step3", 30)
    upload(s3.put, tag, "wide/global_step3")
    folder = list_remote(f"s3://{s3.bucket}/wide/global_step3", storage_options=s3.options)
    sources = [folder.open(name) for name in sorted(folder.entries)]
    events: list[tuple[str, int]] = []
    fetch_ahead = _many._fetch_ahead

    def fetch_logged(fetcher: Any, source: _source.RemoteObject) -> Any:
        events.append(("fetch", sources.index(source)))
        return fetch_ahead(fetcher, source)

    monkeypatch.setattr(_many, "_fetch_ahead", fetch_logged)
    held_most = [0]

    def read(source: _source.RemoteObject) -> ckptkeys.Checkpoint:
        held_most[0] = max(held_most[0], sum(bool(s.held) for s in sources))
        events.append(("read", sources.index(source)))
        return read_object(source, Limits())

    mark = len(s3.counter.log)
    results = list(read_many(sources, read))
    local = [ckptkeys.read(tag / name) for name in sorted(folder.entries)]
    read_back = [pprint.pformat(r.data) for r in results]  # type: ignore[union-attr]
    assert read_back == [pprint.pformat(c.data) for c in local]
    # 8 files' GETs in flight before the first is parsed; each one taken starts the next one's.
    ahead = [("fetch", i) for i in range(8)]
    ahead += [event for i in range(23) for event in (("fetch", i + 8), ("read", i))]
    ahead += [("read", i) for i in range(23, 31)]
    assert events == ahead
    assert held_most[0] == 1  # the file parsed holds its bytes; those ahead are in flight
    assert all(not s.held for s in sources)  # every object's bytes dropped once read
    spent = [e for e in s3.counter.log[mark:] if e.path.startswith(f"/{s3.bucket}/wide/")]
    assert len(spent) == 31 and all(e.method == "GET" and e.range is not None for e in spent)


def test_s3_batch_keeps_gets_in_flight_together_and_bounded(s3: S3, tmp_path: pathlib.Path) -> None:
    tag = _wide_tag(tmp_path / "global_step3", 70)  # more files than are fetched ahead, more GETs than the bound
    upload(s3.put, tag, "many/global_step3")
    url = f"s3://{s3.bucket}/many/global_step3"
    lock = threading.Lock()
    active, most = [0], [0]
    app = s3.counter.app

    def in_flight(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        ranged = environ.get("HTTP_RANGE") is not None
        with lock:
            active[0] += ranged
            most[0] = max(most[0], active[0])
        try:
            return list(app(environ, start_response))
        finally:
            with lock:
                active[0] -= ranged

    s3.counter.app = in_flight
    try:
        remote = ckptkeys.scan(url, read=True, storage_options=s3.options)
    finally:
        s3.counter.app = app
    assert _same_layout(remote, ckptkeys.scan(tag, read=True), str(tag), url)
    assert not remote.tags[0].read_errors and len(remote.tags[0].checkpoints) == 71
    assert 2 <= most[0] <= FETCH_CONCURRENCY
    assert READ_AHEAD < 71


def test_a_failed_object_in_a_batch_is_its_own_error(s3: S3, tmp_path: pathlib.Path) -> None:
    tag = _wide_tag(tmp_path / "global_step3", 5)
    upload(s3.put, tag, "one/global_step3")
    folder = list_remote(f"s3://{s3.bucket}/one/global_step3", storage_options=s3.options)
    name = "bf16_zero_pp_rank_2_mp_rank_00_optim_states.pt"
    raw = SHARD.read_bytes()
    s3.put(f"one/global_step3/{name}", raw[:-2] + b"\1\1")  # replaced after the listing
    sources = [folder.open(n) for n in sorted(folder.entries)]
    results = list(read_many(sources, lambda source: read_object(source, Limits())))
    url = f"s3://{s3.bucket}/one/global_step3/{name}"
    failed = [r for r in results if isinstance(r, ReadError)]
    assert len(failed) == 1 and str(failed[0]).startswith(f"{url}: changed while being read")
    assert sum(isinstance(r, ckptkeys.Checkpoint) for r in results) == 5


def test_memory_tag_read_many_is_the_local_read(memory: Fetched, tmp_path: pathlib.Path) -> None:
    tag = _wide_tag(tmp_path / "global_step3", READ_AHEAD + 3)
    fs = fsspec.filesystem("memory")
    upload(lambda name, data: fs.pipe(f"memory://{name}", data), tag, "mem/global_step3")
    url = "memory://mem/global_step3"
    remote = ckptkeys.scan(url, read=True)
    assert _same_layout(remote, ckptkeys.scan(tag, read=True), str(tag), url)
    assert all(len(calls) == 1 for calls in memory.calls.values())  # head and tail: one range per file
    assert len(memory.calls) == READ_AHEAD + 4  # no listing entry pins memory://: one info() after each read
    assert memory.infos == dict.fromkeys(memory.calls, 1)


# -- errors: one line naming the URL, saying what to fix -----------------------------------------------


def _one_line(error: pytest.ExceptionInfo[ReadError], shape: str) -> None:
    text = str(error.value)
    assert "\n" not in text
    assert re.fullmatch(shape, text), text


def _no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


FIX_CREDENTIALS = (
    r"cannot be read: no credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY \(or AWS_PROFILE\) or pass "
    r"storage_options key/secret \(anon=true for a public bucket\) \(.*\)"
)


def test_s3_no_credentials(s3: S3, monkeypatch: pytest.MonkeyPatch) -> None:
    url = s3.put("run/global_step3/mp_rank_00_model_states.pt", (TAG / "mp_rank_00_model_states.pt").read_bytes())
    _no_credentials(monkeypatch)
    options = {**s3.options, "skip_instance_cache": True}
    with pytest.raises(ReadError) as caught:
        ckptkeys.read(url, storage_options=options)
    _one_line(caught, rf"{re.escape(url)}: {FIX_CREDENTIALS}")
    folder = f"s3://{s3.bucket}/run"
    with pytest.raises(ReadError) as caught:
        ckptkeys.scan(folder, storage_options=options)
    _one_line(caught, rf"{re.escape(folder)}: {FIX_CREDENTIALS}")


_DENIED = (
    b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message><RequestId>1</RequestId></Error>"
)


@pytest.fixture
def deny(s3: S3) -> Iterator[set[str]]:
    """Paths (``/bucket`` for its listing, ``/bucket/key``) the server answers 403 AccessDenied."""
    denied: set[str] = set()
    app = s3.counter.app

    def policy(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "").rstrip("/") in denied:
            start_response("403 Forbidden", [("Content-Type", "application/xml")])
            return [] if environ["REQUEST_METHOD"] == "HEAD" else [_DENIED]
        return list(app(environ, start_response))

    s3.counter.app = policy
    yield denied
    s3.counter.app = app


def test_s3_access_denied(s3: S3, deny: set[str]) -> None:
    url = s3.put("secret/a.pt", (TAG / "mp_rank_00_model_states.pt").read_bytes())
    denied = r"cannot be read: access denied: the credentials in use may not read it \(.*\)"
    deny.add(f"/{s3.bucket}/secret/a.pt")
    with pytest.raises(ReadError) as caught:  # the HEAD of info()
        ckptkeys.read(url, storage_options=s3.options)
    _one_line(caught, rf"{re.escape(url)}: {denied}")
    folder = list_remote(f"s3://{s3.bucket}/secret", storage_options=s3.options)
    with pytest.raises(ReadError) as caught:  # a ranged GET, its size from the listing
        read_object(folder.open("a.pt"), Limits())
    _one_line(caught, rf"{re.escape(url)}: {denied}")
    deny.add(f"/{s3.bucket}")  # the listing too
    with pytest.raises(ReadError) as caught:
        ckptkeys.scan(f"s3://{s3.bucket}/secret", storage_options={**s3.options, "skip_instance_cache": True})
    _one_line(caught, rf"s3://{s3.bucket}/secret: {denied}")


def test_s3_missing_bucket_prefix_and_object(s3: S3) -> None:
    s3.put("run/a.pt", (TAG / "mp_rank_00_model_states.pt").read_bytes())
    for url, call in [
        ("s3://no-such-bucket-here/run", ckptkeys.scan),
        ("s3://no-such-bucket-here/run/a.pt", ckptkeys.read),
        (f"s3://{s3.bucket}/nothing-here", ckptkeys.scan),
        (f"s3://{s3.bucket}/run/absent.pt", ckptkeys.read),
    ]:
        with pytest.raises(ReadError) as caught:
            call(url, storage_options=s3.options)  # type: ignore[operator]
        _one_line(caught, rf"{re.escape(url)}: does not exist \(.*\)")


def test_s3_throttling_that_stays_in_a_tag(s3: S3, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(type(s3.fs), "retries", 2)  # s3fs's own retries (5 by default, with back-off)
    upload(s3.put, TAG, "slow/global_step3")
    name = "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt"
    s3.counter.slow_down[f"/{s3.bucket}/slow/global_step3/{name}"] = 1_000
    options = {**s3.options, "config_kwargs": {"retries": {"total_max_attempts": 1}}, "skip_instance_cache": True}
    try:
        layout = ckptkeys.scan(f"s3://{s3.bucket}/slow/global_step3", read=True, storage_options=options)
    finally:
        s3.counter.slow_down.clear()
    [tag] = layout.tags
    assert sorted(tag.read_errors) == [name] and len(tag.checkpoints) == 2  # the others are read
    error = tag.read_errors[name]
    url = f"s3://{s3.bucket}/slow/global_step3/{name}"
    shape = rf"{re.escape(url)}: cannot be read: the store is throttling requests, still after retries \(.*\)"
    assert re.fullmatch(shape, str(error)), error
    throttled = [e for e in s3.counter.log if e.path.endswith(name) and e.status.startswith("503")]
    assert len(throttled) == 2  # s3fs asked twice (botocore once each) before giving up


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                return
            held.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    server.close()
    for connection in held:
        connection.close()
    thread.join(timeout=5)


def _unreachable_options(port: int) -> dict[str, Any]:
    return {
        "endpoint_url": f"http://127.0.0.1:{port}",
        "config_kwargs": {"read_timeout": 0.2, "connect_timeout": 0.2, "retries": {"total_max_attempts": 1}},
        "skip_instance_cache": True,
    }


def test_s3_timeout(s3: S3, silent_server: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(type(s3.fs), "retries", 2)
    options = _unreachable_options(silent_server)
    timed_out = (
        r"cannot be read: timed out after 0\.2 s, still after retries: the store did not answer \(a slow network "
        r"or endpoint: raise read_timeout/connect_timeout in storage_options config_kwargs\) \(Read timeout .*\)"
    )
    for url, call in [("s3://bucket/run/a.pt", ckptkeys.read), ("s3://bucket/run", ckptkeys.scan)]:
        with pytest.raises(ReadError) as caught:
            call(url, storage_options=options)  # type: ignore[operator]
        _one_line(caught, rf"{re.escape(url)}: {timed_out}")


def test_s3_connection_refused(s3: S3, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(type(s3.fs), "retries", 2)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    refused = (
        r"cannot be read: cannot connect to the store: check endpoint_url and the network \(Could not connect .*\)"
    )
    for url, call in [("s3://bucket/run/a.pt", ckptkeys.read), ("s3://bucket/run", ckptkeys.scan)]:
        with pytest.raises(ReadError) as caught:
            call(url, storage_options=_unreachable_options(port))  # type: ignore[operator]
        _one_line(caught, rf"{re.escape(url)}: {refused}")


# -- GCS and the Hub: their real filesystem classes, their HTTP calls answered here (no network) ------


def test_gcs_every_read_carries_the_generation_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gcsfs")
    from urllib.parse import parse_qs, unquote, urlparse

    fs = fsspec.filesystem("gs", token="anon", skip_instance_cache=True)
    data = SHARD.read_bytes()
    stored: dict[tuple[str, str], bytes] = {("run/a.pt", "111"): data, ("run/b.pt", "7"): data}
    asked: list[tuple[str, str | None]] = []

    async def call(self: Any, method: str, url: str, *args: Any, headers: Any = None, **kw: Any) -> Any:
        parsed = urlparse(url)
        name = unquote(parsed.path.split("/o/", 1)[1])
        generation = parse_qs(parsed.query).get("generation", [None])[0]
        asked.append((name, generation))
        if (name, generation or "") not in stored:
            raise FileNotFoundError(url)  # what gcsfs raises for a 404
        first, last = (int(n) for n in headers["Range"].removeprefix("bytes=").split("-"))
        return {}, stored[name, generation or ""][first : last + 1]

    async def not_zonal(self: Any, bucket: str) -> bool:
        return False

    monkeypatch.setattr(type(fs), "_call", call)
    monkeypatch.setattr(type(fs), "_is_zonal_bucket", not_zonal)
    infos = {  # as the JSON API lists them, through gcsfs's own _process_object
        name: fs._process_object("bkt", {"name": name, "size": str(len(data)), "generation": generation,
                                         "metageneration": "1", "etag": "CJ6j", "updated": "2026-12-07T04:00:00.1Z"})
        for name, generation in stored
    }  # fmt: skip
    sources = [
        _source.RemoteObject(f"gs://bkt/{name}", fs, f"bkt/{name}", info, _source.Requests())
        for name, info in infos.items()
    ]
    assert sources[0].identity[0] == ("generation", "111")
    results = list(read_many(sources, lambda source: read_object(source, Limits())))
    local = pprint.pformat(ckptkeys.read(SHARD).data)
    assert [pprint.pformat(r.data) for r in results] == [local, local]  # type: ignore[union-attr]
    assert sorted(asked) == [("run/a.pt", "111"), ("run/b.pt", "7")]  # one GET each, pinned; no info()
    stored = {("run/a.pt", "112"): data}  # replaced: generation 111 is gone
    again = _source.RemoteObject("gs://bkt/run/a.pt", fs, "bkt/run/a.pt", infos["run/a.pt"], _source.Requests())
    with pytest.raises(ReadError) as caught:
        read_object(again, Limits())
    _one_line(caught, r"gs://bkt/run/a\.pt: changed while being read: generation 111 is no longer stored")


def test_hub_url_at_a_branch_is_read_at_the_commit_it_names(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("huggingface_hub")
    from huggingface_hub import HfApi, HfFileSystem

    commit = "0123456789abcdef0123456789abcdef01234567"
    asked: list[tuple[str, str | None, str]] = []

    def repo_info(self: Any, repo_id: str, *, repo_type: str | None = None, revision: str = "", **kw: Any) -> Any:
        asked.append((repo_id, repo_type, revision))
        return type("Info", (), {"sha": commit})()

    monkeypatch.setattr(HfFileSystem, "_repo_and_revision_exist", lambda self, *args: (True, None))
    monkeypatch.setattr(HfApi, "repo_info", repo_info)
    options = {"token": False, "skip_instance_cache": True}
    for url, pinned in [
        ("hf://user/model/global_step3/a.pt", f"user/model@{commit}/global_step3/a.pt"),
        ("hf://datasets/user/data@v1.0/run", f"datasets/user/data@{commit}/run"),
    ]:
        fs, path = _source._filesystem(url, options)
        assert "HfFileSystem" in _source._classes(fs) and path == pinned
    assert asked == [("user/model", "model", "main"), ("user/data", "dataset", "v1.0")]
    fs, path = _source._filesystem(f"hf://user/model@{commit}/a.pt", options)  # a commit already: no call
    assert path == f"user/model@{commit}/a.pt" and len(asked) == 2


def test_hub_errors_say_what_to_fix() -> None:
    class RepositoryNotFoundError(Exception):
        pass

    class GatedRepoError(Exception):
        pass

    class HfHubHTTPError(Exception):
        def __init__(self, status: int) -> None:
            super().__init__(f"{status} Client Error")
            self.response = type("Response", (), {"status_code": status})()

    url = "hf://user/model/a.pt"
    for error, shape in [
        (RepositoryNotFoundError("404 Client Error: Repository Not Found"), r"does not exist \(404 .*\)"),
        (GatedRepoError("403 gated"), r"cannot be read: access denied: the credentials in use may not read it \(.*\)"),
        (HfHubHTTPError(401), r"cannot be read: no credentials: set HF_TOKEN \(or run hf auth login\) or pass "
                              r"storage_options token \(401 Client Error\)"),
        (HfHubHTTPError(429), r"cannot be read: the store is throttling requests, still after retries \(.*\)"),
    ]:  # fmt: skip
        text = str(_remote_errors.remote_error(url, error))
        assert re.fullmatch(rf"{re.escape(url)}: {shape}", text), text


def test_gcs_errors_say_what_to_fix() -> None:
    gcsfs_retry = pytest.importorskip("gcsfs.retry")
    url = "gs://bkt/run/a.pt"
    for status, shape in [
        (401, r"cannot be read: no credentials: set GOOGLE_APPLICATION_CREDENTIALS or pass storage_options token "
              r"\(token='anon' for a public bucket\) \(.*\)"),
        (403, r"cannot be read: access denied: the credentials in use may not read it \(Forbidden: bkt/run/a\.pt .*\)"),
        (404, r"does not exist \(bkt/run/a\.pt\)"),
        (429, r"cannot be read: the store is throttling requests, still after retries \(.*\)"),
    ]:  # fmt: skip
        body = b'{"error": {"code": %d, "message": "refused here"}}' % status
        with pytest.raises(Exception) as raised:  # what gcsfs raises for the answer (after its retries)
            gcsfs_retry.validate_response(status, body, "bkt/run/a.pt")
        text = str(_remote_errors.remote_error(url, raised.value))
        assert re.fullmatch(rf"{re.escape(url)}: {shape}", text), text


def _command(*argv: str) -> tuple[int, str, str]:
    """``ckptkeys ARGV``: its exit status, stdout and stderr."""
    from ckptkeys._cli._main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("command", ["inspect", "validate"])
def test_each_store_failure_ends_the_command_in_one_line_exit_2(
    s3: S3, deny: set[str], silent_server: int, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setattr(type(s3.fs), "retries", 2)
    upload(s3.put, TAG, "run/global_step3")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    refused_port = closed.getsockname()[1]
    closed.close()
    fresh = {**s3.options, "skip_instance_cache": True}
    s3.fs.mkdir(f"{s3.bucket}-denied")
    deny.add(f"/{s3.bucket}-denied")  # its listing answered 403
    cases = [
        (f"s3://{s3.bucket}-denied/run", fresh, "cannot be read: access denied: the credentials in use may not"),
        (f"s3://{s3.bucket}-absent/run", fresh, "does not exist ("),
        ("s3://bucket/run", _unreachable_options(silent_server), "cannot be read: timed out after 0.2 s, still after"),
        ("s3://bucket/run", _unreachable_options(refused_port), "cannot be read: cannot connect to the store: check"),
    ]
    for url, options, message in cases:
        status, out, err = _command(command, url, "--storage-options", json.dumps(options))
        assert status == 2 and out == "", (url, err)
        assert err.count("\n") == 1 and f"{url}: {message}" in err, err
    _no_credentials(monkeypatch)
    url = f"s3://{s3.bucket}/run"
    status, out, err = _command(command, url, "--storage-options", json.dumps(fresh))
    assert status == 2 and err.count("\n") == 1 and f"{url}: cannot be read: no credentials: set AWS_" in err, err
