"""``read()`` of a URL: the same result as the local copy, from a few ranged GETs, pinned to one version.

``memory://`` covers fsspec without a server; ``s3://`` runs against moto's S3 server on 127.0.0.1
(s3fs as the client), whose every request is logged by a WSGI wrapper: GETs, HEADs, LISTs and the
bytes sent per object are asserted, so a change that downloads whole files fails here.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import pathlib
import pprint
import sys
import threading
import zipfile
from collections.abc import Callable
from typing import Any

import pytest

import ckptkeys
from ckptkeys import CorruptCheckpointError, ReadError
from ckptkeys._read import _source
from ckptkeys._read._limits import Limits
from ckptkeys._read._reader import read_object
from ckptkeys._read._source import HEAD_BYTES, TAIL_BYTES, is_url, list_remote

from .conftest import DATA, FIXTURES
from .remote_support import S3, Fetched, memory, s3, s3_server, upload  # noqa: F401 (fixtures)

fsspec = pytest.importorskip("fsspec")

FIXTURE_FILES = sorted(FIXTURES.rglob("*.pt"))
# torch's legacy format (torch < 1.6) and a few refused files: same result, same error.
OTHER_FILES = [DATA / "torch" / "sample_legacy.pt", *sorted((DATA / "malicious").glob("*.pt"))[:12]]
SMALL = FIXTURES / "z2_bf16_ws2" / "global_step3" / "mp_rank_00_model_states.pt"


def _outcome(read: Callable[[], ckptkeys.Checkpoint]) -> tuple[Any, ...]:
    """What a read gives, paths aside: the checkpoint's fields, or the error's type, reason and globals."""
    try:
        checkpoint = read()
    except ReadError as error:
        return (type(error), error.reason, error.globals)
    return (
        pprint.pformat(checkpoint.data),  # an Opaque compares by identity; its repr is exact
        checkpoint.globals,
        checkpoint.storages,
        checkpoint.format,
        checkpoint.size,
        checkpoint.byteorder,
        checkpoint.storages_end,
    )


def _padded(source: pathlib.Path, *, before: int = 0, after: int = 0, members: int = 0) -> bytes:
    """A torch zip rebuilt (stored, as torch.save stores) with a member of ``before`` bytes ahead of
    data.pkl, one of ``after`` bytes after the storages, and ``members`` empty members more."""
    with zipfile.ZipFile(source) as original:
        infos = original.infolist()
        folder = infos[0].filename.split("/", 1)[0]
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as rebuilt:
            if before:  # in the archive's folder, ahead of data.pkl (torch.save writes it first)
                rebuilt.writestr(f"{folder}/padding_before", bytes(before))
            for info in infos:
                rebuilt.writestr(info, original.read(info))
            for number in range(members):
                rebuilt.writestr(f"{folder}/extra/{number:06d}", b"")
            if after:
                rebuilt.writestr(f"{folder}/padding_after", bytes(after))
    return out.getvalue()


def test_urls_are_told_from_paths() -> None:
    assert is_url("s3://bucket/a.pt") and is_url("memory://x/a.pt") and is_url("hf://datasets/x")
    assert not is_url("C:\\ckpt\\a.pt") and not is_url("run/s3://a.pt") and not is_url(pathlib.Path("s3://a"))
    with pytest.raises(ValueError, match="URLs only"):
        ckptkeys.read(SMALL, storage_options={"anon": True})


# -- memory:// ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", FIXTURE_FILES + OTHER_FILES, ids=lambda p: str(p.relative_to(DATA)))
def test_memory_url_reads_as_the_local_copy(memory: Fetched, path: pathlib.Path) -> None:
    raw = path.read_bytes()
    url = f"memory://ckpt/{path.name}"
    fsspec.filesystem("memory").pipe(url, raw)
    remote = _outcome(lambda: ckptkeys.read(url))
    assert remote == _outcome(lambda: ckptkeys.read(path))
    [(start, end, received)] = memory.calls["/ckpt/" + path.name]  # small files: head and tail merged
    assert (start, end, received) == (0, len(raw), len(raw))
    assert memory.infos["/ckpt/" + path.name] == 2  # pinned at first contact, confirmed after the read


def test_large_zip_fetches_head_and_tail_only(memory: Fetched) -> None:
    raw = _padded(SMALL, after=8 << 20)
    fsspec.filesystem("memory").pipe("memory://ckpt/big.pt", raw)
    local = io.BytesIO(raw)
    assert _outcome(lambda: ckptkeys.read("memory://ckpt/big.pt")) == _outcome(lambda: _read_bytes(local, "big.pt"))
    assert memory.calls["/ckpt/big.pt"] == [
        (0, HEAD_BYTES, HEAD_BYTES),
        (len(raw) - TAIL_BYTES, len(raw), TAIL_BYTES),
    ]


def test_a_pickle_past_the_head_is_the_third_get(memory: Fetched) -> None:
    raw = _padded(SMALL, before=1 << 20, after=1 << 20)
    fsspec.filesystem("memory").pipe("memory://ckpt/late.pt", raw)
    assert _outcome(lambda: ckptkeys.read("memory://ckpt/late.pt")) == _outcome(
        lambda: _read_bytes(io.BytesIO(raw), "late.pt")
    )
    calls = memory.calls["/ckpt/late.pt"]
    assert len(calls) == 3
    third_start, third_end, _ = calls[2]
    assert third_start is not None and third_end is not None
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        pickle = next(info for info in archive.infolist() if info.filename.endswith("/data.pkl"))
    assert third_start == pickle.header_offset  # the local header and the pickle, in one GET
    assert third_end >= pickle.header_offset + 30 + len(pickle.filename) + pickle.compress_size
    assert third_end - third_start < 128 << 10


def test_a_central_directory_past_the_tail_is_the_third_get(memory: Fetched) -> None:
    raw = _padded(SMALL, members=2_000, after=1 << 20)
    fsspec.filesystem("memory").pipe("memory://ckpt/many.pt", raw)
    assert _outcome(lambda: ckptkeys.read("memory://ckpt/many.pt")) == _outcome(
        lambda: _read_bytes(io.BytesIO(raw), "many.pt")
    )
    calls = memory.calls["/ckpt/many.pt"]
    assert len(calls) == 3
    directory_start = raw.rfind(b"PK\x01\x02", 0, raw.find(b"/data.pkl", len(raw) - (400 << 10)))
    start, end, _ = calls[2]
    assert start is not None and end is not None
    assert start <= directory_start < end == len(raw) - TAIL_BYTES


def test_legacy_pickles_are_fetched_not_the_storages(memory: Fetched) -> None:
    legacy = (DATA / "torch" / "sample_legacy.pt").read_bytes()
    raw = legacy + bytes(4 << 20)  # storages (here trailing bytes) are never fetched
    fsspec.filesystem("memory").pipe("memory://ckpt/legacy.pt", raw)
    assert ckptkeys.read("memory://ckpt/legacy.pt").format == "legacy"
    fetched = sum(received for _, _, received in memory.calls["/ckpt/legacy.pt"])
    assert fetched == HEAD_BYTES + TAIL_BYTES


def test_a_truncated_upload_is_found_from_the_tail(memory: Fetched) -> None:
    raw = _padded(SMALL, after=4 << 20)
    fsspec.filesystem("memory").pipe("memory://ckpt/cut.pt", raw[: len(raw) // 2])
    with pytest.raises(CorruptCheckpointError, match=r"^memory://ckpt/cut.pt: broken zip archive: no end"):
        ckptkeys.read("memory://ckpt/cut.pt")
    assert len(memory.calls["/ckpt/cut.pt"]) == 2


def test_an_object_replaced_while_read_is_refused(memory: Fetched, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = _padded(SMALL, before=1 << 20, after=1 << 20)
    fs = fsspec.filesystem("memory")
    fs.pipe("memory://ckpt/moving.pt", raw)
    _replace_after_first_fetch(monkeypatch, lambda: fs.pipe("memory://ckpt/moving.pt", raw + b"!"))
    with pytest.raises(ReadError, match=r"^memory://ckpt/moving.pt: changed while being read"):
        ckptkeys.read("memory://ckpt/moving.pt")


def test_a_missing_object_names_the_url(memory: Fetched) -> None:
    with pytest.raises(ReadError, match=r"^memory://ckpt/absent.pt: does not exist"):
        ckptkeys.read("memory://ckpt/absent.pt")
    with pytest.raises(ReadError, match=r"^memory://ckpt: is a directory, not a file"):
        fsspec.filesystem("memory").pipe("memory://ckpt/a.pt", b"x")
        ckptkeys.read("memory://ckpt")


def test_an_unknown_protocol_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import fsspec.core

    def missing(url: str, **options: Any) -> Any:
        raise ImportError("Install gcsfs to access Google Storage")

    monkeypatch.setattr(fsspec.core, "url_to_fs", missing)
    with pytest.raises(ReadError, match=r"^gs://b/a.pt: is a URL whose filesystem needs gcsfs \(pip install gcsfs\)$"):
        ckptkeys.read("gs://b/a.pt")


TAG = FIXTURES / "z2_bf16_ws2"
TAG_FILES = sorted(str(p.relative_to(TAG)) for p in TAG.rglob("*") if p.is_file())


def test_memory_folder_is_one_listing_then_one_get_per_file(memory: Fetched) -> None:
    fs = fsspec.filesystem("memory")
    for name in TAG_FILES:
        fs.pipe(f"memory://run/{name}", (TAG / name).read_bytes())
    folder = list_remote("memory://run/")
    assert sorted(folder.entries) == TAG_FILES
    assert memory.infos == {} and memory.calls == {}  # sizes and identities from the listing
    for name in TAG_FILES:
        if name.endswith(".pt"):
            remote = _outcome(functools.partial(read_object, folder.open(name), Limits()))
            assert remote == _outcome(functools.partial(ckptkeys.read, TAG / name)), name
            size = (TAG / name).stat().st_size
            assert memory.calls["/run/" + name] == [(0, size, size)]
            assert memory.infos["/run/" + name] == 1  # memory:// has no version token: confirmed after
    with pytest.raises(ReadError, match=r"^memory://nothing/here: does not exist"):
        list_remote("memory://nothing/here")


def test_without_fsspec_a_url_is_one_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in list(sys.modules) if m == "fsspec" or m.startswith("fsspec.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "fsspec", None)  # import fsspec raises ImportError
    with pytest.raises(ReadError, match=r"^s3://b/a.pt: is a URL: reading it needs fsspec \(pip install fsspec"):
        ckptkeys.read("s3://b/a.pt")


def _read_bytes(stream: io.BytesIO, name: str) -> ckptkeys.Checkpoint:
    """The local reader on bytes in memory (the reference a URL's result is compared with)."""
    from ckptkeys._read._limits import Limits
    from ckptkeys._read._reader import _read_zip

    return _read_zip(name, stream, len(stream.getvalue()), Limits())


def _replace_after_first_fetch(monkeypatch: pytest.MonkeyPatch, replace: Callable[[], object]) -> None:
    fetch = _source.RemoteObject.fetch
    done = threading.Event()

    def fetch_then_replace(self: _source.RemoteObject, ranges: Any) -> list[bytes]:
        parts = fetch(self, ranges)
        if not done.is_set():
            done.set()
            replace()
        return parts

    monkeypatch.setattr(_source.RemoteObject, "fetch", fetch_then_replace)


# -- s3:// against moto ------------------------------------------------------------------------


def test_s3_reads_every_fixture_as_the_local_copy(s3: S3) -> None:
    for path in FIXTURE_FILES + OTHER_FILES[:3]:
        name = str(path.relative_to(DATA))
        url = s3.put(name, path.read_bytes())
        before = s3.requests(name)
        remote = _outcome(functools.partial(ckptkeys.read, url, storage_options=s3.options))
        assert remote == _outcome(functools.partial(ckptkeys.read, path)), name
        after = s3.requests(name)
        spent = {kind: after[kind] - before[kind] for kind in after}
        # One HEAD (size and ETag, pinned), one ranged GET: head and tail merged in a small file.
        assert spent == {"GET": 1, "HEAD": 1, "LIST": 0, "bytes": path.stat().st_size, "whole": 0}, name


def test_s3_large_file_costs_two_ranged_gets(s3: S3) -> None:
    raw = _padded(SMALL, after=32 << 20)
    url = s3.put("big.pt", raw)
    before = s3.requests("big.pt")
    assert _outcome(lambda: ckptkeys.read(url, storage_options=s3.options)) == _outcome(
        lambda: _read_bytes(io.BytesIO(raw), "big.pt")
    )
    after = s3.requests("big.pt")
    spent = {kind: after[kind] - before[kind] for kind in after}
    assert spent == {"GET": 2, "HEAD": 1, "LIST": 0, "bytes": HEAD_BYTES + TAIL_BYTES, "whole": 0}


def test_s3_object_replaced_between_two_range_reads_is_refused(s3: S3, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = _padded(SMALL, before=1 << 20, after=1 << 20)
    url = s3.put("moving.pt", raw)
    _replace_after_first_fetch(monkeypatch, lambda: s3.put("moving.pt", raw.replace(b"padding", b"PADDING")))
    with pytest.raises(ReadError, match=rf"^{url}: changed while being read: the store no longer holds"):
        ckptkeys.read(url, storage_options=s3.options)
    assert s3.requests("moving.pt")["whole"] == 0


def test_s3_truncated_object(s3: S3) -> None:
    raw = _padded(SMALL, after=4 << 20)
    url = s3.put("cut.pt", raw[: len(raw) // 2])
    with pytest.raises(CorruptCheckpointError, match=rf"^{url}: broken zip archive: no end-of-central-directory"):
        ckptkeys.read(url, storage_options=s3.options)
    assert s3.requests("cut.pt")["GET"] == 2


def test_s3_missing_object_and_bucket(s3: S3) -> None:
    url = f"s3://{s3.bucket}/absent.pt"
    with pytest.raises(ReadError, match=rf"^{url}: does not exist"):
        ckptkeys.read(url, storage_options=s3.options)
    with pytest.raises(ReadError, match=r"^s3://no-such-bucket-here/a.pt: does not exist"):
        ckptkeys.read("s3://no-such-bucket-here/a.pt", storage_options=s3.options)


def test_s3_without_credentials_is_one_error_naming_the_url(s3: S3, monkeypatch: pytest.MonkeyPatch) -> None:
    url = s3.put("a.pt", SMALL.read_bytes())
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(ReadError, match=rf"^{url}: cannot be read: no credentials") as caught:
        ckptkeys.read(url, storage_options={**s3.options, "skip_instance_cache": True})
    assert "\n" not in str(caught.value)


def test_s3_folder_is_one_list_and_no_head(s3: S3) -> None:
    for name in TAG_FILES:
        s3.put(f"run/{name}", (TAG / name).read_bytes())
    s3.fs.invalidate_cache()
    mark = len(s3.counter.log)
    folder = list_remote(f"s3://{s3.bucket}/run", storage_options=s3.options)
    assert sorted(folder.entries) == TAG_FILES
    for name in TAG_FILES:
        if name.endswith(".pt"):
            remote = _outcome(functools.partial(read_object, folder.open(name), Limits()))
            assert remote == _outcome(functools.partial(ckptkeys.read, TAG / name)), name
    spent = s3.counter.log[mark:]
    lists = [e for e in spent if e.method == "GET" and e.path.strip("/") == s3.bucket]
    assert len(lists) == 1 and "list-type=2" in lists[0].query
    assert [e for e in spent if e.method == "HEAD"] == []
    reads = [e for e in spent if e.method == "GET" and e.path.startswith(f"/{s3.bucket}/run/")]
    pt_files = [name for name in TAG_FILES if name.endswith(".pt")]
    assert sorted(e.path for e in reads) == sorted(f"/{s3.bucket}/run/{name}" for name in pt_files)
    assert all(e.range is not None for e in reads)
    assert sum(e.sent for e in reads) == sum((TAG / name).stat().st_size for name in pt_files)


def test_s3_object_replaced_after_the_listing_is_refused(s3: S3) -> None:
    raw = SMALL.read_bytes()
    s3.put("listed/a.pt", raw)
    folder = list_remote(f"s3://{s3.bucket}/listed", storage_options=s3.options)
    s3.put("listed/a.pt", raw[:-2] + b"\1\1")  # same size, another ETag (a torch zip ends with 0, 0)
    url = f"s3://{s3.bucket}/listed/a.pt"
    with pytest.raises(ReadError, match=rf"^{url}: changed while being read"):
        read_object(folder.open("a.pt"), Limits())


# -- scan() of a remote folder ---------------------------------------------------------------------

SAVES = sorted(p for p in FIXTURES.iterdir() if p.is_dir())


def _layout_text(layout: ckptkeys.Layout, root: str, url: str) -> str:
    """Everything a scan found, every path spelled from ``url``: equal for a folder and its copy."""
    return repr(dataclasses.astuple(layout)).replace(root, url)


@pytest.mark.parametrize("save", SAVES, ids=lambda p: p.name)
def test_memory_scan_is_the_local_scan(memory: Fetched, save: pathlib.Path) -> None:
    fs = fsspec.filesystem("memory")
    upload(lambda name, data: fs.pipe(f"memory://{name}", data), save, f"saves/{save.name}")
    url = f"memory://saves/{save.name}"
    for read in (False, True):
        remote = ckptkeys.scan(url, read=read)
        assert _layout_text(remote, url, url) == _layout_text(ckptkeys.scan(save, read=read), str(save), url)
    tag = next(p for p in save.iterdir() if p.is_dir())  # a tag folder given itself
    local = ckptkeys.scan(tag, read=True)
    assert _layout_text(ckptkeys.scan(f"{url}/{tag.name}", read=True), url, url) == _layout_text(local, str(save), url)


def test_s3_scan_is_one_list_then_one_get_per_file(s3: S3) -> None:
    save = FIXTURES / "z2_bf16_ws2"
    upload(s3.put, save, "scan")
    url = f"s3://{s3.bucket}/scan"
    for read in (False, True):
        s3.fs.invalidate_cache()
        mark = len(s3.counter.log)
        remote = ckptkeys.scan(url, read=read, storage_options=s3.options)
        local = ckptkeys.scan(save, read=read)
        assert _layout_text(remote, url, url) == _layout_text(local, str(save), url)
        spent = s3.counter.log[mark:]
        lists = [e for e in spent if e.method == "GET" and e.path.strip("/") == s3.bucket]
        gets = sorted(e.path for e in spent if e.method == "GET" and e not in lists)
        pt_files = sorted(f"/{s3.bucket}/scan/{p.relative_to(save)}" for p in save.rglob("*.pt"))
        assert len(lists) == 1 and [e for e in spent if e.method == "HEAD"] == []
        assert gets == sorted([f"/{s3.bucket}/scan/latest", *(pt_files if read else [])])


def test_remote_scan_errors_name_the_url(memory: Fetched) -> None:
    with pytest.raises(ReadError, match=r"^memory://nothing: does not exist"):
        ckptkeys.scan("memory://nothing")
    fsspec.filesystem("memory").pipe("memory://plain/notes.txt", b"x")
    with pytest.raises(ckptkeys.NotACheckpointError, match=r"^memory://plain: holds no DeepSpeed checkpoint"):
        ckptkeys.scan("memory://plain")
    with pytest.raises(ckptkeys.NotACheckpointError, match=r"^memory://plain: .*no tag folders and no save folders"):
        ckptkeys.scan("memory://plain", save="checkpoint-1")  # a run's save is chosen remotely too: none here
    with pytest.raises(ValueError, match="storage_options apply to URLs only"):
        ckptkeys.scan(FIXTURES / "z2_bf16_ws2", storage_options={})


def test_s3_throttling_is_retried_to_the_right_answer_or_one_error(s3: S3, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(type(s3.fs), "retries", 3)  # s3fs's own retries (5 by default, with back-off)
    raw = _padded(SMALL, after=1 << 20)
    url = s3.put("slow.pt", raw)
    key = f"/{s3.bucket}/slow.pt"
    s3.counter.slow_down[key] = 2  # the store's retries get past two 503s
    expected = _outcome(lambda: _read_bytes(io.BytesIO(raw), "slow.pt"))
    assert _outcome(functools.partial(ckptkeys.read, url, storage_options=s3.options)) == expected
    assert [e.status for e in s3.counter.log if e.path == key and e.status.startswith("503")] == ["503", "503"]
    s3.counter.slow_down[key] = 1_000  # throttled for good: one line naming the URL, after the retries
    options = {**s3.options, "config_kwargs": {"retries": {"max_attempts": 2}}}  # and s3fs's own retries
    throttled = rf"^{url}: cannot be read: the store is throttling requests, still after retries \(.*request rate"
    with pytest.raises(ReadError, match=throttled) as caught:
        ckptkeys.read(url, storage_options={**options, "skip_instance_cache": True})
    assert "\n" not in str(caught.value)
    s3.counter.slow_down[key] = 0


def test_remote_scan_reads_a_tags_files_concurrently_and_bounded(
    memory: Fetched, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    from fsspec.implementations.memory import MemoryFileSystem

    from ckptkeys._read._many import SYNC_FETCH_THREADS

    tag = tmp_path / "global_step3"  # 40 optimizer shards: more files than reads at once
    tag.mkdir()
    shard = (TAG / "global_step3" / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt").read_bytes()
    for rank in range(40):
        (tag / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").write_bytes(shard)
    (tag / "mp_rank_00_model_states.pt").write_bytes((TAG / "global_step3" / "mp_rank_00_model_states.pt").read_bytes())
    fs = fsspec.filesystem("memory")
    upload(lambda name, data: fs.pipe(f"memory://{name}", data), tag, "wide/global_step3")
    counted = MemoryFileSystem.cat_file  # the counting wrapper of the memory fixture
    lock = threading.Lock()
    active, most, calls = [0], [0], [0]
    # The first two reads wait for each other: read one after another, the first would wait alone
    # until the barrier breaks, and its file would be unreadable.
    pair = threading.Barrier(2, timeout=60)

    def in_flight(self: Any, path: str, start: int | None = None, end: int | None = None, **kw: Any) -> Any:
        with lock:
            active[0] += 1
            calls[0] += 1
            most[0] = max(most[0], active[0])
            first_two = calls[0] <= 2
        try:
            if first_two:
                pair.wait()
            return counted(self, path, start, end, **kw)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(MemoryFileSystem, "cat_file", in_flight)
    remote = ckptkeys.scan("memory://wide/global_step3", read=True)
    url = "memory://wide/global_step3"
    assert _layout_text(remote, url, url) == _layout_text(ckptkeys.scan(tag, read=True), str(tag), url)
    assert not remote.tags[0].read_errors and len(remote.tags[0].checkpoints) == 41
    assert 2 <= most[0] <= SYNC_FETCH_THREADS
