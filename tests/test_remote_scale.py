"""Many remote files and the ways a store fails: ``read_many``'s batches, and one line per error.

A tag of many files is read in windows of :data:`READ_WINDOW` objects, each window's heads and
tails one asynchronous batch of at most :data:`FETCH_CONCURRENCY` GETs in flight, the next window
fetched while one is parsed, each object's bytes dropped once parsed. Every failure of the store
(no credentials, access denied, a missing bucket, prefix or object, throttling or a timeout that
stays, a refused connection) ends in one :class:`ReadError` naming the URL and saying what to fix,
after the filesystem's own retries. The S3 cases run against moto's server on 127.0.0.1 (the
timeout and the refused connection against a socket that never answers or nothing listening).
"""

from __future__ import annotations

import dataclasses
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
from ckptkeys._read import _source
from ckptkeys._read._limits import Limits
from ckptkeys._read._reader import read_object
from ckptkeys._read._source import FETCH_CONCURRENCY, READ_WINDOW, list_remote, read_many

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


def test_s3_tag_is_read_in_pipelined_windows_with_bytes_held_bounded(
    s3: S3, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    monkeypatch.setattr(_source, "READ_WINDOW", 8)
    tag = _wide_tag(tmp_path / "global_step3", 30)
    upload(s3.put, tag, "wide/global_step3")
    folder = list_remote(f"s3://{s3.bucket}/wide/global_step3", storage_options=s3.options)
    sources = [folder.open(name) for name in sorted(folder.entries)]
    events: list[tuple[str, int]] = []
    fetch_ahead = _source._fetch_ahead

    def fetch_logged(window: Any) -> Any:
        events.append(("fetch", sources.index(window[0])))
        return fetch_ahead(window)

    monkeypatch.setattr(_source, "_fetch_ahead", fetch_logged)
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
    # The next window's GETs are in flight while a window is parsed: fetch 8 before read 0, and so on.
    windows = [("fetch", 0), ("fetch", 8)] + [("read", i) for i in range(8)] + [("fetch", 16)]
    assert events[: len(windows)] == windows
    assert [e for e in events if e[0] == "fetch"] == [("fetch", at) for at in range(0, 31, 8)]
    # One window's heads and tails held (the next one's in flight), never all 31 files'.
    assert held_most[0] == 8
    assert all(not s.held for s in sources)  # every object's bytes dropped once read
    spent = [e for e in s3.counter.log[mark:] if e.path.startswith(f"/{s3.bucket}/wide/")]
    assert len(spent) == 31 and all(e.method == "GET" and e.range is not None for e in spent)


def test_s3_batch_keeps_gets_in_flight_together_and_bounded(s3: S3, tmp_path: pathlib.Path) -> None:
    tag = _wide_tag(tmp_path / "global_step3", 70)  # more than a window, more than the bound
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
    assert READ_WINDOW < 71


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
    tag = _wide_tag(tmp_path / "global_step3", READ_WINDOW + 3)
    fs = fsspec.filesystem("memory")
    upload(lambda name, data: fs.pipe(f"memory://{name}", data), tag, "mem/global_step3")
    url = "memory://mem/global_step3"
    remote = ckptkeys.scan(url, read=True)
    assert _same_layout(remote, ckptkeys.scan(tag, read=True), str(tag), url)
    assert all(len(calls) == 1 for calls in memory.calls.values())  # head and tail: one range per file
    assert len(memory.calls) == READ_WINDOW + 4  # no listing entry pins memory://: one info() after each read
    assert memory.infos == dict.fromkeys(memory.calls, 1)
