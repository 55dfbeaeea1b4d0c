"""Byte-range arithmetic: torch's slicing, ``chunk`` and ``cat`` done on the byte ranges that hold a tensor."""

from __future__ import annotations

import math
from dataclasses import replace

from ._safetensors import ITEMSIZE
from ._spans import FileSpan
from ._types import ExportError, ExportTensor

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from ._types import Planned

__all__ = ["chunk2", "coalesce", "concatenate", "cut_range", "cut_vocabulary"]


def cut_range(pieces: Sequence[tuple[FileSpan, int]], start: int, count: int, itemsize: int) -> tuple[FileSpan, ...]:
    """Elements ``[start, start + count)`` of the vector the pieces make when joined."""
    out = []
    at = 0
    for span, numel in pieces:
        lo, hi = max(start, at), min(start + count, at + numel)
        if lo < hi:
            out.append(replace(span, offset=span.offset + (lo - at) * itemsize, length=(hi - lo) * itemsize))
        at += numel
        if at >= start + count:
            break
    return tuple(out)


def coalesce(spans: Sequence[FileSpan]) -> tuple[FileSpan, ...]:
    """Adjacent ranges of one file joined into one."""
    out: list[FileSpan] = []
    for span in spans:
        last = out[-1] if out else None
        if last and (last.path, last.swap) == (span.path, span.swap) and last.offset + last.length == span.offset:
            out[-1] = replace(last, length=last.length + span.length)
        elif span.length:
            out.append(span)
    return tuple(out)


def chunk2(planned: Planned, itemsize: int) -> tuple[list[FileSpan], list[FileSpan]]:
    """``torch.chunk(t, 2, dim=0)``: the first ceil(rows / 2) rows, then the rest, as spans."""
    shape, spans = planned.shape, planned.sources
    row = math.prod(shape[1:])
    first = -(-shape[0] // 2) * row
    pieces = [(s, s.length // itemsize) for s in spans]
    rest = math.prod(shape) - first
    return list(cut_range(pieces, 0, first, itemsize)), list(cut_range(pieces, first, rest, itemsize))


def concatenate(
    slices: Sequence[Planned], dim: int, itemsize: int, path: str
) -> tuple[tuple[int, ...], str, tuple[FileSpan, ...]]:
    """``torch.cat(slices, dim)`` as spans: for each index before ``dim``, each rank's block in turn."""
    shapes = [s.shape for s in slices]
    first = shapes[0]
    if len(first) <= dim or any(len(s) != len(first) or s[:dim] + s[dim + 1 :] != first[:dim] + first[dim + 1 :]
                                for s in shapes):  # fmt: skip
        raise ExportError(path, f"{slices[0].name!r}: shapes {shapes} cannot be concatenated on dim {dim}")
    outer = math.prod(first[:dim])
    blocks = [math.prod(s[dim:]) for s in shapes]
    pieces = [[(span, span.length // itemsize) for span in s.sources] for s in slices]
    # The loop runs once per index before ``dim`` only where there are bytes to cut: a pickle can
    # claim (10**9, 0) for an empty tensor, and ``outer`` must not be a number the file wrote.
    spans = [
        span
        for o in range(outer if any(blocks) else 0)
        for rank, block in enumerate(blocks)
        for span in cut_range(pieces[rank], o * block, block, itemsize)
    ]
    shape = (*first[:dim], sum(s[dim] for s in shapes), *first[dim + 1 :])
    return shape, slices[0].source_dtype, coalesce(spans)


def cut_vocabulary(entry: ExportTensor, vocab: Any, path: str) -> ExportTensor:
    """``param[:original_vocab_size]`` (ds_to_universal strips the vocabulary padding)."""
    shape, itemsize = entry.shape, ITEMSIZE[entry.source_dtype]
    if type(vocab) is not int or not 0 < vocab <= shape[0]:
        raise ExportError(
            path, f"universal_checkpoint_info['original_vocab_size'] {vocab!r} does not fit {entry.name!r} {shape}"
        )
    count = vocab * math.prod(shape[1:])

    def cut(spans: tuple[FileSpan, ...]) -> tuple[FileSpan, ...]:
        return cut_range([(s, s.length // itemsize) for s in spans], 0, count, itemsize)

    mean_of = tuple(cut(spans) for spans in entry.mean_of)
    return replace(entry, shape=(vocab, *shape[1:]), sources=cut(entry.sources), mean_of=mean_of)
