"""The safetensors writer, read back by the safetensors package's own loader (needs torch).

Random names (dots, unicode), dtypes, shapes (scalars, empty tensors) and metadata: every file
``_safetensors.write_temp`` writes (and ``publish`` renames) loads with ``safetensors.torch.load_file`` /
``safe_open`` to the same tensors, dtypes and metadata.
"""

from __future__ import annotations

import math
import pathlib
import tempfile
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ckptkeys._export._safetensors import ITEMSIZE, Entry, header_bytes, publish, write_temp

pytestmark = pytest.mark.deepspeed
torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
safetensors = pytest.importorskip("safetensors")

DTYPES = ["float32", "bfloat16", "float16", "int64", "int32", "int8", "uint8", "bool", "float64"]

_tensor = st.tuples(st.sampled_from(DTYPES), st.lists(st.integers(0, 5), max_size=3).map(tuple))
_names = st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12).filter(
    lambda n: n != "__metadata__"
)


def _entry(name: str, dtype: str, shape: tuple[int, ...], raw: bytes) -> Entry:
    def write(out: Any) -> None:
        out.write(raw)

    return Entry(name, dtype, shape, write)


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(_names, _tensor, max_size=6),
    st.dictionaries(st.text(max_size=5), st.text(max_size=8), max_size=3),
    st.randoms(use_true_random=False),
)
def test_written_files_load_with_safetensors(
    tensors: dict[str, tuple[str, tuple[int, ...]]], metadata: dict[str, str], rng: Any
) -> None:
    entries, expected = [], {}
    for name, (dtype, shape) in tensors.items():
        nbytes = math.prod(shape) * ITEMSIZE[dtype]
        raw = bytes(rng.getrandbits(8) for _ in range(nbytes))
        if dtype == "bool":
            raw = bytes(b & 1 for b in raw)  # safetensors checks nothing, torch wants 0/1
        entries.append(_entry(name, dtype, shape, raw))
        expected[name] = torch.tensor(list(raw), dtype=torch.uint8)  # the bytes, compared as bytes
    with tempfile.TemporaryDirectory() as tmp:
        path = str(pathlib.Path(tmp) / "model.safetensors")
        temp, size = write_temp(path, entries, metadata or None, fsync=False)
        publish(temp, path)
        assert size == pathlib.Path(path).stat().st_size
        loaded = safetensors_torch.load_file(path)
        with safetensors.safe_open(path, framework="pt") as handle:
            assert (handle.metadata() or {}) == metadata
    assert set(loaded) == set(expected)
    for name, (dtype, shape) in tensors.items():
        assert loaded[name].dtype == getattr(torch, dtype) and tuple(loaded[name].shape) == shape, name
        raw = loaded[name].contiguous().reshape(-1).view(torch.uint8) if loaded[name].numel() else torch.tensor([])
        assert torch.equal(raw.to(torch.uint8), expected[name]), name


def test_header_is_8_byte_aligned_and_parsed_by_safetensors() -> None:
    head = header_bytes([_entry("a", "float32", (3,), b"")], {"format": "pt"})
    assert len(head) % 8 == 0
    data = head + bytes(12)
    loaded = safetensors_torch.load(data)
    assert loaded["a"].tolist() == [0.0, 0.0, 0.0]


def test_a_short_writer_fails_and_leaves_nothing(tmp_path: pathlib.Path) -> None:
    entry = _entry("a", "float32", (4,), b"\0" * 8)  # 8 of the 16 bytes its header promises
    with pytest.raises(OSError, match="wrote 8 bytes, its header says 16"):
        write_temp(str(tmp_path / "model.safetensors"), [entry])
    assert list(tmp_path.iterdir()) == []
