"""The structure byte budget: what a pickle makes is charged in bytes, and the charge is bounded.

A deflated data.pkl of 20M one-byte opcodes is a 19 KB file; counting objects and memo entries
let it build 1.4 GB. Each bomb here ends in a LimitError naming ``max_structure_bytes`` (never
a timing assertion: bench/bench_bombs.py measures time and memory). Reading also costs time by
the pickle's size, and opcodes that make nothing are charged nothing: a deflated data.pkl may
inflate at most ``max_inflate_ratio`` times its compressed size beyond its first MiB.
"""

from __future__ import annotations

import pathlib
import pickle

import pytest

import ckptkeys
from ckptkeys import LimitError, Limits
from ckptkeys._read._limits import DEFAULT_MAX_INFLATE_RATIO, DEFAULT_MAX_STRUCTURE_BYTES, INFLATE_ALLOWANCE
from ckptkeys._read._pickle import unpickle

from .conftest import FIXTURES
from .security_cases import _records, zip_archive

HEAD = b"\x80\x04"
GLOBAL = b"\x8c\x08builtins\x8c\x06object\x93\x94"  # memo 0
MiB = 1 << 20


def bombs(ops: int) -> dict[str, bytes]:
    return {
        "MEMOIZE": HEAD + b"N" + b"\x94" * ops + b".",
        "EMPTY_DICT": HEAD + b"}" * ops + b".",
        "EMPTY_LIST": HEAD + b"]" * ops + b".",
        "EMPTY_SET": HEAD + b"\x8f" * ops + b".",
        "DUP": HEAD + b"N" + b"2" * ops + b".",
        "REDUCE": HEAD + GLOBAL + b"0" + b"h\x00)R" * (ops // 4) + b".",
        "list of lists": HEAD + b"]" + b"]a" * (ops // 2) + b".",
        "nested lists": HEAD + b"]" * (ops // 2) + b"a" * (ops // 2 - 1) + b".",
        "list of dicts": HEAD + b"]" + b"}a" * (ops // 2) + b".",
        "dict items": HEAD + b"}" + b"".join(b"J" + i.to_bytes(4, "little") + b"Ns" for i in range(ops // 7)) + b".",
        "strings": HEAD + b"]" + (b"\x8c\x10" + b"x" * 16 + b"a") * (ops // 19) + b".",
    }


@pytest.mark.parametrize("name", sorted(bombs(0)))
def test_bomb_ends_at_the_budget(name: str) -> None:
    # 1M opcodes against a 1 MiB budget (the default's 1/128): every bomb is over it.
    with pytest.raises(LimitError, match=r"max_structure_bytes \(1048576\)") as caught:
        unpickle(bombs(1_000_000)[name], limits=Limits(max_structure_bytes=MiB))
    assert caught.value.limit == "max_structure_bytes"


@pytest.mark.parametrize("name", sorted(bombs(0)))
def test_same_pickles_fit_a_larger_budget(name: str) -> None:
    # The charge is per object: a five-hundredth of the opcodes fits where all of them did not.
    unpickle(bombs(2_000)[name], limits=Limits(max_structure_bytes=MiB, max_depth=2_000))


def test_19_kb_zip_bomb_under_the_default(tmp_path: pathlib.Path) -> None:
    # The red team's file: a 19 KB zip, a deflated data.pkl of 20M MEMOIZE.
    path = tmp_path / "bomb.pt"
    path.write_bytes(zip_archive(_records(HEAD + b"N" + b"\x94" * 20_000_000 + b"."), method=8))
    assert path.stat().st_size < 25_000
    with pytest.raises(LimitError, match="max_inflate_ratio") as caught:  # it inflates 1000 times
        ckptkeys.read(path)
    assert caught.value.value == DEFAULT_MAX_INFLATE_RATIO
    with pytest.raises(LimitError, match="max_structure_bytes") as caught:  # the budget ends it too
        ckptkeys.read(path, limits=Limits(max_inflate_ratio=10**6))
    assert caught.value.value == DEFAULT_MAX_STRUCTURE_BYTES


@pytest.mark.parametrize(
    "body",
    [b"\x80\x02" * 45_000_000, b"N0" * 19_000_000],  # opcodes that make nothing: no budget counts them
    ids=["PROTO", "NONE-POP"],
)
def test_small_deflated_opcode_bomb_is_refused_by_its_inflation(body: bytes, tmp_path: pathlib.Path) -> None:
    """The red team's 37-88 KB zips of 38-90 MB pickles (14-22 s to read): refused before inflating."""
    path = tmp_path / "bomb.pt"
    path.write_bytes(zip_archive(_records(body + b"}."), method=8))
    assert path.stat().st_size < 100_000
    with pytest.raises(LimitError, match=r"max_inflate_ratio \(100\)"):
        ckptkeys.read(path)


def test_deflated_pickles_within_the_ratio_or_the_allowance_are_read(tmp_path: pathlib.Path) -> None:
    import random

    rng = random.Random(19)
    varied = pickle.dumps({"values": [rng.random() for _ in range(200_000)]}, protocol=2)  # ~1.8 MB, ~1.1x
    repetitive = pickle.dumps({"names": ["module.layer.weight"] * 50_000}, protocol=2)  # < 1 MiB, deflates far
    for i, data in enumerate((varied, repetitive)):
        path = tmp_path / f"{i}.pt"
        path.write_bytes(zip_archive(_records(data), method=8))
        assert ckptkeys.read(path).data.keys() in ({"values"}, {"names"})
    assert len(varied) > INFLATE_ALLOWANCE and len(repetitive) < INFLATE_ALLOWANCE


def test_budget_error_carries_the_globals() -> None:
    data = HEAD + b"\x8c\x02os\x8c\x06system\x93" + b"}" * 100_000 + b"."
    with pytest.raises(LimitError) as caught:
        unpickle(data, limits=Limits(max_structure_bytes=MiB))
    assert [ref.qualname for ref in caught.value.globals] == ["os.system"]


def test_real_checkpoints_are_far_under_the_default() -> None:
    # The largest test checkpoint charges about 0.14 MB: 1/512 of the default refuses none.
    paths = sorted(FIXTURES.rglob("*.pt")) + sorted((FIXTURES.parent / "clients").rglob("*.pt"))
    assert paths
    for path in paths:
        ckptkeys.read(path, limits=Limits(max_structure_bytes=DEFAULT_MAX_STRUCTURE_BYTES // 512))


def test_limits_validate_the_budget() -> None:
    with pytest.raises(ValueError, match="max_structure_bytes"):
        Limits(max_structure_bytes=-1)
