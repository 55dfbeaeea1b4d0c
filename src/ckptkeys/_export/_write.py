"""``write_export()`` and ``export()``: an export plan written as safetensors files.

Each file is its header followed by the plan's byte ranges, copied in the kernel or one bounded
chunk at a time (cast, or averaged, chunk by chunk where the plan says so), under a temporary
name renamed when complete (``_safetensors``). The index comes last.
"""

from __future__ import annotations

import array
import io
import json
import os
import re

from .._read._errors import ReadError
from .._read._files import create_new, open_regular
from ._entry import plan_export
from ._safetensors import ITEMSIZE, Entry, copy_range, write_file
from ._side import MAX_SIDE_FILE_BYTES, open_side_file
from ._spans import FileSpan
from ._types import SINGLE_FILE, ExportError, ExportPlan, ExportShard, ExportTensor

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from typing import BinaryIO, Final

    from ._types import Dtype, Weights

__all__ = ["INDEX_FILE", "OutputExistsError", "existing_outputs", "export", "parse_shard", "write_export"]

INDEX_FILE: Final = "model.safetensors.index.json"
_SHARD_NAME: Final = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")
# Source bytes per cast step: small enough for numpy's temporaries to stay in the CPU cache
# (8 MiB steps cast 3x slower on the bench machine), large enough to amortise Python's overhead.
_CAST_CHUNK: Final = 256 << 10
# array typecodes by item size, for swapping the units torch swaps (2, 4 and 8 bytes).
_SWAP_CODES: Final = {array.array(code).itemsize: code for code in "QLIH"}
# Bytes copied between progress reports (in the kernel, so the step costs nothing measurable).
_COPY_STEP: Final = 64 << 20


class OutputExistsError(ExportError):
    """The output folder already holds a file the export would write (pass ``overwrite``)."""


def existing_outputs(out_dir: str) -> list[str]:
    """The files of ``out_dir`` a previous export would have written."""
    try:
        names = os.listdir(out_dir)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n in (SINGLE_FILE, INDEX_FILE) or _SHARD_NAME.fullmatch(n))


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` (job K of N, from 1) as ``(K, N)``; ``ValueError`` otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise ValueError(f"--shard {text!r}: expected K/N with 1 <= K <= N, e.g. 3/8")
    return int(match.group(1)), int(match.group(2))


def write_export(
    plan: ExportPlan,
    out_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    shard: tuple[int, int] | None = None,
    index_only: bool = False,
    fsync: bool = True,
) -> list[str]:
    """Write ``plan``'s files into ``out_dir``; return their paths.

    Refuses (:class:`ExportError`) a folder that already holds an export unless ``overwrite``;
    then the files of the old export that the new one does not replace are removed once the
    new ones are complete. ``progress(done, total)`` counts output bytes.

    For many jobs sharing one export (docs/export.md): ``shard=(K, N)`` writes only the output
    files ``i`` (from 1) with ``i % N == K % N``, and no index; ``index_only`` writes only
    ``model.safetensors.index.json``. Either way only the files this call writes are checked
    against ``overwrite``, and no other file is removed.

    Each file is flushed to disk (``fsync``) before its rename, so not even a power cut leaves a
    partial file under a final name; ``fsync=False`` leaves that to the operating system (a
    crash of the process still cannot).
    """
    out = os.fspath(out_dir)
    if shard is not None and not 1 <= shard[0] <= shard[1]:
        raise ValueError(f"shard {shard}: expected (K, N) with 1 <= K <= N")
    if index_only:
        if not plan.sharded:
            raise ExportError(out, "the export is one file (model.safetensors): it has no index to write")
        files: list[ExportShard] = []
    else:
        files = [s for i, s in enumerate(plan.shards, 1) if shard is None or i % shard[1] == shard[0] % shard[1]]
    with_index = plan.sharded and (index_only or shard is None)
    partial = index_only or shard is not None
    mine = {f.filename for f in files} | ({INDEX_FILE} if with_index else set())
    old = existing_outputs(out)
    clashes = [name for name in old if name in mine] if partial else old
    if clashes and not overwrite:
        raise OutputExistsError(
            os.path.join(out, clashes[0]), "already exists: pass --overwrite (overwrite=True) to replace it"
        )
    os.makedirs(out, exist_ok=True)
    if not partial or with_index:  # a job array's side files come with its index
        _copy_side_files(plan, out, overwrite=overwrite, fsync=fsync)
    by_name = {t.name: t for t in plan.tensors}
    total = sum(f.nbytes for f in files)
    done = 0

    def advance(nbytes: int) -> None:
        nonlocal done
        done += nbytes
        if progress is not None:
            progress(done, total)

    written = []
    for file in files:
        entries = [_entry(by_name[name], advance) for name in file.tensors]
        target = os.path.join(out, file.filename)
        try:
            write_file(target, entries, plan.metadata(), fsync=fsync)
        except OSError as error:  # a source that cannot be read names itself; else the output
            name = error.filename if isinstance(error.filename, str) else target
            raise ExportError(name, f"{'cannot be read' if name != target else 'cannot be written'}: "
                              f"{error.strerror or error}") from None  # fmt: skip
        except EOFError as error:  # copy_range: (path, reason)
            raise ExportError(str(error.args[0]), f"is truncated: {error.args[-1]}") from None
        written.append(target)
    if not partial:
        for name in old:
            if name not in mine:
                os.unlink(os.path.join(out, name))
    if with_index:
        index = os.path.join(out, INDEX_FILE)
        try:
            temp, stream = create_new(index)
        except OSError as error:
            raise ExportError(index, f"cannot be written: {error.strerror or error}") from None
        try:
            with stream:
                stream.write((json.dumps(plan.index(), indent=2, sort_keys=True) + "\n").encode("utf-8"))
                if fsync:
                    stream.flush()
                    os.fsync(stream.fileno())
            os.replace(temp, index)  # replaces the name itself: a symlink there is never written through
        except OSError as error:
            raise ExportError(index, f"cannot be written: {error.strerror or error}") from None
        finally:
            if os.path.lexists(temp):
                os.unlink(temp)
        written.append(index)
    return written


def _copy_side_files(plan: ExportPlan, out: str, *, overwrite: bool, fsync: bool) -> None:
    """Copy ``plan.side_files`` into ``out`` under their base names, each by temp + fsync + rename.

    An existing file of one of these names is refused unless ``overwrite``, before any is written.
    """
    targets = [(source, os.path.join(out, os.path.basename(source))) for source in plan.side_files]
    for _, target in targets:
        if os.path.lexists(target) and not overwrite:
            raise OutputExistsError(target, "already exists: pass --overwrite (overwrite=True) to replace it")
    for source, target in targets:
        with io.BufferedReader(open_side_file(source)) as stream:
            try:
                data = stream.read(MAX_SIDE_FILE_BYTES + 1)  # buffered: reads on until then or the end
            except OSError as error:
                raise ExportError(source, f"cannot be read: {error.strerror or error}") from None
        if len(data) > MAX_SIDE_FILE_BYTES:
            raise ExportError(source, f"is larger than {MAX_SIDE_FILE_BYTES} bytes: not copied beside the weights")
        try:
            temp, writer = create_new(target)
        except OSError as error:
            raise ExportError(target, f"cannot be written: {error.strerror or error}") from None
        try:
            with writer:
                writer.write(data)
                if fsync:
                    writer.flush()
                    os.fsync(writer.fileno())
            os.replace(temp, target)
        except OSError as error:
            raise ExportError(target, f"cannot be written: {error.strerror or error}") from None
        finally:
            if os.path.lexists(temp):
                os.unlink(temp)


def _entry(tensor: ExportTensor, advance: Callable[[int], None]) -> Entry:
    """The tensor's header fields and its writer, which reports every step's output bytes."""

    def write(out: BinaryIO) -> None:
        if tensor.mean_of:
            _write_mean(tensor, out, advance)
        elif tensor.dtype == tensor.source_dtype:
            for span in tensor.sources:  # in steps, so a tensor of gigabytes still shows progress
                if span.swap > 1:  # a big-endian file: read, swap, write
                    for chunk in _chunks((span,), ITEMSIZE[tensor.source_dtype]):
                        advance(out.write(chunk))
                    continue
                for start in range(span.offset, span.offset + span.length, _COPY_STEP):
                    length = min(_COPY_STEP, span.offset + span.length - start)
                    copy_range(span.path, start, length, out)
                    advance(length)
        else:
            from ._cast import cast_bytes

            for chunk in _chunks(tensor.sources, ITEMSIZE[tensor.source_dtype]):
                advance(out.write(cast_bytes(chunk, tensor.source_dtype, tensor.dtype)))

    return Entry(tensor.name, tensor.dtype, tensor.shape, write)


def _write_mean(tensor: ExportTensor, out: BinaryIO, advance: Callable[[int], None]) -> None:
    """The element-wise mean of ``tensor.mean_of``, as ds_to_universal computes it, chunk by chunk."""
    from ._cast import cast_bytes, require_numpy

    np = require_numpy()
    itemsize = ITEMSIZE[tensor.source_dtype]
    if tensor.source_dtype != "float32":
        raise ExportError(tensor.mean_of[0][0].path, f"{tensor.name}: averaging {tensor.source_dtype} is not supported")
    step = _CAST_CHUNK - _CAST_CHUNK % itemsize
    readers = [_chunks(spans, itemsize, exact=step) for spans in tensor.mean_of]
    count = np.float32(len(readers))
    for first in readers[0]:
        total = np.frombuffer(first, dtype="<f4") + np.float32(0)  # Python's sum() starts at 0: -0.0 becomes 0.0
        for reader in readers[1:]:
            total += np.frombuffer(next(reader), dtype="<f4")
        total /= count
        advance(out.write(cast_bytes(total.data, "float32", tensor.dtype)))


def _chunks(spans: Sequence[FileSpan], itemsize: int, *, exact: int | None = None) -> Iterator[memoryview]:
    """The spans' bytes, in chunks that keep a cast's temporaries in the CPU cache, each span's
    byte-swapped as it says (``FileSpan.swap``).

    With ``exact``, every chunk but the last is ``exact`` bytes, whatever the span boundaries
    (to walk several span lists in step).
    """
    step = exact or _CAST_CHUNK - _CAST_CHUNK % itemsize
    view = memoryview(bytearray(step))
    filled = 0
    for span in spans:
        with _source(span.path, span.offset) as stream:
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


def _source(path: str, offset: int) -> io.FileIO:
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


def _read(stream: io.FileIO, span: FileSpan, into: memoryview) -> int:
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


def export(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    tag: str | None = None,
    dtype: Dtype = "fp32",
    max_shard_size: int | str = "5GB",
    tp_rank: int | None = None,
    save: str | None = None,
    strip_prefix: str | None = None,
    weights: Weights = "masters",
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    shard: tuple[int, int] | None = None,
    index_only: bool = False,
    fsync: bool = True,
) -> ExportPlan:
    """Export the checkpoint at ``path`` to safetensors in ``out_dir``; return the plan it followed.

    :func:`plan_export` with the same arguments, then :func:`write_export`.
    """
    plan = plan_export(
        path,
        tag=tag,
        dtype=dtype,
        max_shard_size=max_shard_size,
        tp_rank=tp_rank,
        save=save,
        strip_prefix=strip_prefix,
        weights=weights,
    )
    write_export(plan, out_dir, overwrite=overwrite, progress=progress, shard=shard, index_only=index_only, fsync=fsync)
    return plan
