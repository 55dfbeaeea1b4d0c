"""export from a URL: the same files, byte for byte, as the local export; bounded fetching; faults.

Every fixture the local export tests export (tests/test_export.py's EVERY_FIXTURE, the client
saves of tests/test_runs_export.py) is uploaded to moto's S3 server (tests/remote_support.py) and
exported from there, with the dtypes, weights and shard sizes the local tests use; every output
file is compared with the local export's. The server's request log shows what the write fetched:
ranged GETs only, no byte of an object twice.
"""

from __future__ import annotations

import array
import importlib.util
import os
import pathlib
import struct
from typing import Any

import pytest

import ckptkeys
from ckptkeys import ExportError, ReadError
from ckptkeys._cli import main
from ckptkeys._export import _fetch
from ckptkeys._export._fetch import FETCH_BYTES, FETCHES_AHEAD, Feed, blocks
from ckptkeys._export._spans import FileSpan
from ckptkeys._export._tensor_bytes import reads_of, tensor_entry
from ckptkeys._export._types import ExportTensor

from .conftest import DATA, FIXTURES
from .remote_support import S3, Fetched, memory, s3, s3_server, upload  # noqa: F401 (fixtures)
from .test_export import EVERY_FIXTURE

needs_numpy = pytest.mark.skipif(importlib.util.find_spec("numpy") is None, reason="casts need numpy")
TRAINER_SAVE = DATA / "clients" / "hf_trainer_z2_bf16" / "checkpoint-4"
LIGHTNING_SAVE = DATA / "clients" / "lightning_z2" / "epoch=0-step=4.ckpt" / "checkpoint"


def _files(folder: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _writes(s3: S3, since: int) -> list[Any]:
    """The object GETs (not listings) the server answered since entry ``since`` of its log."""
    return [e for e in s3.counter.log[since:] if e.method == "GET" and e.path.count("/") > 1]


def _assert_fetched_once(s3: S3, since: int, sizes: dict[str, int]) -> None:
    """Since ``since``: ranged GETs only, and no byte of an object fetched twice (their sum is at most its size)."""
    by_path: dict[str, list[tuple[int, int]]] = {}
    for entry in _writes(s3, since):
        assert entry.range is not None, f"a whole-object GET of {entry.path}"
        start, _, end = entry.range.removeprefix("bytes=").partition("-")
        by_path.setdefault(entry.path, []).append((int(start), int(end) + 1))
    for path, ranges in by_path.items():
        ranges.sort()
        for (_, end), (start, _) in zip(ranges, ranges[1:]):
            assert end <= start, f"{path}: bytes fetched twice"
        assert sum(end - start for start, end in ranges) <= sizes[path]


def _export_both(
    s3: S3, folder: pathlib.Path, prefix: str, tmp_path: pathlib.Path, **options: Any
) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The local export of ``folder`` and the export of its S3 copy (write phase checked: each byte once)."""
    local = tmp_path / f"local-{prefix}"
    ckptkeys.export(folder, local, **options)
    url = f"s3://{s3.bucket}/{prefix}"
    plan = ckptkeys.plan_export(url, storage_options=s3.options, **options)
    since = len(s3.counter.log)
    remote = tmp_path / f"remote-{prefix}"
    ckptkeys.write_export(plan, remote)
    sizes = {f"/{s3.bucket}/{prefix}/{p.relative_to(folder)}": p.stat().st_size for p in folder.rglob("*")}
    _assert_fetched_once(s3, since, sizes)
    return _files(local), _files(remote)


@needs_numpy
@pytest.mark.parametrize("name", EVERY_FIXTURE)
def test_s3_export_is_the_local_export_byte_for_byte(name: str, s3: S3, tmp_path: pathlib.Path) -> None:
    upload(s3.put, FIXTURES / name, name)
    for dtype in ("fp32", "auto", "bf16"):
        local, remote = _export_both(s3, FIXTURES / name, name, tmp_path / dtype, dtype=dtype)
        assert local == remote, f"{name} --dtype {dtype}"


@needs_numpy
def test_s3_export_weights_module_sharded_and_tp_rank(s3: S3, tmp_path: pathlib.Path) -> None:
    for name in ("z2_bf16_ws2", "z1_fp16_ws2", "tp2_z1_bf16"):
        upload(s3.put, FIXTURES / name, name)
    cases: list[tuple[str, dict[str, Any]]] = [
        ("z2_bf16_ws2", {"weights": "module"}),
        ("z1_fp16_ws2", {"weights": "module", "dtype": "bf16"}),
        ("z2_bf16_ws2", {"max_shard_size": 400}),  # shards and an index
        ("z2_bf16_ws2", {"max_shard_size": 400, "dtype": "bf16", "tag": "global_step3"}),
        ("tp2_z1_bf16", {"tp_rank": 1}),
    ]
    for i, (name, options) in enumerate(cases):
        local, remote = _export_both(s3, FIXTURES / name, name, tmp_path / str(i), **options)
        assert local == remote, (name, options)
        assert len(local) > 2 if "max_shard_size" in options else len(local) == 1


@needs_numpy
def test_s3_export_of_client_saves(s3: S3, tmp_path: pathlib.Path) -> None:
    """A Trainer save and a Lightning save: every file byte for byte, the side files a remote save's
    listing shows (config.json, generation_config.json) copied beside the weights as a local save's are."""
    for i, (folder, prefix) in enumerate(((TRAINER_SAVE, "trainer/checkpoint-4"), (LIGHTNING_SAVE, "lightning/epoch=0-step=4.ckpt/checkpoint"))):
        upload(s3.put, folder, prefix)
        for dtype in ("fp32", "auto"):
            local, remote = _export_both(s3, folder, prefix, tmp_path / f"{i}{dtype}", dtype=dtype)
            assert local == remote
            assert ("config.json" in remote) == (folder == TRAINER_SAVE)
    # A run folder: its newest save, or the one --save names (scan_run over the listing).
    upload(s3.put, TRAINER_SAVE.parent, "trainer-run")
    for save in (None, "checkpoint-2"):
        local, remote = _export_both(s3, TRAINER_SAVE.parent, "trainer-run", tmp_path / f"run-{save}", save=save)
        assert local == remote and "generation_config.json" in remote


def test_s3_export_command_with_storage_options(s3: S3, tmp_path: pathlib.Path) -> None:
    upload(s3.put, FIXTURES / "z2_bf16_ws2", "run")
    url = f"s3://{s3.bucket}/run"
    option = f"endpoint_url={s3.options['endpoint_url']}"
    assert main(["export", url, str(tmp_path / "cli"), "--storage-options", option, "-q"]) == 0
    ckptkeys.export(FIXTURES / "z2_bf16_ws2", tmp_path / "local")
    assert _files(tmp_path / "cli") == _files(tmp_path / "local")
    local = str(FIXTURES / "z2_bf16_ws2")
    assert main(["export", local, str(tmp_path / "x"), "--storage-options", option]) == 2  # a local path
    with pytest.raises(ValueError, match="apply to URLs only"):
        ckptkeys.plan_export(local, storage_options={})


def _optim(prefix: str) -> str:
    return f"{prefix}/global_step3/bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt"


def _left(folder: pathlib.Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_s3_throttling_the_retries_get_past_gives_the_same_bytes(
    s3: S3, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(type(s3.fs), "retries", 3)
    upload(s3.put, FIXTURES / "z2_bf16_ws2", "run")
    plan = ckptkeys.plan_export(f"s3://{s3.bucket}/run", storage_options=s3.options)
    key = f"/{s3.bucket}/{_optim('run')}"
    s3.counter.slow_down[key] = 2
    ckptkeys.write_export(plan, tmp_path / "remote")
    assert [e.status for e in s3.counter.log if e.path == key and e.status.startswith("503")] == ["503", "503"]
    ckptkeys.export(FIXTURES / "z2_bf16_ws2", tmp_path / "local")
    assert _files(tmp_path / "remote") == _files(tmp_path / "local")


def test_s3_throttling_that_stays_is_one_line_and_leaves_nothing(
    s3: S3, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(type(s3.fs), "retries", 2)  # s3fs's own retries (5 by default, with back-off)
    upload(s3.put, FIXTURES / "z2_bf16_ws2", "run")
    url = f"s3://{s3.bucket}/run"
    options = {**s3.options, "config_kwargs": {"retries": {"max_attempts": 2}}, "skip_instance_cache": True}
    plan = ckptkeys.plan_export(url, storage_options=options)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    key = f"/{s3.bucket}/{_optim('run')}"
    s3.counter.slow_down[key] = 1_000
    try:
        with pytest.raises(ReadError, match=rf"^s3://{s3.bucket}/{_optim('run')}: cannot be read: the store is thrott"):
            ckptkeys.write_export(plan, out)
        assert _left(out) == ["notes.txt"]
        # The command: one line naming the object, exit 2, nothing left.
        option = "{" + f'"endpoint_url": "{s3.options["endpoint_url"]}", "config_kwargs": ' + (
            '{"retries": {"max_attempts": 2}}, "skip_instance_cache": true}'
        )
        assert main(["export", url, str(out), "--storage-options", option, "-q"]) == 2
        assert _left(out) == ["notes.txt"]
    finally:
        s3.counter.slow_down[key] = 0


def test_s3_object_replaced_mid_export_is_refused(
    s3: S3, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload(s3.put, FIXTURES / "z2_bf16_ws2", "run")
    plan = ckptkeys.plan_export(f"s3://{s3.bucket}/run", storage_options=s3.options)
    source = FIXTURES / "z2_bf16_ws2" / _optim(".")
    fetch = _fetch._fetch
    done = [0]

    def fetch_then_replace(obj: Any, start: int, end: int) -> bytes:
        data = fetch(obj, start, end)
        done[0] += 1
        if done[0] == 1:  # the same size, another ETag: only the pin tells them apart
            s3.put(_optim("run"), source.read_bytes()[:-1] + b"!")
        return data

    monkeypatch.setattr(_fetch, "_fetch", fetch_then_replace)
    monkeypatch.setattr(_fetch, "FETCH_BYTES", 64)  # more GETs per object than the feed fetches ahead
    with pytest.raises(ReadError, match=r"changed while being read"):
        ckptkeys.write_export(plan, tmp_path / "out")
    assert _left(tmp_path / "out") == []


def test_s3_side_file_replaced_after_the_plan_is_refused_and_nothing_written(
    s3: S3, tmp_path: pathlib.Path
) -> None:
    """A side file is fetched pinned to the version the save's listing gave: replaced between the
    plan and the write (the same size), it is refused as changed naming it, and nothing is left."""
    upload(s3.put, TRAINER_SAVE, "trainer")
    plan = ckptkeys.plan_export(f"s3://{s3.bucket}/trainer", storage_options=s3.options)
    config = f"s3://{s3.bucket}/trainer/config.json"
    assert config in plan.side_files and set(plan.side_objects) == set(plan.side_files)
    text = (TRAINER_SAVE / "config.json").read_bytes()
    s3.put("trainer/config.json", text.replace(b'"gelu_new"', b'"gelu_old"'))
    with pytest.raises(ReadError, match=rf"^{config}: .*changed while being read"):
        ckptkeys.write_export(plan, tmp_path / "out")
    assert _left(tmp_path / "out") == []


def test_s3_side_file_over_the_limit_is_refused_naming_it(
    s3: S3, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ckptkeys._export import _side

    upload(s3.put, TRAINER_SAVE, "trainer")
    monkeypatch.setattr(_side, "MAX_SIDE_FILE_BYTES", 100)
    with pytest.raises(ExportError, match=rf"^s3://{s3.bucket}/trainer/config.json: is larger than 100 bytes"):
        ckptkeys.plan_export(f"s3://{s3.bucket}/trainer", storage_options=s3.options)


def test_s3_truncated_object_is_refused_and_nothing_written(s3: S3, tmp_path: pathlib.Path) -> None:
    upload(s3.put, FIXTURES / "z2_bf16_ws2", "run")
    raw = (FIXTURES / "z2_bf16_ws2" / _optim(".")).read_bytes()
    s3.put(_optim("run"), raw[: len(raw) // 2])  # an upload cut off
    with pytest.raises((ExportError, ReadError), match=rf"^s3://{s3.bucket}/run/global_step3/"):
        ckptkeys.export(f"s3://{s3.bucket}/run", tmp_path / "out", storage_options=s3.options)
    assert not (tmp_path / "out").exists() or _left(tmp_path / "out") == []
    assert s3.requests(_optim("run"))["whole"] == 0


def test_s3_connection_dropped_mid_body_is_one_error_and_leaves_nothing(
    s3: S3, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(type(s3.fs), "retries", 2)
    upload(s3.put, FIXTURES / "z2_bf16_ws2", "run")
    # A cut body is seen when the connection ends, or after the read timeout: make that short.
    config = {"read_timeout": 2, "connect_timeout": 2, "retries": {"max_attempts": 2}}
    options = {**s3.options, "config_kwargs": config, "skip_instance_cache": True}
    plan = ckptkeys.plan_export(f"s3://{s3.bucket}/run", storage_options=options)
    key = f"/{s3.bucket}/{_optim('run')}"
    app = s3.counter.app

    def dropping(environ: dict[str, Any], start_response: Any) -> Any:
        body = app(environ, start_response)
        if environ.get("PATH_INFO") != key or environ.get("HTTP_RANGE") is None:
            return body
        data = b"".join(body)

        def cut() -> Any:
            yield data[: len(data) // 2]
            raise ConnectionResetError("dropped mid-body")  # the server closes the connection

        return cut()

    monkeypatch.setattr(s3.counter, "app", dropping)
    with pytest.raises(ReadError, match=rf"^s3://{s3.bucket}/{_optim('run')}: ") as caught:
        ckptkeys.write_export(plan, tmp_path / "out")
    assert "\n" not in str(caught.value)
    assert _left(tmp_path / "out") == []


# -- the feed: order, merging, bound ----------------------------------------------------------


def _memory_object(memory: Fetched, name: str, data: bytes) -> Any:
    import fsspec

    from ckptkeys._read._source import open_remote

    fsspec.filesystem("memory").pipe(f"memory://{name}", data)
    return open_remote(f"memory://{name}")


def test_blocks_merge_touching_reads_and_cut_at_the_bound(memory: Fetched) -> None:
    a = _memory_object(memory, "a", b"")
    b = _memory_object(memory, "b", b"")
    reads = [(a, 0, 10), (a, 10, 30), (a, 40, 50), (b, 50, 60), (a, 60, 60), (a, 60, 2 * FETCH_BYTES + 70)]
    assert list(blocks(reads)) == [
        (a, 0, 30),
        (a, 40, 50),
        (b, 50, 60),
        (a, 60, FETCH_BYTES + 60),
        (a, FETCH_BYTES + 60, 2 * FETCH_BYTES + 60),
        (a, 2 * FETCH_BYTES + 60, 2 * FETCH_BYTES + 70),
    ]


def _floats(values: list[float], code: str = "f") -> bytes:
    return array.array(code, values).tobytes()


@needs_numpy
@pytest.mark.parametrize("kind", ["copy", "swap", "cast", "mean"])
def test_remote_tensor_bytes_are_the_local_ones_with_the_bound_held(
    kind: str, memory: Fetched, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each way a tensor's bytes are written (copied, byte-swapped, cast, averaged over slices)
    gives the same bytes from fetched spans, the feed never holding more than FETCHES_AHEAD GETs."""
    monkeypatch.setattr(_fetch, "FETCH_BYTES", 1000)  # many GETs, and blocks that cut elements
    n = 70_000  # a mean walks 256 KiB steps: more than one
    one = _floats([float(i % 251) - 3.5 for i in range(n)])
    two = _floats([float(i % 13) * 0.25 for i in range(n)])
    data = b"\0" * 12 + one + two
    local = tmp_path / "file.bin"
    local.write_bytes(data)
    remote = _memory_object(memory, "file.bin", data)

    def spans(where: str, obj: Any) -> tuple[FileSpan, FileSpan]:
        swap = 4 if kind == "swap" else 1
        return FileSpan(where, 12, 4 * n, swap, obj), FileSpan(where, 12 + 4 * n, 4 * n, swap, obj)

    def tensor(pair: tuple[FileSpan, FileSpan]) -> ExportTensor:
        dtype = "bfloat16" if kind == "cast" else "float32"
        if kind == "mean":
            return ExportTensor("t", (n,), dtype, "float32", (), "trainable", ((pair[0],), (pair[1],)))
        return ExportTensor("t", (2 * n,), dtype, "float32", pair, "trainable")

    expected = pathlib.Path(tmp_path / "local.out")
    with expected.open("wb") as out:
        tensor_entry(tensor(spans(str(local), None)), lambda _: None).write(out)
    most = [0]
    take = Feed.take

    def counted(self: Feed, span: FileSpan, offset: int, size: int) -> memoryview:
        got = take(self, span, offset, size)
        most[0] = max(most[0], len(self._ahead) + 1)
        return got

    monkeypatch.setattr(Feed, "take", counted)
    planned = tensor(spans("memory://file.bin", remote))
    fetched = tmp_path / "remote.out"
    with Feed(list(reads_of(planned))) as feed, fetched.open("wb") as out:
        tensor_entry(planned, lambda _: None, feed).write(out)
    assert fetched.read_bytes() == expected.read_bytes()
    assert most[0] == FETCHES_AHEAD
    calls = memory.calls["/file.bin"]
    assert all(start is not None and end is not None and end - start <= 1000 for start, end, _ in calls)
    assert sum(got for _, _, got in calls) == 8 * n  # each byte once
    if kind == "mean":  # the slices' values averaged, as local: (a + b) / 2
        first = struct.unpack("<f", fetched.read_bytes()[4:8])[0]
        assert first == (struct.unpack("<f", one[4:8])[0] + struct.unpack("<f", two[4:8])[0]) / 2


def test_memory_export_equals_local_and_confirms_each_object(memory: Fetched, tmp_path: pathlib.Path) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    upload(lambda name, data: fs.pipe(f"memory://{name}", data), FIXTURES / "z3_bf16_ws2", "z3")
    ckptkeys.export("memory://z3", tmp_path / "remote")
    ckptkeys.export(FIXTURES / "z3_bf16_ws2", tmp_path / "local")
    assert _files(tmp_path / "remote") == _files(tmp_path / "local")
    optim = "/z3/global_step3/bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt"
    assert memory.infos.get(optim, 0) >= 1  # the object's version asked once more after its bytes
