"""A small safetensors writer: a header, then each tensor's bytes streamed into place.

The format (https://github.com/huggingface/safetensors): an 8-byte little-endian header length
``N``, ``N`` bytes of JSON (``{name: {"dtype", "shape", "data_offsets": [begin, end]}, ...,
"__metadata__": {str: str}}``, padded with spaces so the data starts 8-byte aligned), then the
tensors' bytes back to back, offsets counted from the end of the header. Because every size is
known before any byte is copied, the header is written first and each tensor is then streamed
from wherever its bytes are, one bounded chunk at a time. A file is written under a temporary
name in the target folder and renamed only when complete, so a crash, Ctrl-C or a full disk
never leaves a partial file under the final name. No torch, no numpy.
"""

from __future__ import annotations

import errno
import json
import math
import os
import sys
from dataclasses import dataclass

from .._read._errors import ReadError
from .._read._files import create_new, discard_temp, open_regular, temp_published
from .._read._torch import DTYPE_ITEMSIZE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import BinaryIO, Final

__all__ = ["CHUNK_BYTES", "DTYPES", "Entry", "copy_range", "header_bytes", "publish", "write_temp"]

# torch's dtype names -> safetensors' (safetensors/src/tensor.rs Dtype).
DTYPES: Final[dict[str, str]] = {
    "bool": "BOOL",
    "uint8": "U8",
    "int8": "I8",
    "int16": "I16",
    "uint16": "U16",
    "float16": "F16",
    "bfloat16": "BF16",
    "int32": "I32",
    "uint32": "U32",
    "float32": "F32",
    "float64": "F64",
    "int64": "I64",
    "uint64": "U64",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "complex64": "C64",
}
# Element sizes of those dtypes: torch's own (one table, in _torch).
ITEMSIZE: Final[dict[str, int]] = {name: DTYPE_ITEMSIZE[name] for name in DTYPES}
# Bytes moved per read/write: large enough for disk speed, small enough to bound memory.
CHUNK_BYTES: Final = 8 << 20
_ALIGN: Final = 8


@dataclass(frozen=True, slots=True)
class Entry:
    """One tensor of a file to write: its header fields and how to produce its bytes."""

    name: str
    dtype: str
    """torch's dtype name (``"float32"``, ``"bfloat16"``)."""
    shape: tuple[int, ...]
    write: Callable[[BinaryIO], None]
    """Writes exactly :attr:`nbytes` bytes to the stream it is given."""

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * ITEMSIZE[self.dtype]


def header_bytes(entries: Sequence[Entry], metadata: Mapping[str, str] | None = None) -> bytes:
    """The length prefix and JSON header of a file holding ``entries`` in this order."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for entry in entries:
        if entry.dtype not in DTYPES:
            raise ValueError(f"{entry.name}: safetensors has no dtype for {entry.dtype!r}")
        if entry.name in header or entry.name == "__metadata__":
            raise ValueError(f"{entry.name}: the name appears twice")
        header[entry.name] = {
            "dtype": DTYPES[entry.dtype],
            "shape": list(entry.shape),
            "data_offsets": [offset, offset + entry.nbytes],
        }
        offset += entry.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-(8 + len(text)) % _ALIGN)
    return len(text).to_bytes(8, "little") + text


def copy_range(path: str, offset: int, length: int, out: BinaryIO) -> None:
    """Append ``length`` bytes of the file at ``path``, from ``offset``, to ``out``.

    In the kernel where it can (``os.copy_file_range``), else through one bounded buffer.
    An ``OSError`` from the source carries ``filename=path``; one from writing carries none.
    ``EOFError(path, reason)`` if the file ends before the range does.
    """
    out.flush()
    try:
        source = open_regular(path)  # a FIFO swapped in since the plan was made is refused, not waited on
    except ReadError as error:
        raise OSError(errno.EINVAL, error.reason.removeprefix("cannot be read: "), path) from None
    with source:
        copied = _copy_in_kernel(source.fileno(), out, offset, length)
        if copied < length:
            buffer = bytearray(min(CHUNK_BYTES, length - copied))
            view = memoryview(buffer)
            while copied < length:
                try:
                    source.seek(offset + copied)
                    n = source.readinto(view[: min(len(buffer), length - copied)])
                except OSError as error:
                    error.filename = path
                    raise
                if not n:
                    break
                out.write(view[:n])
                copied += n
    if copied != length:
        raise EOFError(path, f"ends after byte {offset + copied}; {length} bytes were expected from byte {offset}")


# copy_file_range cannot serve this pair of files: copy through a buffer instead.
_NOT_IN_KERNEL: Final = frozenset(
    {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EPERM, errno.EBADF}
)


def _copy_in_kernel(source: int, out: BinaryIO, offset: int, length: int) -> int:
    copy = getattr(os, "copy_file_range", None)
    copied = 0
    if copy is None:
        return 0
    try:
        while copied < length:
            n: int = copy(source, out.fileno(), min(length - copied, 1 << 30), offset + copied)
            if n == 0:
                break
            copied += n
    except OSError as error:
        if error.errno not in _NOT_IN_KERNEL:
            raise  # a full disk, an I/O error: not something a slower copy would fix
    finally:
        out.seek(0, os.SEEK_END)  # the stream's cached position follows the descriptor's
    return copied


def write_temp(
    path: str,
    entries: Sequence[Entry],
    metadata: Mapping[str, str] | None = None,
    *,
    progress: Callable[[int], None] | None = None,
    fsync: bool = True,
) -> tuple[str, int]:
    """Write the safetensors file meant for ``path`` under a temporary name beside it; return that
    name and the file's size.

    The file stays open and locked (``create_new``) until :func:`publish` renames it or
    ``discard_temp`` removes it, so that no other process takes it for a dead one's leftover;
    on an error here it is removed and the error re-raised.
    """
    head = header_bytes(entries, metadata)
    try:
        temp, out = create_new(path)
    except OSError as error:
        error.filename = path  # the output cannot be created: name it, not the temporary name
        raise
    try:
        out.write(head)
        end = len(head)
        for entry in entries:
            entry.write(out)
            end += entry.nbytes
            out.flush()
            if out.tell() != end:
                raise OSError(
                    f"{path}: tensor {entry.name!r} wrote {out.tell() - end + entry.nbytes} bytes, "
                    f"its header says {entry.nbytes}"
                )
            if progress is not None:
                progress(entry.nbytes)
        out.flush()
        if fsync:
            os.fsync(out.fileno())
    except BaseException:
        discard_temp(temp)
        raise
    return temp, end


def publish(temp: str, path: str) -> None:
    """Rename the finished temporary file ``temp`` to ``path`` (replacing the entry there, never
    writing through it), then release it. ``OSError`` names ``path``."""
    if sys.platform == "win32":  # an open file cannot be renamed there (and there is no lock to keep)
        temp_published(temp)
    try:
        os.replace(temp, path)
    except OSError as error:  # a folder under the final name: name the output, not the temporary file
        error.filename, error.filename2 = path, None
        raise
    temp_published(temp)
