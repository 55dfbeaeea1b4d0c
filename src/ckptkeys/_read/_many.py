"""Many remote objects read together (a tag's files): :func:`read_many`.

Each object's head and tail are fetched a bounded number of objects ahead of the one being
parsed, on the filesystem's event loop (or by threads, for a synchronous filesystem), so the
store always has work while the reader parses, and what is held is bounded by
:data:`READ_AHEAD` objects, not by their number.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

from ._errors import ReadError
from ._ranged import missing
from ._remote_errors import remote_error
from ._source import FETCH_CONCURRENCY, HEAD_BYTES, TAIL_BYTES, RemoteObject, get_many

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from typing import Any, Final, TypeVar

    T = TypeVar("T")

__all__ = ["READ_AHEAD", "SYNC_FETCH_THREADS", "read_many"]

# Objects whose heads and tails read_many fetches ahead of the one being parsed: one more starts
# as each is taken, so at most READ_AHEAD * (HEAD_BYTES + TAIL_BYTES) = 10.25 MiB of fetched bytes
# are held at once, whatever the number of objects.
READ_AHEAD: Final = 32
# A synchronous filesystem's (memory://, the Hub's) GETs in flight at once: threads waiting on it.
SYNC_FETCH_THREADS: Final = 16


def read_many(sources: Sequence[RemoteObject], read: Callable[[RemoteObject], T]) -> Iterator[T | ReadError]:
    """``read(source)`` of each of ``sources`` (objects of one filesystem: a folder's listing), in order,
    their heads and tails fetched ahead.

    The head ``[0, HEAD_BYTES)`` and tail ``[size - TAIL_BYTES, size)`` of each object (merged
    when close, as :meth:`RangedStream.prefetch` merges them) are fetched :data:`READ_AHEAD`
    objects ahead of the one ``read`` parses, on the filesystem's event loop (S3, GCS: each GET
    carrying its object's pin), at most :data:`FETCH_CONCURRENCY` GETs in flight; as each object
    is taken, the next one's GETs start, so the store always has work while the objects are
    parsed (their rare third GETs one object at a time). Each object's bytes go to the
    :class:`RangedStream` ``read`` makes of it and are dropped with it: what is held is bounded by
    :data:`READ_AHEAD` objects, not by their number. An object whose GETs failed is its
    :class:`ReadError` (naming its URL); the others are still read.
    """
    if not sources:
        return
    fetcher = _Fetcher(sources[0].fs)
    ahead: deque[tuple[RemoteObject, _Pending]] = deque()
    waiting = iter(sources)

    def fetch_next() -> None:
        source = next(waiting, None)
        if source is not None:
            ahead.append((source, _fetch_ahead(fetcher, source)))

    try:
        for _ in range(READ_AHEAD):
            fetch_next()
        while ahead:
            source, pending = ahead.popleft()
            error = pending.wait()
            fetch_next()
            if error is not None:
                yield error
                continue
            try:
                yield read(source)
            except ReadError as refused:
                yield refused
            finally:
                source.held = {}  # read or not, its bytes go now
    finally:
        fetcher.close()


class _Fetcher:
    """Where read_many's GETs run: the filesystem's event loop (one gate of
    :data:`FETCH_CONCURRENCY` for all of them), or threads for a synchronous filesystem."""

    def __init__(self, fs: Any) -> None:
        self.fs = fs
        self.loop: Any = getattr(fs, "loop", None) if getattr(fs, "async_impl", False) else None
        self.threads = None if self.loop is not None else ThreadPoolExecutor(max_workers=SYNC_FETCH_THREADS)
        self.gate: Any = None  # an asyncio.Semaphore, made on the loop by the first batch

    def start(self, gets: list[tuple[str, int, int, dict[str, str], int]]) -> Future[Any] | list[Future[Any]]:
        if self.threads is not None:  # a synchronous filesystem (memory://, the Hub's)
            return [self.threads.submit(_cat_file, self.fs, path, start, end) for path, start, end, _, _ in gets]
        import asyncio

        return asyncio.run_coroutine_threadsafe(self._get(gets), self.loop)

    async def _get(self, gets: list[tuple[str, int, int, dict[str, str], int]]) -> list[Any]:
        if self.gate is None:
            import asyncio

            self.gate = asyncio.Semaphore(FETCH_CONCURRENCY)
        return await get_many(self.fs, gets, self.gate)

    def close(self) -> None:
        if self.threads is not None:
            self.threads.shutdown(wait=False, cancel_futures=True)


class _Pending:
    """One object's head and tail, in flight (a future of the loop, or of threads)."""

    def __init__(self, fetcher: _Fetcher, source: RemoteObject) -> None:
        self.source = source
        self.ranges = missing(source.size, [(0, HEAD_BYTES), (source.size - TAIL_BYTES, source.size)], _all)
        self.future: Future[Any] | list[Future[Any]] | None = None
        self.error: BaseException | None = None
        if self.ranges:
            try:
                gets = [(source.path, start, end, source._pin or {}, source.size) for start, end in self.ranges]
                self.future = fetcher.start(gets)
            except Exception as error:
                self.error = error

    def wait(self) -> ReadError | None:
        """The object's head and tail given to it (:attr:`RemoteObject.held`), or the
        :class:`ReadError` naming it if its GETs failed."""
        source = self.source
        parts: list[Any] = []
        if self.error is None and self.future is not None:
            try:
                if isinstance(self.future, list):
                    parts = [future.result() for future in self.future]  # _cat_file returns its exception
                else:
                    parts = list(self.future.result())
            except Exception as error:
                self.error = error
        if self.error is not None:
            return remote_error(source.url, self.error, source.fs)
        try:
            for (start, _), data in zip(self.ranges, source._accept(self.ranges, parts), strict=True):
                source.held[start] = data
        except ReadError as error:
            return error
        return None


def _cat_file(fs: Any, path: str, start: int, end: int) -> Any:
    """One range of a synchronous filesystem's object: its bytes, or the exception it ended in."""
    try:
        return fs.cat_file(path, start=start, end=end)
    except Exception as error:
        return error


def _all(start: int, end: int) -> list[tuple[int, int]]:
    return [(start, end)]


def _fetch_ahead(fetcher: _Fetcher, source: RemoteObject) -> _Pending:
    """Start fetching ``source``'s head and tail (one place to see the fetches start: the tests)."""
    return _Pending(fetcher, source)
