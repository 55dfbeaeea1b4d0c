"""``read_safetensors()``: the header of a safetensors file, checked as the format's own reader checks it.

A safetensors file is an 8-byte little-endian header length N, N bytes of UTF-8 JSON, then the
tensors' bytes. The JSON is an object: an optional ``"__metadata__"`` (a string-to-string map,
or ``null``) and, per tensor name, ``{"dtype", "shape", "data_offsets": [begin, end]}``, offsets
counted from the end of the header. The rules are the ``safetensors`` crate's
(``SafeTensors::read_metadata`` and ``Metadata::validate``, safetensors 0.8 / main of 2026-05):
N at most 100,000,000 and within the file; valid UTF-8; JSON that parses; a known dtype; shapes
and offsets of unsigned integers; taken in order of their offsets, the tensors' byte ranges
start at 0, follow one another without gap or overlap, each as long as dtype x shape (in bits,
a whole number of bytes), and the last ends exactly at the end of the file. A header that
breaks one is a :class:`~ckptkeys.SafetensorsHeaderError` naming the file and the tensor.
The JSON is read as the crate's serde_json reads it: nesting deeper than its recursion limit
(127 levels) is refused, as is a number out of f64's range (``1e400``) and ``-0`` (a float to
serde) where an unsigned integer is due; a tensor given as the array ``[dtype, shape,
data_offsets]`` is taken (serde builds a struct from a sequence); a key given twice in
``__metadata__`` or in a field the format does not know keeps the last, as serde does, and
``__metadata__`` or a tensor's field given twice is refused, as serde refuses it. Stricter than
the crate in one place: a tensor name given twice (the crate keeps the last; two JSON readers
may keep different ones) is refused. No tensor byte is read.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import re
import struct
from dataclasses import dataclass

from ._errors import ReadError, SafetensorsHeaderError
from ._files import open_regular
from ._repr import counted

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Final

    from ._source import RemoteObject

__all__ = [
    "DTYPE_BITS",
    "MAX_HEADER_SIZE",
    "SafetensorsFile",
    "SafetensorsTensor",
    "is_safetensors",
    "is_safetensors_object",
    "looks_like_safetensors",
    "read_safetensors",
    "read_safetensors_object",
]

MAX_HEADER_SIZE: Final = 100_000_000
"""The safetensors crate's ``MAX_HEADER_SIZE``: a longer header is refused (``HeaderTooLarge``)."""

# The length prefix of the header.
_N_LEN: Final = 8
# usize on the 64-bit platforms the crate checks its arithmetic for.
_USIZE_MAX: Final = 2**64 - 1
# serde_json's recursion limit: it refuses an array or object 128 deep (the top object is 1 deep).
_MAX_DEPTH: Final = 127
# JSON's whitespace, which may come before the header's "{".
_WHITESPACE: Final = b" \t\n\r"
# How much of a header the content sniff reads to find its "{" after whitespace.
_SNIFF: Final = 4096
# The fields of a tensor, in the order serde takes them from an array.
_FIELDS: Final = ("dtype", "shape", "data_offsets")

DTYPE_BITS: Final[dict[str, int]] = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}
"""Every dtype name of the format (the crate's ``Dtype``), with its size in bits (``Dtype::bitsize``)."""


@dataclass(frozen=True, slots=True)
class SafetensorsTensor:
    """One tensor of a safetensors header."""

    name: str
    dtype: str
    """The format's name: ``"F32"``, ``"BF16"``, ``"F8_E4M3"`` (a key of ``DTYPE_BITS``)."""
    shape: tuple[int, ...]
    data_offsets: tuple[int, int]
    """Its bytes, ``[begin, end)``, counted from the end of the header."""

    @property
    def numel(self) -> int:
        """Elements of the tensor: the product of :attr:`shape`."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of its data, as :attr:`data_offsets` say."""
        return self.data_offsets[1] - self.data_offsets[0]


@dataclass(frozen=True, slots=True, repr=False)
class SafetensorsFile:
    """A safetensors file's header, checked: its tensors in the header's order, and its metadata.

    Its repr is one line (file, tensors, dtypes, bytes); the tensors are :attr:`tensors`.
    """

    path: str
    size: int
    """The file's size in bytes."""
    header_size: int
    """N, the JSON header's length in bytes (the tensors' bytes start at ``8 + header_size``)."""
    tensors: tuple[SafetensorsTensor, ...]
    metadata: dict[str, str] | None
    """``__metadata__``, or ``None`` where the header has none (or ``null``)."""

    def __repr__(self) -> str:
        count = len(self.tensors)
        dtypes = "/".join(sorted({t.dtype for t in self.tensors}))
        facts = [counted(count, "tensor")] + ([dtypes] if dtypes else [])
        facts.append(f"{sum(t.nbytes for t in self.tensors):,} bytes")
        if self.metadata:
            facts.append(f"metadata {sorted(self.metadata)}"[:80])
        return f"<SafetensorsFile {self.path!r}: {', '.join(facts)}>"

    @property
    def data_start(self) -> int:
        """Where the tensors' bytes start in the file."""
        return _N_LEN + self.header_size

    def tensor(self, name: str) -> SafetensorsTensor:
        """The tensor called ``name``; ``KeyError`` if the header has none."""
        for tensor in self.tensors:
            if tensor.name == name:
                return tensor
        raise KeyError(name)


def looks_like_safetensors(head: bytes, size: int) -> bool:
    """Whether a file of ``size`` bytes that starts with ``head`` (9 bytes or more) is one to read as
    safetensors: a header length that fits the file and the format's cap, and a JSON object after it
    (after JSON's whitespace, which the crate's reader takes too; whitespace to the end of ``head``
    leaves it to the reader).

    torch's formats never pass: a zip starts ``PK``, a legacy file with a pickle's ``\\x80``, which
    make a length past any file.
    """
    if len(head) <= _N_LEN:
        return False
    (length,) = struct.unpack("<Q", head[:_N_LEN])
    if not 2 <= length <= min(MAX_HEADER_SIZE, size - _N_LEN):
        return False
    body = head[_N_LEN : _N_LEN + length]
    start = body.lstrip(_WHITESPACE)
    return start[:1] == b"{" or (not start and len(body) < length)


def is_safetensors(path: str, *, boundary: str | None = None) -> bool:
    """:func:`looks_like_safetensors` of the file at ``path`` (``False`` for one that cannot be opened:
    the reader that opens it next says why)."""
    try:
        with open_regular(path, boundary=boundary) as raw:
            size = os.fstat(raw.fileno()).st_size
            head = raw.read(_N_LEN + _SNIFF) or b""
    except (ReadError, OSError):
        return False
    return looks_like_safetensors(head, size)


def is_safetensors_object(source: RemoteObject) -> bool:
    """:func:`is_safetensors` of a remote object: its first bytes, one ranged GET."""
    parts = source.fetch([(0, min(source.size, _N_LEN + _SNIFF))])
    return looks_like_safetensors(parts[0] if parts else b"", source.size)


def read_safetensors(path: str | os.PathLike[str], *, boundary: str | None = None) -> SafetensorsFile:
    """Read and check the header of the safetensors file at ``path``, without torch or the ``safetensors`` package.

    Raises :class:`~ckptkeys.SafetensorsHeaderError` (a :class:`~ckptkeys.ReadError`) naming the
    file, and the tensor where one is at fault, for a header the format's own reader refuses;
    ``ReadError`` when the file cannot be opened (``boundary``: only inside that folder, a real path).
    """
    name = os.fspath(path)
    try:
        with io.BufferedReader(open_regular(name, boundary=boundary)) as stream:
            size = os.fstat(stream.fileno()).st_size
            return _read_header(name, size, lambda start, length: stream.read(length))
    except ReadError:
        raise
    except OSError as error:
        raise ReadError(name, f"cannot be read: {error.strerror or error}") from None


def read_safetensors_object(source: RemoteObject) -> SafetensorsFile:
    """:func:`read_safetensors` of a remote object (a URL's, or a folder listing's): its 8-byte
    length, then exactly its header, two ranged GETs pinned to the version first seen; no tensor byte."""

    def fetch(start: int, length: int) -> bytes:
        parts = source.fetch([(start, min(source.size, start + length))])
        return parts[0] if parts else b""

    file = _read_header(source.url, source.size, fetch)
    source.confirm()
    return file


def _read_header(name: str, size: int, read: Callable[[int, int], bytes]) -> SafetensorsFile:
    """The header of a ``size``-byte safetensors file; ``read(start, length)`` gives its bytes from
    ``start`` on (called with 0 then 8: a local stream reads on, a remote object fetches that range)."""
    prefix = read(0, _N_LEN)
    if len(prefix) < _N_LEN:
        raise SafetensorsHeaderError(name, f"is {size} bytes: too short for the 8-byte header length")
    (length,) = struct.unpack("<Q", prefix)
    if length > MAX_HEADER_SIZE:
        raise SafetensorsHeaderError(
            name, f"declares a {length}-byte header; the format allows at most {MAX_HEADER_SIZE}"
        )
    if _N_LEN + length > size:
        raise SafetensorsHeaderError(
            name, f"declares a {length}-byte header, but the file ends {size - _N_LEN} bytes after its length"
        )
    raw = read(_N_LEN, length)
    if len(raw) != length:  # the file shrank while being read
        raise SafetensorsHeaderError(name, f"ended inside its {length}-byte header")
    header = _parse(name, raw)
    metadata, tensors = _entries(name, header)
    _check_offsets(name, tensors, size - _N_LEN - length)
    return SafetensorsFile(name, size, length, tuple(tensors), metadata)


def _keeping_duplicates(twice: dict[int, str]) -> Any:
    """A hook that builds each object as serde does (the last of a key given twice), noting in
    ``twice`` (by the object's id) the first key given twice: where that is an error depends on the object."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        found = dict(items)
        if len(found) != len(items):
            seen: set[str] = set()
            for key, _ in items:
                if key in seen:
                    twice.setdefault(id(found), key)
                seen.add(key)
        return found

    return pairs


def _number(path: str) -> Any:
    def parse(token: str) -> float:  # serde_json: a number past f64's range is an error
        value = float(token)
        if math.isinf(value):
            raise SafetensorsHeaderError(path, f"the header is not JSON: the number {token:.40} is out of range")
        return value

    return parse


def _integer(path: str) -> Any:
    def parse(token: str) -> int | float:
        if token == "-0":  # serde_json reads it as the float -0.0, which no unsigned integer takes
            return -0.0
        value = int(token)
        if abs(value) > _F64_MAX:  # past u64/i64 serde_json reads an integer as f64
            raise SafetensorsHeaderError(path, f"the header is not JSON: the number {token:.40}... is out of range")
        return value

    return parse


_F64_MAX: Final = int(float.fromhex("0x1.fffffffffffffp+1023"))


_STRINGS: Final = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS: Final = re.compile(r"[^\[\]{}]+")


def _too_deep(text: str) -> bool:
    """Whether the JSON ``text`` (already parsed: well formed) nests arrays and objects more than
    :data:`_MAX_DEPTH` deep (the outermost is 1). Counted on the text, not on the parsed value: a
    key given twice keeps only its last value there, and serde_json counts the one dropped too."""
    brackets = _NOT_BRACKETS.sub("", _STRINGS.sub("", text))
    return max(itertools.accumulate(1 if c in "[{" else -1 for c in brackets), default=0) > _MAX_DEPTH


def _constant(path: str) -> Any:
    def refuse(token: str) -> Any:  # NaN, Infinity: Python's json takes them, JSON does not
        raise SafetensorsHeaderError(path, f"the header is not JSON: {token} is no JSON value")

    return refuse


def _parse(path: str, raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SafetensorsHeaderError(path, f"the header is not UTF-8 (byte {error.start})") from None
    twice: dict[int, str] = {}
    try:
        header = json.loads(
            text,
            object_pairs_hook=_keeping_duplicates(twice),
            parse_constant=_constant(path),
            parse_float=_number(path),
            parse_int=_integer(path),
        )
    except SafetensorsHeaderError:
        raise
    except RecursionError:
        raise SafetensorsHeaderError(path, "the header nests too deep to be a safetensors header") from None
    except ValueError as error:  # JSONDecodeError, and int() of more than 4300 digits
        raise SafetensorsHeaderError(path, f"the header is not JSON: {error!s:.200}") from None
    if not isinstance(header, dict):
        raise SafetensorsHeaderError(path, f"the header is a JSON {type(header).__name__}, not an object")
    if _too_deep(text):
        raise SafetensorsHeaderError(
            path, f"the header nests more than {_MAX_DEPTH} deep (serde_json's recursion limit)"
        )
    if id(header) in twice:
        if twice[id(header)] == "__metadata__":
            raise SafetensorsHeaderError(path, "the header gives __metadata__ twice")
        raise SafetensorsHeaderError(path, "is named twice in the header", tensor=twice[id(header)])
    for name, entry in header.items():
        if isinstance(entry, dict) and twice.get(id(entry)) in _FIELDS and name != "__metadata__":
            raise SafetensorsHeaderError(path, f"gives {twice[id(entry)]!r} twice", tensor=name)
    if "\\u" in text:  # only an escape makes a surrogate: decoded UTF-8 holds none
        _no_lone_surrogates(path, header)
    return header


def _no_lone_surrogates(path: str, header: dict[str, Any]) -> None:
    """Python's json takes a ``\\ud800`` escape with no partner; the crate's JSON reader refuses it."""
    try:
        json.dumps(header, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise SafetensorsHeaderError(path, "the header is not JSON: a \\u escape is half of a surrogate pair") from None


def _usize(value: Any) -> bool:
    return type(value) is int and 0 <= value <= _USIZE_MAX


def _entries(path: str, header: dict[str, Any]) -> tuple[dict[str, str] | None, list[SafetensorsTensor]]:
    metadata = header.get("__metadata__")
    if metadata is not None and not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise SafetensorsHeaderError(path, "__metadata__ must map strings to strings")
    tensors = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if isinstance(entry, list):  # serde builds the struct from a sequence of its fields, in order
            if len(entry) != len(_FIELDS):
                raise SafetensorsHeaderError(
                    path, f"is an array of {len(entry)} items, not [dtype, shape, data_offsets]", tensor=name
                )
            entry = dict(zip(_FIELDS, entry, strict=True))
        if not isinstance(entry, dict):
            raise SafetensorsHeaderError(path, f"is a JSON {type(entry).__name__}, not a tensor's object", tensor=name)
        for field in _FIELDS:
            if field not in entry:
                raise SafetensorsHeaderError(path, f"has no {field!r}", tensor=name)
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
            raise SafetensorsHeaderError(path, f"has dtype {dtype!r:.60}, not one of the format's", tensor=name)
        if not isinstance(shape, list) or not all(_usize(n) for n in shape):
            raise SafetensorsHeaderError(path, f"has shape {shape!r:.80}: not a list of unsigned integers", tensor=name)
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_usize(n) for n in offsets):
            raise SafetensorsHeaderError(
                path, f"has data_offsets {offsets!r:.80}: not two unsigned integers", tensor=name
            )
        tensors.append(SafetensorsTensor(name, dtype, tuple(shape), (offsets[0], offsets[1])))
    return metadata, tensors


def _check_offsets(path: str, tensors: list[SafetensorsTensor], buffer: int) -> None:
    """``Metadata::validate`` and the end check of ``read_metadata``, in the crate's order."""
    start = 0
    for tensor in sorted(tensors, key=lambda t: t.data_offsets):
        begin, end = tensor.data_offsets
        if begin != start or end < begin:
            where = "overlaps the one before" if begin < start else "leaves a gap before it"
            if end < begin:
                where = "ends before it begins"
            raise SafetensorsHeaderError(
                path, f"has data_offsets [{begin}, {end}], expected to start at {start}: it {where}", tensor=tensor.name
            )
        start = end
        bits = DTYPE_BITS[tensor.dtype]
        numel = 1
        for n in tensor.shape:
            numel *= n
            if numel > _USIZE_MAX:
                raise SafetensorsHeaderError(path, f"has a shape {list(tensor.shape)} too large", tensor=tensor.name)
        if numel * bits > _USIZE_MAX:
            raise SafetensorsHeaderError(path, f"has a shape {list(tensor.shape)} too large", tensor=tensor.name)
        if numel * bits % 8:
            raise SafetensorsHeaderError(
                path, f"holds {numel} {tensor.dtype} elements: not a whole number of bytes", tensor=tensor.name
            )
        if end - begin != numel * bits // 8:
            raise SafetensorsHeaderError(
                path,
                f"is {tensor.dtype} of shape {list(tensor.shape)} ({numel * bits // 8} bytes), "
                f"but its data_offsets [{begin}, {end}] span {end - begin}",
                tensor=tensor.name,
            )
    if start != buffer:
        raise SafetensorsHeaderError(
            path,
            f"the tensors' bytes end at {start}, the file's {buffer} bytes after the header"
            + (": the file is cut short" if start > buffer else ": the rest is covered by no tensor"),
        )
