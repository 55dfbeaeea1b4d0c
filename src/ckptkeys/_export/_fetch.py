"""The tensor bytes of remote files, fetched ahead of the writer, with bounded memory.

An output file's writer (``_tensor_bytes``) reads its tensors' bytes in an order known before it
starts (``_tensor_bytes.reads_of``): each tensor's byte ranges in turn, an averaged tensor's
slices chunk by chunk. A :class:`Feed` fetches that sequence ahead of the writer as ranged GETs
of at most :data:`FETCH_BYTES`, the ranges of one object that touch merged into one, and holds at
most :data:`FETCHES_AHEAD` of them, in flight or waiting to be written: an export from a URL holds
at most ``FETCHES_AHEAD * FETCH_BYTES`` (32 MiB) of tensor bytes, whatever the model's size. Each
byte of the sequence is fetched once, never a whole object, every GET pinned to the version the
listing gave (``_read._source``): an object replaced meanwhile is refused as changed.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from concurrent.futures import Future
    from typing import Final

    from typing_extensions import Self

    from .._read._source import RemoteObject
    from ._spans import FileSpan

__all__ = ["FETCHES_AHEAD", "FETCH_BYTES", "Feed", "blocks"]

# The largest ranged GET: large enough that a GET's round trip is small beside its transfer,
# small enough that FETCHES_AHEAD of them stay under the 150 MB the issue allows: the store's
# client holds a body twice while it joins its chunks, so 8 GETs of 8 MiB peaked at 170 MB
# (bench/bench_remote_export.py --ranged-moto: ranges served at loopback speed), 8 of 4 MiB at 114 MB.
FETCH_BYTES: Final = 4 << 20
# GETs fetched ahead of the writer, in flight or done and waiting: enough to keep a store's
# bandwidth busy while the writer copies, casts or averages.
FETCHES_AHEAD: Final = 8

Read = tuple["RemoteObject", int, int]  # an object, [start, end)


def blocks(reads: Iterable[Read]) -> Iterator[Read]:
    """The GETs that fetch ``reads`` in order: reads of one object that touch joined, cut at :data:`FETCH_BYTES`."""
    current: Read | None = None
    for read in reads:
        obj, start, end = read
        if end <= start:
            continue
        if current is not None and current[0] is obj and current[2] == start:
            current = (obj, current[1], end)
            continue
        if current is not None:
            yield from _cut(current)
        current = read
    if current is not None:
        yield from _cut(current)


def _cut(read: Read) -> Iterator[Read]:
    obj, start, end = read
    for at in range(start, end, FETCH_BYTES):
        yield obj, at, min(end, at + FETCH_BYTES)


def _fetch(obj: RemoteObject, start: int, end: int) -> bytes:
    [data] = obj.fetch([(start, end)])
    return data


class Feed:
    """The bytes of ``reads``, in their order, fetched :data:`FETCHES_AHEAD` GETs ahead of :meth:`take`.

    Use as a context manager: leaving it cancels the GETs not started (those in flight end on their own).
    """

    def __init__(self, reads: Iterable[Read]) -> None:
        self._blocks = blocks(reads)
        self._pool = ThreadPoolExecutor(max_workers=FETCHES_AHEAD, thread_name_prefix="ckptkeys-fetch")
        self._ahead: deque[tuple[RemoteObject, int, Future[bytes]]] = deque()
        self._data = memoryview(b"")
        self._obj: RemoteObject | None = None
        self._start = self._at = 0
        self.objects: dict[int, RemoteObject] = {}
        """Every object fetched from, by id: what :meth:`confirm` asks about."""
        for _ in range(FETCHES_AHEAD):
            self._submit()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._ahead.clear()
        self._data = memoryview(b"")
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _submit(self) -> None:
        block = next(self._blocks, None)
        if block is not None:
            obj, start, end = block
            self.objects.setdefault(id(obj), obj)
            self._ahead.append((obj, start, self._pool.submit(_fetch, obj, start, end)))

    def take(self, span: FileSpan, offset: int, size: int) -> memoryview:
        """Up to ``size`` bytes of ``span``'s object from ``offset`` (at least one): the next bytes
        of the sequence. Raises the :class:`~ckptkeys.ReadError` of a GET that failed, naming the URL."""
        if self._at == len(self._data):
            if self._obj is not None:  # a block written: released before the next GET starts
                self._data = memoryview(b"")
                self._submit()
            if not self._ahead:
                raise AssertionError(f"{span.path}: a read at byte {offset} past the bytes the plan fetches")
            self._obj, self._start, future = self._ahead.popleft()
            self._data = memoryview(future.result())
            self._at = 0
        if span.remote is not self._obj or offset != self._start + self._at:
            raise AssertionError(f"{span.path}: a read at byte {offset}, not in the order the plan fetches")
        n = min(size, len(self._data) - self._at)
        self._at += n
        return self._data[self._at - n : self._at]

    def confirm(self) -> None:
        """Refuse an object that is no longer the version the plan read (S3: every GET carried the
        pin, nothing to ask; elsewhere one ``info()`` each)."""
        for obj in self.objects.values():
            obj.confirm()
