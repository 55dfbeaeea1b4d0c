"""Archive-level attacks and limits, and a fuzz test over real and hostile pickles."""

from __future__ import annotations

import contextlib
import io
import pathlib
import struct
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ckptkeys
from ckptkeys import CorruptCheckpointError, LimitError, Limits, ReadError
from ckptkeys._read._pickle import _check_depth, unpickle

from .conftest import DATA, FIXTURES

GOOD = FIXTURES / "z2_bf16_ws2" / "global_step3" / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt"


def _members() -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(GOOD) as archive:
        return [(info, archive.read(info)) for info in archive.infolist()]


def _write(path: pathlib.Path, members: list[tuple[str, bytes]]) -> pathlib.Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members:
            archive.writestr(name, data)
    return path


def test_duplicate_members(tmp_path: pathlib.Path) -> None:
    members = [(info.filename, data) for info, data in _members()]
    with pytest.warns(UserWarning, match="Duplicate name"):  # zipfile warns the writer, and lets it
        path = _write(tmp_path / "dup.pt", [*members, (members[0][0], members[0][1])])
    with pytest.raises(CorruptCheckpointError, match="appears twice"):
        ckptkeys.read(path)


@pytest.mark.parametrize("bad", ["/abs/data.pkl", "../escape/data.pkl", "archive/../../x", "C:/data.pkl"])
def test_member_names_outside_the_archive(tmp_path: pathlib.Path, bad: str) -> None:
    members = [(info.filename, data) for info, data in _members()]
    path = tmp_path / "escape.pt"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members:
            archive.writestr(name, data)
        info = zipfile.ZipInfo("placeholder")
        info.filename = bad  # ZipInfo would normalise a leading slash away
        archive.writestr(info, b"x")
    with pytest.raises(CorruptCheckpointError, match="outside the archive"):
        ckptkeys.read(path)


def test_overlapping_members(tmp_path: pathlib.Path) -> None:
    raw = bytearray(GOOD.read_bytes())
    with zipfile.ZipFile(GOOD) as archive:
        infos = archive.infolist()
    # Point the second central-directory entry at the first member's local header.
    entries = [i for i in range(len(raw)) if raw[i : i + 4] == b"PK\x01\x02"]
    assert len(entries) == len(infos)
    struct.pack_into("<I", raw, entries[1] + 42, infos[0].header_offset)
    path = tmp_path / "overlap.pt"
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptCheckpointError, match="overlap"):
        ckptkeys.read(path)


def test_zip_bomb_is_refused_by_declared_size(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02" + b"N" * (3 << 20) + b".")
    with pytest.raises(LimitError, match="max_pickle_bytes"):
        ckptkeys.read(path, limits=Limits(max_pickle_bytes=1 << 20))
    assert path.stat().st_size < 100_000  # a small file that would expand


def test_zip_bomb_that_lies_about_its_size(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "liar.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02" + b"N" * (3 << 20) + b".")
    raw = bytearray(path.read_bytes())
    # Claim 100 bytes uncompressed in both the local header and the central directory.
    struct.pack_into("<I", raw, 22, 100)
    central = raw.rfind(b"PK\x01\x02")
    struct.pack_into("<I", raw, central + 24, 100)
    path.write_bytes(bytes(raw))
    with pytest.raises((LimitError, CorruptCheckpointError)):
        ckptkeys.read(path, limits=Limits(max_pickle_bytes=1 << 20))


def test_member_count_is_checked_before_the_directory_is_parsed(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path / "many.pt", [(f"archive/data/{i}", b"") for i in range(50)] + [("archive/data.pkl", b"N.")])
    with pytest.raises(LimitError, match=r"max_zip_members \(10\)"):
        ckptkeys.read(path, limits=Limits(max_zip_members=10))


def test_memo_and_object_limits() -> None:
    with pytest.raises(LimitError, match="max_memo"):
        unpickle(b"\x80\x02" + b"N\x94" * 20 + b".", limits=Limits(max_memo=10))
    with pytest.raises(LimitError, match="max_objects"):
        unpickle(b"\x80\x02" + b"N" * 20 + b".", limits=Limits(max_objects=10))
    with pytest.raises(LimitError, match="max_int_digits"):
        unpickle(b"\x80\x02I" + b"9" * 5000 + b"\n.")
    with pytest.raises(LimitError, match="max_line_bytes"):
        unpickle(b"\x80\x02S'" + b"a" * 100 + b"'\n.", limits=Limits(max_line_bytes=50))


# -- fuzz ------------------------------------------------------------------------------------------


def _pickles() -> list[bytes]:
    found = [p.read_bytes() for p in sorted((DATA / "malicious").glob("*.pkl"))]
    for path in sorted(FIXTURES.rglob("*.pt"))[:12]:
        with zipfile.ZipFile(path) as archive:
            found += [archive.read(n) for n in archive.namelist() if n.endswith("data.pkl")]
    return found


SEEDS = _pickles()


@settings(max_examples=400, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=6), st.data())
def test_mutated_pickles(seed: bytes, flips: list[tuple[int, int]], data: st.DataObject) -> None:
    raw = bytearray(seed)
    for position, value in flips:
        raw[position % len(raw)] = value
    if data.draw(st.booleans()):
        cut = data.draw(st.integers(0, len(raw)))
        raw = raw[:cut] + raw[cut + data.draw(st.integers(0, 8)) :]
    try:
        result = unpickle(bytes(raw), limits=Limits(max_objects=200_000))
    except ReadError:
        return
    # The container count the reader trusts to skip its depth pass really bounds the depth.
    assert _check_depth(result.value, 10**9, "") <= max(result.containers, 0)


@settings(max_examples=60, deadline=3000, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([*sorted((DATA / "malicious").glob("*.pt")), GOOD]), st.integers(0, 5000), st.integers(0, 255))
def test_mutated_archives(path: pathlib.Path, position: int, value: int) -> None:
    from ckptkeys._read import _reader

    raw = bytearray(path.read_bytes())
    raw[position % len(raw)] = value
    with contextlib.suppress(ReadError):
        _reader._read_zip(path.name, io.BytesIO(bytes(raw)), len(raw), Limits())


# -- partial results -------------------------------------------------------------------------------


def _damage(folder: pathlib.Path) -> dict[str, str]:
    """Break three of the five files of a MoE tag, each in its own way; the name -> how."""
    tag = folder / "global_step3"
    garbage = tag / "layer_0_expert_1_mp_rank_00_model_states.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    truncated = tag / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    truncated.write_bytes(truncated.read_bytes()[:3000])
    bad_pickle = tag / "mp_rank_00_model_states.pt"
    with zipfile.ZipFile(bad_pickle) as archive:
        members = [(info.filename, archive.read(info)) for info in archive.infolist()]
    members = [(name, b"\x80\x02\xff" + data if name.endswith("data.pkl") else data) for name, data in members]
    _write(bad_pickle, members)
    return {
        str(garbage): "not a torch checkpoint",
        str(truncated): "broken zip",
        str(bad_pickle): "unknown opcode 0xff",
    }


def test_every_good_file_and_one_problem_per_bad_file(tmp_path: pathlib.Path) -> None:
    import json
    import shutil
    import subprocess
    import sys

    root = tmp_path / "ckpt"
    shutil.copytree(FIXTURES / "moe_z2_fp32_ep2", root)
    bad = _damage(root)
    good = {str(p) for p in (root / "global_step3").iterdir()} - set(bad)
    assert len(good) == 2

    layout = ckptkeys.scan(root, read=True)
    (tag,) = layout.tags
    assert {f.path for f in tag.files} == good | set(bad)  # every file is still listed
    assert {tag.path + "/" + relpath for relpath in tag.checkpoints} == good
    unreadable = [p for p in tag.problems if p.code == "unreadable-file"]
    assert sorted(str(p.file) for p in unreadable) == sorted(bad)
    for problem in unreadable:
        assert bad[str(problem.file)] in problem.message

    report = ckptkeys.validate_folder(root)
    for path in bad:  # one problem per bad file, not a cascade
        assert [p.code for p in report.all_problems if p.file == path] == ["unreadable-file"]

    result = subprocess.run(
        [sys.executable, "-m", "ckptkeys", "inspect", "--json", str(root)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1, result.stderr
    (document,) = json.loads(result.stdout)["tags"]
    entries = {entry["path"]: entry for entry in document["files"]}
    assert set(entries) == good | set(bad)
    assert all(entries[path]["readable"] and entries[path]["top_level_keys"] for path in good)
    assert not any(entries[path]["readable"] for path in bad)
    assert sorted(p["file"] for p in document["problems"] if p["code"] == "unreadable-file") == sorted(bad)


def test_depth_counts_inside_persistent_ids() -> None:
    """A raw pickle's persistent id is kept as PersistentRef(pid): a deep pid is measured too."""
    depth = 300
    deep = b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"Q."
    with pytest.raises(LimitError, match="max_depth"):
        unpickle(deep)
    shallow = b"\x80\x02" + b"]" * 10 + b"a" * 9 + b"Q."
    assert type(unpickle(shallow).value).__name__ == "PersistentRef"


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.integers() | st.text(max_size=3),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.tuples(inner)
            | st.dictionaries(st.text(max_size=2), inner, max_size=3)
            | st.frozensets(st.integers(), max_size=2)
        ),
        max_leaves=40,
    ),
    st.integers(0, 5),
)
def test_container_count_bounds_the_depth_of_pickled_structures(value: object, protocol: int) -> None:
    import pickle

    result = unpickle(pickle.dumps(value, protocol=protocol))
    assert result.value == value
    assert _check_depth(result.value, 10**9, "") <= result.containers


def _with_declared_count(archive: bytes, count: int, zip64: bool) -> bytes:
    """The archive with its end record declaring ``count`` members (in a ZIP64 record if asked)."""
    eocd = archive[-22:]
    assert eocd.startswith(b"PK\x05\x06")
    cd_size, cd_offset = struct.unpack_from("<II", eocd, 12)
    body = archive[:-22]
    if body[-20:].startswith(b"PK\x06\x07"):  # torch writes a ZIP64 record and locator: drop them
        body = body[: -20 - 56]
        assert body[cd_offset + cd_size :] == b""
    if not zip64:
        return body + eocd[:8] + struct.pack("<HH", count, count) + eocd[12:]
    record = b"PK\x06\x06" + struct.pack("<QHHIIQQQQ", 44, 45, 45, 0, 0, count, count, cd_size, cd_offset)
    locator = b"PK\x06\x07" + struct.pack("<IQI", 0, len(body), 1)
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return body + record + locator + end


@pytest.mark.parametrize("zip64", [False, True])
def test_declared_member_count_is_checked_before_zipfile_parses(tmp_path: pathlib.Path, zip64: bool) -> None:
    honest = _with_declared_count(GOOD.read_bytes(), len(_members()), zip64)
    path = tmp_path / "honest.pt"
    path.write_bytes(honest)
    assert ckptkeys.read(path).data  # zipfile reads the ZIP64 form too
    path.write_bytes(_with_declared_count(GOOD.read_bytes(), 60_000, zip64))
    # Only the declared count is too high (zipfile itself would list the few real members).
    with pytest.raises(LimitError, match=r"max_zip_members \(1000\)"):
        ckptkeys.read(path, limits=Limits(max_zip_members=1000))


@pytest.mark.parametrize("kind", [list, tuple, dict])
def test_shared_references_are_walked_once_by_the_command(kind: type, tmp_path: pathlib.Path) -> None:
    """40 levels of ten references to the level below (a file of a few KB, 10**40 paths): inspect returns.

    The structure ckptkeys.read returns is a graph, as torch's is: the command's summaries visit
    each object once. The subprocess timeout is a hang guard, not a timing.
    """
    import pickle
    import subprocess
    import sys

    from .conftest import ROOT
    from .security_cases import _records, zip_archive

    level: object = []
    for _ in range(40):
        level = {str(i): level for i in range(10)} if kind is dict else kind([level] * 10)
    path = tmp_path / "shared.pt"
    path.write_bytes(zip_archive(_records(pickle.dumps({"module": level, "tensor_count": 0}, protocol=2))))
    assert path.stat().st_size < 8192
    for options in ([], ["--json"]):
        result = subprocess.run(
            [sys.executable, "-m", "ckptkeys", "inspect", *options, str(path)],
            capture_output=True,
            text=True,
            env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
            timeout=120,
            check=False,
        )
        assert result.returncode in (0, 1), result.stderr
        assert "module" in result.stdout
