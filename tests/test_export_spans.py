"""The byte-range arithmetic of export plans, against slicing the bytes themselves (hypothesis).

A plan is byte ranges of files; cutting, concatenating along a dimension, halving and joining
ranges must give exactly the bytes that slicing the joined array would. Checked on random
shapes and splits with a real file of known bytes, independently of DeepSpeed.
"""

from __future__ import annotations

import itertools
import math
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ckptkeys._export._ranges import chunk2, coalesce, concatenate, cut_range
from ckptkeys._export._spans import FileSpan
from ckptkeys._export._types import ExportTensor
from ckptkeys._export._tensor_bytes import _chunks

ITEM = 4
# One file of 4096 distinct 4-byte elements: element i is the bytes of i.
DATA = b"".join(i.to_bytes(ITEM, "little") for i in range(4096))


def _file(tmp: pathlib.Path) -> str:
    path = tmp / "elements.bin"
    if not path.exists():
        path.write_bytes(DATA)
    return str(path)


def _read(spans: tuple[FileSpan, ...] | list[FileSpan]) -> bytes:
    return b"".join(DATA[s.offset : s.offset + s.length] for s in spans)


def _elements(spans: tuple[FileSpan, ...] | list[FileSpan]) -> list[int]:
    raw = _read(spans)
    return [int.from_bytes(raw[i : i + ITEM], "little") for i in range(0, len(raw), ITEM)]


@st.composite
def _pieces(draw: st.DrawFn) -> list[tuple[FileSpan, int]]:
    """Up to 6 element runs at random places of the file (as partitions of different ranks are)."""
    runs = draw(st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 60)), min_size=1, max_size=6))
    return [(FileSpan("f", start * ITEM, min(n, 4096 - start) * ITEM), min(n, 4096 - start)) for start, n in runs]


@given(_pieces(), st.data())
def test_cut_is_a_slice_of_the_joined_runs(pieces: list[tuple[FileSpan, int]], data: st.DataObject) -> None:
    joined = [e for span, _ in pieces for e in _elements([span])]
    start = data.draw(st.integers(0, len(joined)))
    count = data.draw(st.integers(0, len(joined) - start))
    assert _elements(cut_range(pieces, start, count, ITEM)) == joined[start : start + count]


@given(st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 30)), max_size=8))
def test_coalesce_keeps_the_bytes_and_joins_neighbours(runs: list[tuple[int, int]]) -> None:
    spans = [FileSpan("f", a * ITEM, min(n, 4096 - a) * ITEM) for a, n in runs]
    joined = coalesce(spans)
    assert _read(joined) == _read(spans)
    for left, right in itertools.pairwise(joined):
        assert left.offset + left.length != right.offset or left.path != right.path


def _tensor(name: str, shape: tuple[int, ...], start: int) -> ExportTensor:
    span = FileSpan("f", start * ITEM, math.prod(shape) * ITEM)
    return ExportTensor(name, shape, "float32", "float32", (span,) if math.prod(shape) else (), "trainable")


def _nested(flat: list[int], shape: tuple[int, ...]) -> object:
    if not shape:
        return flat[0]
    step = math.prod(shape[1:])
    return [_nested(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def _cat(parts: list[object], dim: int) -> object:
    if dim == 0:
        return [row for part in parts for row in part]  # type: ignore[attr-defined]
    return [_cat([part[i] for part in parts], dim - 1) for i in range(len(parts[0]))]  # type: ignore[index,arg-type]


@settings(max_examples=200)
@given(
    st.lists(st.integers(1, 4), min_size=1, max_size=3),
    st.integers(0, 2),
    st.lists(st.integers(1, 4), min_size=1, max_size=4),
    st.data(),
)
def test_concatenate_is_torch_cat(shape: list[int], dim: int, sizes: list[int], data: st.DataObject) -> None:
    """Ranks' slices of different sizes along ``dim``, anywhere in the file: cat as nested lists."""
    dim = dim % len(shape)
    slices, parts = [], []
    for rank, size in enumerate(sizes):
        rank_shape = (*shape[:dim], size, *shape[dim + 1 :])
        start = data.draw(st.integers(0, 4096 - math.prod(rank_shape)))
        slices.append(_tensor(f"r{rank}", rank_shape, start))
        parts.append(_nested(list(range(start, start + math.prod(rank_shape))), rank_shape))
    merged_shape, _, spans = concatenate(slices, dim, ITEM, "path")
    assert merged_shape == (*shape[:dim], sum(sizes), *shape[dim + 1 :])
    assert _nested(_elements(spans), merged_shape) == _cat(parts, dim)


@pytest.mark.parametrize(("shape", "dim"), [((10**12, 0), 1), ((10**12, 3, 0), 1), ((5, 10**12, 0), 2)])
def test_concatenate_of_empty_slices_does_not_loop_to_the_claimed_shape(shape: tuple[int, ...], dim: int) -> None:
    """A pickle's (10**12, 0) empty slices: the result without a loop over 10**12 indices."""
    slices = [_tensor("r0", shape, 0), _tensor("r1", shape, 0)]
    merged_shape, _, spans = concatenate(slices, dim, ITEM, "path")
    assert merged_shape == (*shape[:dim], 2 * shape[dim], *shape[dim + 1 :])
    assert spans == ()


@given(st.integers(1, 9), st.integers(1, 4), st.integers(0, 3000))
def test_chunk2_is_torch_chunk(rows: int, columns: int, start: int) -> None:
    """torch.chunk(t, 2): the first ceil(rows / 2) rows, then the rest."""
    tensor = _tensor("t", (rows, columns), start)
    first, second = chunk2(tensor, ITEM)
    split = -(-rows // 2) * columns
    everything = list(range(start, start + rows * columns))
    assert _elements(first) == everything[:split]
    assert _elements(second) == everything[split:]


@given(_pieces(), st.integers(1, 50))
def test_exact_chunks_cross_span_boundaries(pieces: list[tuple[FileSpan, int]], step: int) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = _file(pathlib.Path(tmp))
        spans = [FileSpan(path, s.offset, s.length) for s, _ in pieces]
        chunks = [bytes(c) for c in _chunks(spans, ITEM, exact=step * ITEM)]
    assert b"".join(chunks) == _read(spans)
    assert all(len(c) == step * ITEM for c in chunks[:-1])
