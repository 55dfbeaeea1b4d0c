"""validate's check that every zip storage record lies inside its file, on a remote tag.

A local file's record is checked from its local header (``_check/_complete._record_extents``);
a remote file's while it is read, from the head and tail it holds, fetching only the headers the
central directory cannot settle (``_read/_reader._record_ends``). The problems are the local
copy's, paths aside, and an intact file costs no GET beyond its head and tail.
"""

from __future__ import annotations

import io
import pathlib
import shutil
import struct
import zipfile
from types import SimpleNamespace
from typing import Any, cast

import pytest

import ckptkeys
from ckptkeys._check._validate import check_tag
from ckptkeys._read._limits import Limits
from ckptkeys._read._reader import _record_ends
from ckptkeys._read._ranged import RangedStream
from ckptkeys._read._source import HEAD_BYTES, TAIL_BYTES, open_remote

from .conftest import FIXTURES
from .remote_support import Fetched, memory, upload  # noqa: F401 (fixtures)

fsspec = pytest.importorskip("fsspec")

SAVES = sorted(p for p in FIXTURES.iterdir() if p.is_dir())
TAG = FIXTURES / "z2_bf16_ws2" / "global_step3"
MODEL = "mp_rank_00_model_states.pt"


def _problems(target: str, root: str) -> list[str]:
    """Every problem ``check_tag`` reports for every tag of ``target``, each path spelled from ``root``."""
    found = []
    for tag in ckptkeys.scan(target, read=True).tags:
        for problem in check_tag(tag).problems:
            text = repr((problem.severity, problem.code, problem.message, problem.file, problem.key_path))
            found.append(text.replace(target, root))
    return found


def _both(tmp_path: pathlib.Path, files: dict[str, bytes]) -> tuple[list[str], list[str]]:
    """The problems of one tag folder holding ``files``, read locally and from memory://."""
    local = tmp_path / "tag"
    local.mkdir()
    fs = fsspec.filesystem("memory")
    for name, data in files.items():
        (local / name).write_bytes(data)
        fs.pipe(f"memory://records/tag/{name}", data)
    return _problems(str(local), "ROOT"), _problems("memory://records/tag", "ROOT")


def _tag_files() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(TAG.iterdir()) if p.is_file()}


def _storage_headers(data: bytes) -> dict[str, int]:
    """Where each ``data/N`` record's local header starts, by record name."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {i.filename: i.header_offset for i in archive.infolist() if "/data/" in i.filename}


def _with_extra_length(data: bytes, record: str, length: int) -> bytes:
    """``data`` with the local header of ``record`` declaring an extra field of ``length`` bytes
    (the central directory unchanged): its data start that much later."""
    at = _storage_headers(data)[record] + 28
    return data[:at] + struct.pack("<H", length) + data[at + 2 :]


def _spread(data: bytes, *, mid: int, after: int) -> bytes:
    """A torch zip rebuilt (stored) with ``mid`` bytes between ``byteorder`` and the storages and
    ``after`` bytes after them: the storages' headers then in neither the fetched head nor tail."""
    with zipfile.ZipFile(io.BytesIO(data)) as original:
        infos = original.infolist()
        folder = infos[0].filename.split("/", 1)[0]
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as rebuilt:
            for info in infos:
                if "/data/" in info.filename and mid:
                    rebuilt.writestr(f"{folder}/padding_mid", bytes(mid))
                    mid = 0
                rebuilt.writestr(info, original.read(info))
                if info.filename.endswith("/data/" + _last_storage(infos)):
                    rebuilt.writestr(f"{folder}/padding_after", bytes(after))
    return out.getvalue()


def _last_storage(infos: list[zipfile.ZipInfo]) -> str:
    return [i.filename for i in infos if "/data/" in i.filename][-1].rsplit("/", 1)[1]


@pytest.mark.parametrize("save", SAVES, ids=lambda p: p.name)
def test_every_fixture_tag_checks_as_the_local_copy(memory: Fetched, save: pathlib.Path) -> None:
    fs = fsspec.filesystem("memory")
    upload(lambda name, data: fs.pipe(f"memory://{name}", data), save, f"saves/{save.name}")
    assert _problems(f"memory://saves/{save.name}", "ROOT") == _problems(str(save), "ROOT")


def test_a_record_past_the_end_in_held_bytes_is_the_local_copys_problem(
    memory: Fetched, tmp_path: pathlib.Path
) -> None:
    files = _tag_files()
    headers = _storage_headers(files[MODEL])
    last = max(headers, key=lambda name: headers[name])
    files[MODEL] = _with_extra_length(files[MODEL], last, 0xFFFF)
    local, remote = _both(tmp_path, files)
    assert remote == local
    assert any("truncated-file" in p and "extends past the end of the file" in p for p in remote)


def test_an_intact_spread_file_costs_only_its_head_and_tail(memory: Fetched, tmp_path: pathlib.Path) -> None:
    files = _tag_files()
    files[MODEL] = _spread(files[MODEL], mid=2 * HEAD_BYTES, after=2 * TAIL_BYTES)
    local, remote = _both(tmp_path, files)
    assert remote == local
    assert not any("truncated-file" in p for p in remote)
    fetched = memory.calls["/records/tag/" + MODEL]
    assert len(fetched) == 2 and all(start in (0, len(files[MODEL]) - TAIL_BYTES) for start, _, _ in fetched)


def test_a_record_the_bound_cannot_settle_has_its_header_fetched(memory: Fetched) -> None:
    """A directory entry whose size ends a record within torch's alignment padding of the end (or
    past it), its header in neither head nor tail: that one header is fetched (one more GET), and
    the reason is the one a local file's check gives from the same header."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", b"")
        archive.writestr("archive/data/0", bytes(3 * TAIL_BYTES))
    data = bytearray(out.getvalue())
    central = data.rindex(b"PK\x01\x02")  # data/0's entry, the last one
    struct.pack_into("<L", data, central + 20, 3 * TAIL_BYTES + 200)  # its compressed size: 200 bytes more
    fs = fsspec.filesystem("memory")
    fs.pipe("memory://records/spread.pt", bytes(data))
    stream = RangedStream(open_remote("memory://records/spread.pt"))
    stream.prefetch([(0, 30), (len(data) - TAIL_BYTES, len(data))])  # the header at 46: not held
    storages = {"0": SimpleNamespace(key="0")}
    checkpoint = cast("Any", SimpleNamespace(size=len(data), storages=storages))
    reason = _record_ends("memory://records/spread.pt", stream, checkpoint, Limits())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        header = archive.getinfo("archive/data/0").header_offset
    assert reason == "zip member 'archive/data/0' extends past the end of the file"
    starts = [start for start, _, _ in memory.calls["/records/spread.pt"]]
    assert len(starts) == 3 and starts[-1] == header


def test_a_local_copy_is_untouched_by_the_remote_check(tmp_path: pathlib.Path) -> None:
    shutil.copytree(TAG, tmp_path / "tag")
    assert all(not tag.record_ends for tag in ckptkeys.scan(str(tmp_path / "tag"), read=True).tags)
