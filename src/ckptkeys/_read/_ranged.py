"""A remote object's fetched parts, read as one seekable file (:class:`RangedStream`).

The readers (``_reader``, ``_zip``, ``_safetensors``) see a file as a seekable ``BinaryIO``; a
remote object (``_source.RemoteObject``) is one through this stream, which holds the parts
fetched (what ``read_many`` fetched ahead, what ``prefetch`` asked) and fetches only what a read
misses.
"""

from __future__ import annotations

import errno
import io

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, Final

    from ._source import RemoteObject

__all__ = ["MIN_FETCH", "RangedStream", "missing"]

# A read that misses fetches at least this much (clipped to the object): a local header, then
# the member's data after it, are one GET, not two.
MIN_FETCH: Final = 64 << 10


class RangedStream(io.RawIOBase):
    """The parts of a :class:`RemoteObject` fetched so far, read as one seekable file.

    A read of bytes not yet fetched fetches the missing spans only, each at least
    :data:`MIN_FETCH` long (clipped to the object and to the parts already held).
    """

    def __init__(self, source: RemoteObject) -> None:
        super().__init__()
        self.source = source
        # start -> bytes, never overlapping: what read_many fetched ahead, taken (the object holds
        # them no more: they go when the stream goes)
        self._parts: dict[int, bytes] = source.held
        source.held = {}
        self._pos = 0

    def prefetch(self, ranges: Sequence[tuple[int, int]], gap: int = MIN_FETCH) -> None:
        """Fetch ``ranges`` (clipped to the object) in one concurrent round, merging those less than
        ``gap`` apart (:data:`MIN_FETCH`; 0: only those that touch), and leaving out what is held already."""
        missing = self._missing(ranges, gap)
        for (start, _), data in zip(missing, self.source.fetch(missing), strict=True):
            self._parts[start] = data

    def holds(self, start: int, end: int) -> bool:
        """Whether the bytes ``[start, end)`` (clipped to the object) are fetched already."""
        return not self._gaps(max(0, start), min(self.source.size, end))

    def _missing(self, ranges: Sequence[tuple[int, int]], gap: int = MIN_FETCH) -> list[tuple[int, int]]:
        """What :meth:`prefetch` fetches for ``ranges``: clipped, merged, and without what is held."""
        return missing(self.source.size, ranges, self._gaps, gap)

    def _gaps(self, start: int, end: int) -> list[tuple[int, int]]:
        gaps = []
        at = start
        for part_start in sorted(self._parts):
            part_end = part_start + len(self._parts[part_start])
            if part_end <= at:
                continue
            if part_start >= end:
                break
            if part_start > at:
                gaps.append((at, part_start))
            at = max(at, part_end)
        if at < end:
            gaps.append((at, end))
        return gaps

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.source.size}[whence]
        if base + offset < 0:
            raise OSError(errno.EINVAL, "negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        end = self.source.size if size is None or size < 0 else min(self.source.size, self._pos + size)
        if end <= self._pos:
            return b""
        gaps = self._gaps(self._pos, end)
        if gaps:
            limit = self.source.size
            widened = []
            for start, stop in gaps:
                following = [p for p in self._parts if p >= stop]
                ceiling = min([limit, *following])
                widened.append((start, min(ceiling, max(stop, start + MIN_FETCH))))
            for (start, _), data in zip(widened, self.source.fetch(widened), strict=True):
                self._parts[start] = data
        chunks = []
        at = self._pos
        for part_start in sorted(self._parts):
            data = self._parts[part_start]
            part_end = part_start + len(data)
            if part_end <= at or part_start >= end:
                continue
            chunks.append(data[at - part_start : min(end, part_end) - part_start])
            at = min(end, part_end)
        self._pos = end
        return b"".join(chunks)


def missing(
    size: int,
    ranges: Sequence[tuple[int, int]],
    gaps: Callable[[int, int], list[tuple[int, int]]],
    gap: int = MIN_FETCH,
) -> list[tuple[int, int]]:
    """``ranges`` clipped to an object of ``size`` bytes, those less than ``gap`` apart merged, less
    what is held (``gaps(start, end)``: the parts of ``[start, end)`` not held)."""
    clipped = sorted((max(0, s), min(size, e)) for s, e in ranges if min(size, e) > max(0, s))
    merged: list[tuple[int, int]] = []
    for start, end in clipped:
        if merged and start <= merged[-1][1] + gap:  # close ranges: one GET
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return [hole for start, end in merged for hole in gaps(start, end)]
