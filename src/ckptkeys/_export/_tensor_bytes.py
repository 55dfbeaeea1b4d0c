"""A tensor of the plan as the bytes of its output: copied, byte-swapped, cast or averaged, chunk by chunk.

``tensor_entry`` gives the safetensors writer (``_safetensors``) a tensor's header fields and a
function that writes exactly its bytes: copied in the kernel where the dtype is kept, else one
bounded chunk at a time (swapped where the file is big-endian, cast by ``_cast``, or the mean of
tensor-parallel slices), reporting every step's bytes for the progress bar.

A remote file's bytes (a span with a ``remote`` object) come from a :class:`~._fetch.Feed`, which
fetches them ahead in the order :func:`reads_of` gives, the order the writer below reads them in;
at plan time (a few values compared) straight from the object, one ranged GET per read.
"""

from __future__ import annotations

import array

from .._read._errors import ReadError
from .._read._files import open_regular
from ._safetensors import ITEMSIZE, Entry, copy_range
from ._types import ExportError, ExportTensor

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from typing import BinaryIO, Final, Protocol

    from .._read._source import RemoteObject
    from ._fetch import Feed
    from ._spans import FileSpan

    class _Stream(Protocol):
        def readinto(self, buffer: memoryview, /) -> int | None: ...
        def close(self) -> None: ...


__all__ = ["reads_of", "span_bytes", "tensor_entry"]

# Source bytes per cast step: small enough for numpy's temporaries to stay in the CPU cache
# (8 MiB steps cast 3x slower on the bench machine), large enough to amortise Python's overhead.
_CAST_CHUNK: Final = 256 << 10
# array typecodes by item size, for swapping the units torch swaps (2, 4 and 8 bytes).
_SWAP_CODES: Final = {array.array(code).itemsize: code for code in "QLIH"}
# Bytes copied between progress reports (in the kernel, so the step costs nothing measurable).
_COPY_STEP: Final = 64 << 20


def tensor_entry(tensor: ExportTensor, advance: Callable[[int], None], feed: Feed | None = None) -> Entry:
    """The tensor's header fields and its writer, which reports every step's output bytes; the
    bytes of remote spans come from ``feed``, in the order :func:`reads_of` gives."""

    def write(out: BinaryIO) -> None:
        if tensor.mean_of:
            _write_mean(tensor, out, advance, feed)
        elif tensor.dtype == tensor.source_dtype:
            for span in tensor.sources:  # in steps, so a tensor of gigabytes still shows progress
                if span.swap > 1:  # a big-endian file: read, swap, write
                    for chunk in _chunks((span,), ITEMSIZE[tensor.source_dtype], feed=feed):
                        advance(out.write(chunk))
                    continue
                if feed is not None and span.remote is not None:  # as fetched, in the feed's blocks
                    end = span.offset + span.length
                    at = span.offset
                    while at < end:
                        n = out.write(feed.take(span, at, end - at))
                        at += n
                        advance(n)
                    continue
                for start in range(span.offset, span.offset + span.length, _COPY_STEP):
                    length = min(_COPY_STEP, span.offset + span.length - start)
                    copy_range(span.path, start, length, out)
                    advance(length)
        else:
            from ._cast import cast_bytes

            for chunk in _chunks(tensor.sources, ITEMSIZE[tensor.source_dtype], feed=feed):
                advance(out.write(cast_bytes(chunk, tensor.source_dtype, tensor.dtype)))

    return Entry(tensor.name, tensor.dtype, tensor.shape, write)


def reads_of(tensor: ExportTensor) -> Iterator[tuple[RemoteObject, int, int]]:
    """The remote byte ranges ``tensor_entry``'s writer reads, in its order: each span in turn;
    for a mean, chunk ``k`` of every slice, then chunk ``k + 1`` (as ``_write_mean`` walks them)."""
    if not tensor.mean_of:
        for span in tensor.sources:
            if span.remote is not None:
                yield span.remote, span.offset, span.offset + span.length
        return
    step = _mean_step(ITEMSIZE[tensor.source_dtype])
    for chunks in zip(*(_steps(spans, step) for spans in tensor.mean_of), strict=True):
        for chunk in chunks:
            yield from chunk


def _steps(spans: Sequence[FileSpan], step: int) -> Iterator[list[tuple[RemoteObject, int, int]]]:
    """The remote ranges of each ``step`` bytes of ``spans`` joined (``_chunks`` with ``exact=step``)."""
    chunk: list[tuple[RemoteObject, int, int]] = []
    filled = 0
    for span in spans:
        at, left = span.offset, span.length
        while left:
            n = min(step - filled, left)
            if span.remote is not None:
                chunk.append((span.remote, at, at + n))
            at, left, filled = at + n, left - n, filled + n
            if filled == step:
                yield chunk
                chunk, filled = [], 0
    if filled:
        yield chunk


def _mean_step(itemsize: int) -> int:
    return _CAST_CHUNK - _CAST_CHUNK % itemsize


def span_bytes(spans: Sequence[FileSpan], itemsize: int) -> bytes:
    """The bytes of ``spans``, joined and byte-swapped as each says (a few, for a check at plan time)."""
    return b"".join(bytes(chunk) for chunk in _chunks(spans, itemsize))


def _write_mean(tensor: ExportTensor, out: BinaryIO, advance: Callable[[int], None], feed: Feed | None) -> None:
    """The element-wise mean of ``tensor.mean_of``, as ds_to_universal computes it, chunk by chunk."""
    from ._cast import cast_bytes, require_numpy

    np = require_numpy()
    itemsize = ITEMSIZE[tensor.source_dtype]
    if tensor.source_dtype != "float32":
        raise ExportError(tensor.mean_of[0][0].path, f"{tensor.name}: averaging {tensor.source_dtype} is not supported")
    step = _mean_step(itemsize)
    readers = [_chunks(spans, itemsize, exact=step, feed=feed) for spans in tensor.mean_of]
    count = np.float32(len(readers))
    for first in readers[0]:
        total = np.frombuffer(first, dtype="<f4") + np.float32(0)  # Python's sum() starts at 0: -0.0 becomes 0.0
        for reader in readers[1:]:
            total += np.frombuffer(next(reader), dtype="<f4")
        total /= count
        advance(out.write(cast_bytes(total.data, "float32", tensor.dtype)))


def _chunks(
    spans: Sequence[FileSpan], itemsize: int, *, exact: int | None = None, feed: Feed | None = None
) -> Iterator[memoryview]:
    """The spans' bytes, in chunks that keep a cast's temporaries in the CPU cache, each span's
    byte-swapped as it says (``FileSpan.swap``); a remote span's from ``feed``, else fetched.

    With ``exact``, every chunk but the last is ``exact`` bytes, whatever the span boundaries
    (to walk several span lists in step).
    """
    step = exact or _CAST_CHUNK - _CAST_CHUNK % itemsize
    view = memoryview(bytearray(step))
    filled = 0
    for span in spans:
        stream = _source(span, feed)
        try:
            left = span.length
            while left:
                n = _read(stream, span, view[filled : filled + min(step - filled, left)])
                if span.swap > 1:
                    # Whole units: a span, a step and every read are whole elements, of a size
                    # the swap unit divides (value_problem refuses the rest).
                    _swap(view[filled : filled + n], span.swap)
                left -= n
                filled += n
                if exact is None or filled == step:
                    yield view[:filled]
                    filled = 0
        finally:
            stream.close()
    if filled:
        yield view[:filled]


def _swap(view: memoryview, unit: int) -> None:
    """Reverse every ``unit`` bytes of ``view`` in place (``UntypedStorage._byteswap``)."""
    code = _SWAP_CODES.get(unit)
    if code is not None:  # array's byteswap runs in C: 8x faster than the slices below
        values = array.array(code)
        values.frombytes(view)
        values.byteswap()
        view[:] = memoryview(values).cast("B")
        return
    data = view.tobytes()
    for i in range(unit):
        view[i::unit] = data[unit - 1 - i :: unit]


class _Fed:
    """A remote span's bytes from the feed, as a stream."""

    def __init__(self, feed: Feed, span: FileSpan) -> None:
        self.feed, self.span, self.at = feed, span, span.offset

    def readinto(self, into: memoryview) -> int:
        data = self.feed.take(self.span, self.at, len(into))
        into[: len(data)] = data
        self.at += len(data)
        return len(data)

    def close(self) -> None:
        pass


class _Fetched:
    """A remote span's bytes fetched as read, one ranged GET per read (a few values, at plan time)."""

    def __init__(self, remote: RemoteObject, span: FileSpan) -> None:
        self.remote, self.span, self.at = remote, span, span.offset

    def readinto(self, into: memoryview) -> int:
        end = min(self.span.offset + self.span.length, self.at + len(into))
        [data] = self.remote.fetch([(self.at, end)]) or [b""]
        into[: len(data)] = data
        self.at += len(data)
        return len(data)

    def close(self) -> None:
        pass


def _source(span: FileSpan, feed: Feed | None) -> _Stream:
    if span.remote is not None:
        return _Fed(feed, span) if feed is not None else _Fetched(span.remote, span)
    path, offset = span.path, span.offset
    try:
        stream = open_regular(path)  # a FIFO swapped in since the plan was made is refused, not waited on
    except ReadError as error:
        raise ExportError(path, error.reason) from None
    try:
        stream.seek(offset)
        return stream
    except OSError as error:
        stream.close()
        raise ExportError(path, f"cannot be read: {error.strerror or error}") from None


def _read(stream: _Stream, span: FileSpan, into: memoryview) -> int:
    """Fill ``into`` from the stream's position, inside ``span``."""
    done = 0
    try:
        while done < len(into):
            n = stream.readinto(into[done:])
            if not n:
                raise ExportError(span.path, f"is truncated: ends before byte {span.offset + span.length}")
            done += n
    except OSError as error:
        raise ExportError(span.path, f"cannot be read: {error.strerror or error}") from None
    return done
