"""An inert pickle machine: it reads every opcode of protocols 0-5 and runs none of them.

Where the standard unpickler imports the globals a pickle names and calls them, this one
records them. ``GLOBAL``/``STACK_GLOBAL`` push a :class:`GlobalRef`; ``REDUCE``, ``NEWOBJ``,
``NEWOBJ_EX``, ``INST`` and ``OBJ`` make an :class:`Opaque` record of the call (class, args,
kwargs), and ``BUILD`` stores the state in the record. Nothing named in the pickle is ever
imported, called, or looked up as an attribute. A small table of *interpreters* turns the
calls that only build data (an ``OrderedDict``, ``_codecs.encode`` of a latin-1 string,
torch's tensor rebuilds) into plain values; the interpreters are pure functions of the
pickled arguments. Text opcodes (protocol 0) are parsed as C pickle parses them, and what the
structure takes is charged, in bytes, against ``Limits.max_structure_bytes``.
"""

from __future__ import annotations

import _compat_pickle  # the Python 2 renaming tables C pickle itself loads
import codecs
import itertools
import math
import mmap
import struct
from collections import OrderedDict
from dataclasses import dataclass, field

from ._cnumbers import double_end, strtol
from ._errors import CorruptCheckpointError, LimitError, ReadError
from ._globalref import GlobalRef
from ._limits import Limits

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from typing import Any, Final

    Interpreter = Callable[[tuple[Any, ...], "dict[Any, Any] | None"], Any]
    PersistentLoad = Callable[[Any], Any]
    FindClass = Callable[[str, str, int], "GlobalRef"]

__all__ = ["Opaque", "PersistentRef", "Unpickled", "find_class", "unpickle"]

HIGHEST_PROTOCOL: Final = 5


def find_class(module: str, name: str, protocol: int) -> GlobalRef:
    """The global C pickle's ``Unpickler.find_class`` resolves for ``GLOBAL``, ``STACK_GLOBAL`` and ``INST``.

    Under protocol 0-2 it renames Python 2 names first (``fix_imports``, on by default and in
    ``torch.load``), with the running interpreter's own tables (``_compat_pickle``): a renamed
    global records the written names too. From protocol 4 on it walks a dotted ``name``
    attribute by attribute (``GLOBAL 'torch' 'os.system'`` is ``os.system``); the name is kept
    dotted, as written, for the classification to see. ``protocol`` is the one in force when the
    opcode runs: the last ``PROTO`` opcode read, 0 before any.
    """
    if protocol < 3:
        renamed = _compat_pickle.NAME_MAPPING.get((module, name))
        if renamed is not None:
            return GlobalRef(renamed[0], renamed[1], (module, name))
        if module in _compat_pickle.IMPORT_MAPPING:
            return GlobalRef(_compat_pickle.IMPORT_MAPPING[module], name, (module, name))
    return GlobalRef(module, name)


@dataclass(eq=False, slots=True)
class Opaque:
    """An object the pickle would have built by calling ``cls``: an inert record of that call.

    ``args`` and ``kwargs`` are what the pickle passes to the constructor (``REDUCE``,
    ``NEWOBJ``, ``NEWOBJ_EX``, ``INST``, ``OBJ``); ``state`` is what ``BUILD`` would pass to
    ``__setstate__`` (usually the instance ``__dict__``); ``items`` and ``dict_items`` collect
    what the pickle appends or assigns to it as a list or a dict. Records compare by identity,
    as the objects they stand for would. ``opcode`` names the opcode that made the call
    (``"REDUCE"``, ``"NEWOBJ"``, ``"NEWOBJ_EX"``, ``"INST"``, ``"OBJ"``; ``None`` for a record the
    machine made in place of something it could not follow) and ``builds`` counts the ``BUILD``
    opcodes applied to it (a second one nests the states in a pair): with them a writer emits the
    record as the pickle built it (``ckptkeys._export._pt``).
    """

    cls: GlobalRef | Any
    args: tuple[Any, ...] = ()
    kwargs: dict[Any, Any] | None = None
    state: Any = None
    items: list[Any] = field(default_factory=list)
    dict_items: dict[Any, Any] = field(default_factory=dict)
    opcode: str | None = None
    builds: int = 0

    @property
    def qualname(self) -> str:
        """The qualified name of the class or function, or ``<call>`` if that was no global."""
        return self.cls.qualname if isinstance(self.cls, GlobalRef) else "<call>"

    def __repr__(self) -> str:
        parts = [repr(arg) for arg in self.args]
        parts += [f"{key}={value!r}" for key, value in (self.kwargs or {}).items()]
        text = f"<Opaque {self.qualname}({', '.join(parts)})"
        if self.state is not None:
            text += f" state={self.state!r}"
        return text + ">"


@dataclass(frozen=True, slots=True)
class PersistentRef:
    """A persistent id in a pickle read without a persistent-load hook (a raw pickle)."""

    pid: Any


@dataclass(frozen=True, slots=True)
class Unpickled:
    """The result of :func:`unpickle`: the object, and every global the pickle named."""

    value: Any
    globals: tuple[GlobalRef, ...]
    """Every global named, in order of first mention, whether called or not."""
    end: int
    """Offset of the first byte after the pickle's STOP."""
    containers: int = 0
    """An upper bound on the containers the run made: no structure nests deeper than this."""
    frame_end: int | None = None
    """Where the protocol-4 frame holding the STOP ends, if past ``end``: a reader that takes
    whole frames from a stream (C pickle on a large frame) resumes there, not at ``end``."""


# Containers one call may make: the Opaque record with its `items` list and `dict_items` dict,
# the argument tuple INST and OBJ build, and an interpreter's own fallback record (torch's
# _rebuild_from_type_v2 wraps another interpreter's record): 3 + 1 + 3, rounded up.
_CALL_CONTAINERS: Final = 8

# What the structure costs, charged against Limits.max_structure_bytes: CPython's sizes
# (sys.getsizeof on 64-bit CPython 3.11, rounded up) for what each opcode makes. A reference
# (a stack slot, a list or tuple item) is charged when pushed; what a container adds per item
# is charged when it grows.
_REF_BYTES: Final = 8
_DICT_BYTES: Final = 184  # a dict with its first table (64 empty): why counting objects is not enough
_LIST_BYTES: Final = 88  # a list with its first four slots (56 empty)
_SET_BYTES: Final = 216
_TUPLE_BYTES: Final = 40  # plus a reference per item
_PAIR_BYTES: Final = 48  # one dict entry (hash, key, value) with the table's spare room
_SET_ITEM_BYTES: Final = 40  # likewise for a set
_MEMO_BYTES: Final = 80  # a new memo entry: its int key and its dict entry (1.4 GB for 20M measured)
_STR_BYTES: Final = 64  # a str or bytes object, plus its length
_INT_BYTES: Final = 32  # an int too large to be cached, plus the bytes of its digits
_GLOBAL_BYTES: Final = 160  # a GlobalRef and its two names, plus their length
_CALL_BYTES: Final = 256  # an Opaque record (slots, items list, dict_items dict) or a rebuilt value

_MARK: Final = object()  # stands on the stack where MARK put it (we keep marks in a metastack)

_UNSIGNED_1: Final = struct.Struct("<B")
_UNSIGNED_2: Final = struct.Struct("<H")
_SIGNED_4: Final = struct.Struct("<i")
_UNSIGNED_4: Final = struct.Struct("<I")
_UNSIGNED_8: Final = struct.Struct("<Q")
_DOUBLE_BE: Final = struct.Struct(">d")

# Values whose behaviour under C pickle's APPEND, SETITEM, ADDITEMS, BUILD, ... the machine
# knows exactly: what it does not know (an Opaque record, a global, a rebuilt tensor, a storage)
# may have the method C pickle calls, so an opcode on it is a defect read on from, not a stop.
_PLAIN_TYPES: Final = frozenset(
    {type(None), bool, int, float, complex, str, bytes, bytearray, tuple, list, dict, set, frozenset, OrderedDict}
)


# Calls that only build data from their arguments: safe to evaluate, and worth evaluating.
_LATIN1_ENCODINGS: Final = frozenset({"latin1", "latin-1", "iso-8859-1", "iso8859-1", "ascii", "utf-8", "utf8"})


def _ordered_dict(args: tuple[Any, ...], kwargs: dict[Any, Any] | None) -> Any:
    if kwargs or len(args) > 1:
        raise ValueError("OrderedDict takes at most one positional argument here")
    if not args or args[0] is None:
        return OrderedDict()
    return OrderedDict(_pairs(args[0]))


def _pairs(items: Any) -> list[tuple[Any, Any]]:
    if isinstance(items, dict):
        return list(items.items())
    if isinstance(items, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in items):
        return [(p[0], p[1]) for p in items]
    raise ValueError("expected a dict or a list of pairs")


def _codecs_encode(args: tuple[Any, ...], kwargs: dict[Any, Any] | None) -> Any:
    # Protocol-2 pickles written by Python 3 encode bytes as _codecs.encode(str, "latin1").
    if kwargs or len(args) != 2 or not isinstance(args[0], str) or not isinstance(args[1], str):
        raise ValueError("_codecs.encode takes (str, encoding) here")
    if args[1].lower() not in _LATIN1_ENCODINGS:
        raise ValueError(f"encoding {args[1]!r} is not evaluated")
    return args[0].encode(args[1])


def _builtin_container(kind: type) -> Interpreter:
    def build(args: tuple[Any, ...], kwargs: dict[Any, Any] | None) -> Any:
        if kwargs or len(args) > 1:
            raise ValueError(f"{kind.__name__} takes at most one positional argument here")
        if not args:
            return kind()
        if not isinstance(args[0], (list, tuple, set, frozenset, bytes, str)):
            raise ValueError(f"{kind.__name__} of {type(args[0]).__name__} is not evaluated")
        return kind(args[0])

    return build


BUILTIN_INTERPRETERS: Final[dict[tuple[str, str], Interpreter]] = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("_codecs", "encode"): _codecs_encode,
    ("builtins", "set"): _builtin_container(set),
    ("builtins", "frozenset"): _builtin_container(frozenset),
    ("builtins", "bytearray"): _builtin_container(bytearray),
    ("__builtin__", "set"): _builtin_container(set),
    ("__builtin__", "frozenset"): _builtin_container(frozenset),
}


class _Machine:
    """One run over one pickle. Not reusable."""

    def __init__(
        self,
        data: bytes | memoryview | mmap.mmap,
        *,
        source: str,
        limits: Limits,
        interpreters: Mapping[tuple[str, str], Interpreter],
        persistent_load: PersistentLoad | None,
        find_class: FindClass,
        stop: int,
    ) -> None:
        # bytes, or an mmap (indexing, slicing and find() behave alike): never copied whole.
        self.data = data if isinstance(data, (bytes, mmap.mmap)) else bytes(data)
        self.size = stop
        self.pos = 0
        self.proto = 0  # as C pickle: the last PROTO opcode's, 0 before any
        self.frame_end: int | None = None
        self.find_class = find_class
        # What the machine cannot follow where C pickle goes on (a call the interpreters could not
        # evaluate, a BUILD on an object it made, ...): recorded with an inert stand-in, and
        # reported once the whole pickle is read, so every global after it is seen.
        self.defects: list[ReadError] = []
        self.source = source
        self.limits = limits
        self.interpreters = interpreters
        self.persistent_load = persistent_load
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.globals: dict[GlobalRef, None] = {}
        self.objects = 0
        self.max_objects = limits.max_objects
        # Bytes the structure holds so far, as estimated (see _REF_BYTES): bounded by the limit.
        self.spent = 0
        self.max_bytes = limits.max_structure_bytes
        # Nesting depth of every tuple and frozenset made so far, by id: hashing one (as a
        # dict key or set element) recurses in C, and a deep enough one crashes the process.
        self.depths: dict[int, int] = {}
        # Containers made so far, over-counted (see _CALL_CONTAINERS): a chain of nested
        # containers is made of distinct containers, so no structure nests deeper than this, and
        # the depth pass over the finished structure can be skipped while it is under the limit.
        self.containers = 0

    def immutable(self, container: tuple[Any, ...] | frozenset[Any]) -> None:
        if type(container) is tuple:
            self.spent += _TUPLE_BYTES + _REF_BYTES * len(container)
        else:
            self.spent += _SET_BYTES + _SET_ITEM_BYTES * len(container)
        # (checked by the push below)
        depths = self.depths
        depth = 1
        for item in container:  # only tuples and frozensets nest inside a hashable value
            kind = type(item)
            if kind is tuple or kind is frozenset:
                inner = depths.get(id(item), 1) + 1
                if inner > depth:
                    depth = inner
        if depth > self.limits.max_depth:
            raise LimitError(self.source, "max_depth", self.limits.max_depth)
        if depth > 1:  # absent means 1: most tuples hold only names and numbers
            depths[id(container)] = depth
            self.spent += _MEMO_BYTES
        self.containers += 1
        self.push(container)

    # -- input ------------------------------------------------------------------------------

    def fail(self, message: str, opcode_pos: int | None = None) -> CorruptCheckpointError:
        where = f" at byte {opcode_pos}" if opcode_pos is not None else ""
        return CorruptCheckpointError(self.source, f"pickle{where}: {message}")

    def defect(self, message: str, at: int | None = None) -> None:
        """Record what C pickle would go on from but the machine cannot follow; read on.

        ``at`` is where the opcode starts; by default the byte before the current position, which
        it is for every opcode without an argument (BUILD, APPEND, SETITEM, REDUCE, ...).
        """
        self.defects.append(self.fail(message, self.pos - 1 if at is None else at))

    def read(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > self.size:
            raise self.fail(f"truncated: wanted {n} bytes at byte {self.pos}, {self.size - self.pos} left")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def readline(self) -> bytes:
        limit = self.limits.max_line_bytes
        end = self.data.find(b"\n", self.pos, min(self.pos + limit + 1, self.size))
        if end < 0:
            if self.size - self.pos > limit:
                raise LimitError(self.source, "max_line_bytes", limit)
            raise self.fail("truncated: a text opcode has no end of line")
        line = self.data[self.pos : end]
        self.pos = end + 1
        return line

    def sized(self, n: int) -> bytes:
        if n > self.limits.max_string_bytes:
            raise LimitError(self.source, "max_string_bytes", self.limits.max_string_bytes)
        self.spent += _STR_BYTES + n  # checked when the string is pushed
        return self.read(n)

    def charge(self, nbytes: int) -> None:
        """Count ``nbytes`` more of structure against ``Limits.max_structure_bytes``."""
        self.spent += nbytes
        if self.spent > self.max_bytes:
            raise LimitError(self.source, "max_structure_bytes", self.max_bytes)

    # -- the stack --------------------------------------------------------------------------

    def push(self, value: Any) -> None:
        self.objects += 1
        self.spent += _REF_BYTES
        if self.objects > self.max_objects or self.spent > self.max_bytes:
            if self.objects > self.max_objects:
                raise LimitError(self.source, "max_objects", self.max_objects)
            raise LimitError(self.source, "max_structure_bytes", self.max_bytes)
        self.stack.append(value)

    def pop(self) -> Any:
        if not self.stack:
            raise self.fail("stack underflow")
        return self.stack.pop()

    def top(self) -> Any:
        if not self.stack:
            raise self.fail("stack underflow")
        return self.stack[-1]

    def pop_mark(self) -> list[Any]:
        if not self.metastack:
            raise self.fail("no MARK to pop to")
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def memo_put(self, index: int, value: Any) -> None:
        memo = self.memo
        if index not in memo:
            if index < 0:
                raise self.fail("negative memo index")
            if len(memo) >= self.limits.max_memo:
                raise LimitError(self.source, "max_memo", self.limits.max_memo)
            self.spent += _MEMO_BYTES
            if self.spent > self.max_bytes:
                raise LimitError(self.source, "max_structure_bytes", self.max_bytes)
        memo[index] = value

    def memo_get(self, index: int) -> Any:
        try:
            return self.memo[index]
        except KeyError:
            raise self.fail(f"memo index {index} was never stored") from None

    # -- calls ------------------------------------------------------------------------------

    def note_global(self, module: str, name: str) -> GlobalRef:
        self.spent += _GLOBAL_BYTES + len(module) + len(name)  # checked when the global is pushed
        ref = self.find_class(module, name, self.proto)
        self.globals.setdefault(ref, None)
        return ref

    def call(self, func: Any, args: Any, kwargs: Any, opcode: str, at: int | None = None) -> Any:
        self.containers += _CALL_CONTAINERS
        self.spent += _CALL_BYTES  # checked when the result is pushed
        if not isinstance(args, tuple):
            if isinstance(args, list):  # INST/OBJ collect args from the stack
                args = tuple(args)
            elif type(args) in _PLAIN_TYPES:  # C pickle stops too: "argument list must be a tuple"
                raise self.fail(f"{opcode}: arguments are {type(args).__name__}, not a tuple")
            else:  # a record of a call that may return a tuple: C pickle may go on
                self.defect(f"{opcode}: arguments are an object the reader cannot evaluate ({_describe(args)})", at)
                return Opaque(func, (args,), None)
        if kwargs is not None and not isinstance(kwargs, dict):
            if type(kwargs) in _PLAIN_TYPES:
                raise self.fail(f"{opcode}: keyword arguments are {type(kwargs).__name__}, not a dict")
            self.defect(
                f"{opcode}: keyword arguments are an object the reader cannot evaluate ({_describe(kwargs)})", at
            )
            return Opaque(func, args, {"**": kwargs})
        if isinstance(func, GlobalRef):
            interpret = self.interpreters.get((func.module, func.name)) or BUILTIN_INTERPRETERS.get(
                (func.module, func.name)
            )
            if interpret is not None:
                try:
                    return interpret(args, kwargs)
                except LimitError:
                    raise
                except ReadError as error:  # an interpreter's own refusal, naming the file
                    self.defects.append(error)
                except (ValueError, TypeError, OverflowError) as error:
                    # The real call may succeed or fail otherwise: read on (an inert record in
                    # its place), so every later global is seen, and refuse the file at the end.
                    self.defect(f"{opcode} of {func.qualname}: {error}", at)
        return Opaque(func, args, kwargs, opcode=opcode)

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> Any:
        dispatch = _DISPATCH
        data = self.data
        size = self.size
        while self.pos < size:
            start = self.pos
            code = data[start]
            self.pos = start + 1
            handler = dispatch.get(code)
            if handler is None:
                raise self.fail(f"unknown opcode 0x{code:02x}", start)
            if handler is _stop:
                # As C pickle: the top of the current stack, open MARKs or not (a MARK is only a
                # fence: STOP inside one still returns what was pushed after it).
                return self.pop()
            try:
                handler(self)
            except (CorruptCheckpointError, LimitError):
                raise
            except (TypeError, ValueError, OverflowError, struct.error) as error:
                # an unhashable key or set element, a bad escape in a text opcode, ...
                raise self.fail(f"{_OPNAMES[code]}: {error}", start) from None
        raise self.fail("truncated: no STOP opcode")


# -- opcode handlers ------------------------------------------------------------------------


def _stop(m: _Machine) -> None:  # handled in run()
    raise AssertionError("unreachable")


def _proto(m: _Machine) -> None:
    version = m.read(1)[0]
    if version > HIGHEST_PROTOCOL:
        raise m.fail(f"unsupported protocol {version}")
    m.proto = version  # C pickle resolves every later global under this protocol


def _frame(m: _Machine) -> None:
    # The whole pickle is in memory; a frame only says where a streaming reader stops reading.
    length = _UNSIGNED_8.unpack(m.read(8))[0]
    m.frame_end = m.pos + length


def _text_line(m: _Machine) -> bytes:
    # C pickle's bad_readline: a text opcode's argument is at least one byte before its newline.
    line = m.readline()
    if not line:
        raise m.fail("a text opcode's line is empty")
    return line


def _int(m: _Machine) -> None:
    # As C's load_int: strtol(line, base 0), which reads a prefix (leading spaces, a sign, 0x
    # hex, 0 octal: "010" is 8) and must stop at the newline or a NUL byte; where it does not, or
    # the value does not fit a C long, the line is PyLong_FromString(line, base 0) instead.
    # Exactly two bytes reading 0 or 1 ("00", "01", " 1", "+0", "1\0") are False and True.
    line = _text_line(m)
    _check_digits(m, line)
    value, end = strtol(line)
    if value is not None and (end == len(line) or line[end] == 0):
        m.push(bool(value) if len(line) == 2 and value in (0, 1) else value)
    else:
        m.push(_pylong(m, line, 0, "INT"))


def _check_digits(m: _Machine, line: bytes) -> None:
    if len(line) > m.limits.max_int_digits:
        raise LimitError(m.source, "max_int_digits", m.limits.max_int_digits)
    m.charge(_INT_BYTES + len(line))


def _pylong(m: _Machine, line: bytes, base: int, opcode: str) -> int:
    """PyLong_FromString(line, NULL, base) on C pickle's NUL-terminated copy of the line."""
    # int() of bytes is PyLong_FromString that must read to the end: the same rules (spaces
    # around, a sign, underscores between digits, base 0's prefixes and no leading zeros), once
    # the line is cut where C sees its end, at the first NUL byte.
    try:
        return int(line.split(b"\0", 1)[0], base)
    except ValueError:
        raise m.fail(f"{opcode}: bad integer literal {line[:40]!r}") from None


def _long(m: _Machine) -> None:
    # As C's load_long: one trailing "L" is dropped, then PyLong_FromString(line, base 0).
    line = _text_line(m)
    _check_digits(m, line)
    m.push(_pylong(m, line[:-1] if line.endswith(b"L") else line, 0, "LONG"))


def _memo_index(m: _Machine, opcode: str) -> int:
    # As C's load_put and load_get: PyLong_FromString(line, base 10), as a Py_ssize_t.
    line = _text_line(m)
    _check_digits(m, line)
    index = _pylong(m, line, 10, opcode)
    if not -(1 << 63) <= index < 1 << 63:
        raise m.fail(f"{opcode}: memo index {index} does not fit a Py_ssize_t")
    return index


def _binint(m: _Machine) -> None:
    m.push(_SIGNED_4.unpack(m.read(4))[0])


def _binint1(m: _Machine) -> None:
    m.push(m.read(1)[0])


def _binint2(m: _Machine) -> None:
    m.push(_UNSIGNED_2.unpack(m.read(2))[0])


def _long_n(m: _Machine, n: int) -> None:
    if n > m.limits.max_int_digits:  # bytes of a two's-complement integer
        raise LimitError(m.source, "max_int_digits", m.limits.max_int_digits)
    m.push(int.from_bytes(m.read(n), "little", signed=True))


def _long1(m: _Machine) -> None:
    _long_n(m, m.read(1)[0])


def _long4(m: _Machine) -> None:
    n = _SIGNED_4.unpack(m.read(4))[0]
    if n < 0:
        raise m.fail("LONG4 with a negative byte count")
    _long_n(m, n)


def _float(m: _Machine) -> None:
    # As C's load_float: PyOS_string_to_double reads the longest prefix that is a float, which
    # must end at the newline or a NUL byte; a finite literal too large for a double is an
    # OverflowError there (float() would say inf).
    line = _text_line(m)
    m.charge(_INT_BYTES)
    end = double_end(line)
    if not end or (end < len(line) and line[end] != 0):
        raise m.fail(f"FLOAT: bad float literal {line[:40]!r}")
    literal = line[:end]
    value = float(literal)
    if math.isinf(value) and b"n" not in literal.lower():
        raise m.fail(f"FLOAT: {line[:40]!r} is too large for a double")
    m.push(value)


def _binfloat(m: _Machine) -> None:
    m.push(_DOUBLE_BE.unpack(m.read(8))[0])


def _decode_str(m: _Machine, raw: bytes) -> str:
    # Python 2 str: torch.load unpickles with encoding="utf-8" (errors "strict"): one that is not
    # UTF-8 stops it (UnicodeDecodeError), and the machine.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise m.fail(f"a Python 2 string is not UTF-8: {error.reason}") from None


def _string(m: _Machine) -> None:
    # As C's load_string: quoted alike at both ends, then the bytes escapes (PyBytes_DecodeEscape).
    line = m.readline()
    if len(line) < 2 or line[0] != line[-1] or line[:1] not in (b"'", b'"'):
        raise m.fail("STRING argument is not quoted")
    m.charge(_STR_BYTES + len(line))
    m.push(_decode_str(m, codecs.escape_decode(line[1:-1])[0]))


def _binstring(m: _Machine) -> None:
    n = _SIGNED_4.unpack(m.read(4))[0]
    if n < 0:
        raise m.fail("BINSTRING with a negative length")
    m.push(_decode_str(m, m.sized(n)))


def _short_binstring(m: _Machine) -> None:
    m.push(_decode_str(m, m.sized(m.read(1)[0])))


def _text(m: _Machine, raw: bytes) -> str:
    try:
        return str(raw, "utf-8", "surrogatepass")
    except UnicodeDecodeError as error:
        raise m.fail(f"a unicode string is not UTF-8: {error.reason}") from None


def _unicode(m: _Machine) -> None:
    line = m.readline()
    if len(line) > m.limits.max_string_bytes:
        raise LimitError(m.source, "max_string_bytes", m.limits.max_string_bytes)
    m.charge(_STR_BYTES + len(line))
    m.push(line.decode("raw-unicode-escape"))


def _binunicode(m: _Machine) -> None:
    m.push(_text(m, m.sized(_UNSIGNED_4.unpack(m.read(4))[0])))


def _short_binunicode(m: _Machine) -> None:
    m.push(_text(m, m.sized(m.read(1)[0])))


def _binunicode8(m: _Machine) -> None:
    m.push(_text(m, m.sized(_UNSIGNED_8.unpack(m.read(8))[0])))


def _binbytes(m: _Machine) -> None:
    m.push(m.sized(_UNSIGNED_4.unpack(m.read(4))[0]))


def _short_binbytes(m: _Machine) -> None:
    m.push(m.sized(m.read(1)[0]))


def _binbytes8(m: _Machine) -> None:
    m.push(m.sized(_UNSIGNED_8.unpack(m.read(8))[0]))


def _bytearray8(m: _Machine) -> None:
    m.push(bytearray(m.sized(_UNSIGNED_8.unpack(m.read(8))[0])))


def _next_buffer(m: _Machine) -> None:
    raise m.fail("out-of-band buffers (NEXT_BUFFER) are not supported")


def _readonly_buffer(m: _Machine) -> None:
    # C pickle makes the top a read-only view of itself: bytes already are one.
    top = m.top()
    if isinstance(top, bytearray):
        m.stack[-1] = bytes(top)
    elif isinstance(top, bytes):
        pass
    elif type(top) in _PLAIN_TYPES:  # no buffer: memoryview() fails in C pickle too
        raise m.fail(f"READONLY_BUFFER on a {type(top).__name__}")
    else:  # an object the reader did not build may be a buffer: C pickle may go on
        m.defect(f"READONLY_BUFFER on {_describe(top)}, which the reader cannot evaluate")


def _none(m: _Machine) -> None:
    m.push(None)


def _newtrue(m: _Machine) -> None:
    m.push(True)


def _newfalse(m: _Machine) -> None:
    m.push(False)


def _mark(m: _Machine) -> None:
    if len(m.metastack) >= m.limits.max_depth:
        raise LimitError(m.source, "max_depth", m.limits.max_depth)
    m.metastack.append(m.stack)
    m.stack = []


def _pop(m: _Machine) -> None:
    if m.stack:
        m.stack.pop()
    else:
        m.pop_mark()


def _pop_mark(m: _Machine) -> None:
    m.pop_mark()


def _dup(m: _Machine) -> None:
    m.push(m.top())


def _empty_tuple(m: _Machine) -> None:
    m.containers += 1  # measured as one level by the depth pass
    m.push(())  # a shared singleton: only the reference costs


def _tuple(m: _Machine) -> None:
    m.immutable(tuple(m.pop_mark()))


def _tuple_n(n: int) -> Callable[[_Machine], None]:
    def handler(m: _Machine) -> None:
        if len(m.stack) < n:
            raise m.fail("stack underflow")
        items = tuple(m.stack[-n:])
        del m.stack[-n:]
        m.immutable(items)

    return handler


def _empty_list(m: _Machine) -> None:
    m.containers += 1
    m.spent += _LIST_BYTES
    m.push([])


def _list(m: _Machine) -> None:
    m.containers += 1
    m.spent += _LIST_BYTES
    m.push(m.pop_mark())


def _describe(value: Any) -> str:
    # Never repr(): a record may hold a structure nested deeper than repr() can recurse.
    if isinstance(value, Opaque):
        return f"the result of {value.qualname}"
    if isinstance(value, GlobalRef):
        return f"the global {value.qualname}"
    return f"a {type(value).__name__}"


def _extend(m: _Machine, target: Any, items: list[Any]) -> None:
    # C's do_append: list.extend, else the target's own extend() or append().
    m.charge(_REF_BYTES * len(items))
    if type(target) is list:
        target.extend(items)
    elif isinstance(target, Opaque):
        target.items.extend(items)
    elif type(target) in _PLAIN_TYPES and type(target) is not bytearray:  # no extend, no append
        raise m.fail(f"APPEND to a {type(target).__name__}")
    else:  # a global (sys.path is a list), a rebuilt value, a bytearray: its method runs in C
        m.defect(f"APPEND to {_describe(target)}: torch calls its extend() or append()")


def _append(m: _Machine) -> None:
    value = m.pop()
    target = m.top()
    if type(target) is list:  # the common case, inline: the slot is checked at the next push
        m.spent += _REF_BYTES
        target.append(value)
    else:
        _extend(m, target, [value])


def _appends(m: _Machine) -> None:
    items = m.pop_mark()
    target = m.top()
    if items:  # as C pickle: an empty MARK adds nothing, whatever is below it
        _extend(m, target, items)


def _empty_dict(m: _Machine) -> None:
    m.containers += 1
    m.spent += _DICT_BYTES
    m.push({})


def _pairs_of(m: _Machine, items: list[Any]) -> list[tuple[Any, Any]]:
    if len(items) % 2:
        raise m.fail("odd number of items for a dict")
    return list(zip(items[::2], items[1::2], strict=True))


def _dict(m: _Machine) -> None:
    m.containers += 1
    pairs = _pairs_of(m, m.pop_mark())
    m.charge(_DICT_BYTES + _PAIR_BYTES * len(pairs))
    m.push(dict(pairs))


def _assign(m: _Machine, target: Any, pairs: list[tuple[Any, Any]]) -> None:
    # C's do_setitems: PyObject_SetItem(target, key, value) for each pair, in order.
    m.charge(_PAIR_BYTES * len(pairs))
    kind = type(target)
    if isinstance(target, dict):
        target.update(pairs)
    elif isinstance(target, Opaque):
        target.dict_items.update(pairs)
    elif kind is list and all(type(k) in (int, bool) and -len(target) <= k < len(target) for k, _ in pairs):
        for key, value in pairs:  # C pickle's SETITEM is __setitem__: a list takes an index
            target[key] = value
    elif kind in _PLAIN_TYPES and kind is not bytearray and all(type(k) in _PLAIN_TYPES for k, _ in pairs):
        # No __setitem__ (a tuple, a str, ...), or a list given a key it refuses: C stops too.
        raise m.fail(f"SETITEM on a {kind.__name__}")
    else:  # a global (os.environ), a tensor, a storage, or a key that may be an index
        m.defect(f"SETITEM on {_describe(target)}: torch calls its __setitem__")


def _setitem(m: _Machine) -> None:
    value = m.pop()
    key = m.pop()
    _assign(m, m.top(), [(key, value)])


def _setitems(m: _Machine) -> None:
    pairs = _pairs_of(m, m.pop_mark())
    target = m.top()
    if pairs:  # as C pickle: an empty MARK assigns nothing, whatever is below it
        _assign(m, target, pairs)


def _empty_set(m: _Machine) -> None:
    m.containers += 1
    m.spent += _SET_BYTES
    m.push(set())


def _additems(m: _Machine) -> None:
    items = m.pop_mark()
    target = m.top()
    if not items:  # as C pickle: an empty MARK adds nothing, whatever is below it
        return
    m.charge(_SET_ITEM_BYTES * len(items))
    if type(target) is set:
        target.update(items)
    elif isinstance(target, Opaque):
        target.items.extend(items)
    elif type(target) in _PLAIN_TYPES:  # no add(): C stops too
        raise m.fail(f"ADDITEMS on a {type(target).__name__}")
    else:
        m.defect(f"ADDITEMS on {_describe(target)}: torch calls its add()")


def _frozenset(m: _Machine) -> None:
    m.immutable(frozenset(m.pop_mark()))


def _get(m: _Machine) -> None:
    m.push(m.memo_get(_memo_index(m, "GET")))


def _binget(m: _Machine) -> None:
    m.push(m.memo_get(m.read(1)[0]))


def _long_binget(m: _Machine) -> None:
    m.push(m.memo_get(_UNSIGNED_4.unpack(m.read(4))[0]))


def _put(m: _Machine) -> None:
    index = _memo_index(m, "PUT")
    m.memo_put(index, m.top())


def _binput(m: _Machine) -> None:
    m.memo_put(m.read(1)[0], m.top())


def _long_binput(m: _Machine) -> None:
    m.memo_put(_UNSIGNED_4.unpack(m.read(4))[0], m.top())


def _memoize(m: _Machine) -> None:
    m.memo_put(len(m.memo), m.top())


def _name_line(m: _Machine, encoding: str) -> str:
    # As C's load_global (UTF-8) and load_inst (ASCII): a non-empty line, decoded strictly.
    line = _text_line(m)
    try:
        return line.decode(encoding)
    except UnicodeDecodeError:
        raise m.fail(f"a global's name is not {encoding}") from None


def _global(m: _Machine) -> None:
    module = _name_line(m, "utf-8")
    name = _name_line(m, "utf-8")
    m.push(m.note_global(module, name))


def _stack_global(m: _Machine) -> None:
    name = m.pop()
    module = m.pop()
    if type(module) is str and type(name) is str:
        m.push(m.note_global(module, name))
    elif type(module) in _PLAIN_TYPES and type(name) in _PLAIN_TYPES:  # C pickle: "requires str"
        raise m.fail(f"STACK_GLOBAL with non-string names ({type(module).__name__}, {type(name).__name__})")
    else:
        # Names made by a call the reader did not run (a str method, getattr, ...): torch resolves
        # a global no one can name without running the pickle. Refused at the end; read on.
        m.defect(f"STACK_GLOBAL with names the reader cannot evaluate ({_describe(module)}, {_describe(name)})")
        m.push(Opaque(GlobalRef("<unknown>", "<unknown>"), (module, name)))


def _reduce(m: _Machine) -> None:
    args = m.pop()
    func = m.pop()
    m.push(m.call(func, args, None, "REDUCE"))


def _newobj(m: _Machine) -> None:
    args = m.pop()
    cls = m.pop()
    m.push(m.call(cls, args, None, "NEWOBJ"))


def _newobj_ex(m: _Machine) -> None:
    kwargs = m.pop()
    args = m.pop()
    cls = m.pop()
    m.push(m.call(cls, args, kwargs, "NEWOBJ_EX"))


def _inst(m: _Machine) -> None:
    start = m.pos - 1
    module = _name_line(m, "ascii")
    name = _name_line(m, "ascii")
    args = m.pop_mark()
    m.push(m.call(m.note_global(module, name), args, None, "INST", start))


def _obj(m: _Machine) -> None:
    items = m.pop_mark()
    if not items:
        raise m.fail("OBJ without a class")
    m.push(m.call(items[0], items[1:], None, "OBJ"))


def _build(m: _Machine) -> None:
    state = m.pop()
    target = m.top()
    kind = type(target)
    if isinstance(target, Opaque):
        # Stored as data, never applied: no __setstate__, no __dict__ update, no setattr.
        m.containers += 1  # a second BUILD nests the states in a tuple
        m.charge(_TUPLE_BYTES)
        target.state = state if target.state is None else (target.state, state)
        target.builds += 1
        return
    if kind is not OrderedDict and kind not in _PLAIN_TYPES:
        # A tensor, a storage, a global: torch calls its __setstate__ (Tensor.__setstate__ can
        # replace the data) or sets its attributes, and goes on; the machine does not follow.
        what = "a tensor" if kind.__name__ == "TensorInfo" else _describe(target)
        setter = "Tensor.__setstate__" if what == "a tensor" else "its __setstate__"
        m.defect(f"BUILD on {what}: torch calls {setter}, which can replace its data")
        return
    # No __setstate__ (a plain value, an OrderedDict): C's load_build takes (state, slotstate)
    # from a pair, updates the instance __dict__ with state and setattr()s slotstate.
    # from a pair, updates the instance __dict__ with state and setattr()s slotstate (which must
    # then be a dict, even an empty one: None is refused).
    slots: Any = _MARK  # no slot state
    if type(state) is tuple and len(state) == 2:
        state, slots = state
    if any(part is not _MARK and type(part) not in _PLAIN_TYPES for part in (state, slots)):
        m.defect(f"BUILD on a {kind.__name__} with a state the reader cannot evaluate")
        return
    if slots is not _MARK and not isinstance(slots, dict):
        raise m.fail(f"BUILD on a {kind.__name__}: the slot state is no dict")
    if slots is _MARK:
        slots = {}
    if state is None and not slots:
        return  # nothing to set: C pickle goes on, as the machine
    if kind is not OrderedDict or not isinstance(state, (dict, type(None))):
        # A plain value has no __dict__; a state that is no dict is refused: C stops too.
        raise m.fail(f"BUILD on a {kind.__name__}")
    # A torch state_dict carries its per-module versions as the attribute `_metadata`; torch.load
    # restores it, and so do we: into the instance dict of an OrderedDict this reader made
    # itself. Other names (special ones such as `__setstate__` that code copying or pickling
    # the result looks up on the instance, keys that are no identifiers) are not set: torch sets
    # them and goes on, so they are defects.
    attributes = {**(state or {}), **slots}
    if all(type(key) is str and not key.startswith("__") for key in attributes):
        vars(target).update(attributes)
    else:
        m.defect("BUILD would set special or non-string attributes on a dict")


def _persid(m: _Machine) -> None:
    line = m.readline()
    try:
        pid = line.decode("ascii")
    except UnicodeDecodeError:
        raise m.fail("PERSID argument is not ASCII") from None
    m.push(_persistent(m, pid))


def _binpersid(m: _Machine) -> None:
    m.push(_persistent(m, m.pop()))


def _persistent(m: _Machine, pid: Any) -> Any:
    m.containers += 1
    m.charge(_CALL_BYTES)
    if m.persistent_load is None:
        return PersistentRef(pid)
    try:
        return m.persistent_load(pid)
    except LimitError:
        raise
    except ReadError as error:
        # A persistent id the hook refuses (not a storage record, a missing record): torch's
        # persistent_load may still return something, or run what the id names, and read on.
        # So does the machine, with the raw id in its place; the file is refused at the end.
        m.defects.append(error)
        return PersistentRef(pid)


def _ext(m: _Machine) -> None:
    raise m.fail("extension codes (EXT1/EXT2/EXT4) are not supported: they name globals through copyreg")


_OPCODES: Final[dict[bytes, tuple[str, Callable[[_Machine], None]]]] = {
    b".": ("STOP", _stop),
    b"\x80": ("PROTO", _proto),
    b"\x95": ("FRAME", _frame),
    b"I": ("INT", _int),
    b"L": ("LONG", _long),
    b"J": ("BININT", _binint),
    b"K": ("BININT1", _binint1),
    b"M": ("BININT2", _binint2),
    b"\x8a": ("LONG1", _long1),
    b"\x8b": ("LONG4", _long4),
    b"F": ("FLOAT", _float),
    b"G": ("BINFLOAT", _binfloat),
    b"S": ("STRING", _string),
    b"T": ("BINSTRING", _binstring),
    b"U": ("SHORT_BINSTRING", _short_binstring),
    b"V": ("UNICODE", _unicode),
    b"X": ("BINUNICODE", _binunicode),
    b"\x8c": ("SHORT_BINUNICODE", _short_binunicode),
    b"\x8d": ("BINUNICODE8", _binunicode8),
    b"B": ("BINBYTES", _binbytes),
    b"C": ("SHORT_BINBYTES", _short_binbytes),
    b"\x8e": ("BINBYTES8", _binbytes8),
    b"\x96": ("BYTEARRAY8", _bytearray8),
    b"\x97": ("NEXT_BUFFER", _next_buffer),
    b"\x98": ("READONLY_BUFFER", _readonly_buffer),
    b"N": ("NONE", _none),
    b"\x88": ("NEWTRUE", _newtrue),
    b"\x89": ("NEWFALSE", _newfalse),
    b"(": ("MARK", _mark),
    b"0": ("POP", _pop),
    b"1": ("POP_MARK", _pop_mark),
    b"2": ("DUP", _dup),
    b")": ("EMPTY_TUPLE", _empty_tuple),
    b"t": ("TUPLE", _tuple),
    b"\x85": ("TUPLE1", _tuple_n(1)),
    b"\x86": ("TUPLE2", _tuple_n(2)),
    b"\x87": ("TUPLE3", _tuple_n(3)),
    b"]": ("EMPTY_LIST", _empty_list),
    b"l": ("LIST", _list),
    b"a": ("APPEND", _append),
    b"e": ("APPENDS", _appends),
    b"}": ("EMPTY_DICT", _empty_dict),
    b"d": ("DICT", _dict),
    b"s": ("SETITEM", _setitem),
    b"u": ("SETITEMS", _setitems),
    b"\x8f": ("EMPTY_SET", _empty_set),
    b"\x90": ("ADDITEMS", _additems),
    b"\x91": ("FROZENSET", _frozenset),
    b"g": ("GET", _get),
    b"h": ("BINGET", _binget),
    b"j": ("LONG_BINGET", _long_binget),
    b"p": ("PUT", _put),
    b"q": ("BINPUT", _binput),
    b"r": ("LONG_BINPUT", _long_binput),
    b"\x94": ("MEMOIZE", _memoize),
    b"c": ("GLOBAL", _global),
    b"\x93": ("STACK_GLOBAL", _stack_global),
    b"R": ("REDUCE", _reduce),
    b"\x81": ("NEWOBJ", _newobj),
    b"\x92": ("NEWOBJ_EX", _newobj_ex),
    b"i": ("INST", _inst),
    b"o": ("OBJ", _obj),
    b"b": ("BUILD", _build),
    b"P": ("PERSID", _persid),
    b"Q": ("BINPERSID", _binpersid),
    b"\x82": ("EXT1", _ext),
    b"\x83": ("EXT2", _ext),
    b"\x84": ("EXT4", _ext),
}
_DISPATCH: Final = {code[0]: handler for code, (_, handler) in _OPCODES.items()}
_OPNAMES: Final = {code[0]: name for code, (name, _) in _OPCODES.items()}


def unpickle(
    data: bytes | memoryview | mmap.mmap,
    *,
    source: str = "<pickle>",
    limits: Limits | None = None,
    interpreters: Mapping[tuple[str, str], Interpreter] | None = None,
    persistent_load: PersistentLoad | None = None,
    find_class: FindClass = find_class,
    start: int = 0,
    stop: int | None = None,
) -> Unpickled:
    """Read one pickle from ``data`` without importing or calling anything it names.

    ``source`` names the file in errors. ``interpreters`` maps ``(module, name)`` (as resolved
    by ``find_class``) to a pure function that builds a value from pickled arguments (used for
    torch's tensor rebuilds); everything else becomes an :class:`Opaque` record.
    ``persistent_load`` resolves persistent ids (torch's storage records); without it they
    become :class:`PersistentRef`. ``find_class`` says which global a written name stands for
    (the default is C pickle's own rule). Reading starts at offset ``start`` and never goes past
    ``stop`` (default: the end of ``data``); what follows ``STOP`` is left alone (see ``end``).

    Where C pickle (torch.load) goes on from a step the machine cannot follow (a BUILD on a
    rebuilt tensor, an APPEND to a global, a persistent id the hook refuses, ...), the machine
    keeps an inert stand-in and reads on, and the first such step is raised once the pickle is
    read: every global is seen. Only what stops C pickle too (truncation, an unknown opcode, a
    stack underflow, ...) or a limit stops reading early. A :class:`ReadError` raised carries,
    in ``globals``, every global named before reading stopped: an unpickler that stops there has
    already imported them.
    """
    limits = limits or Limits()
    stop = len(data) if stop is None else min(stop, len(data))
    if stop - start > limits.max_pickle_bytes:
        raise LimitError(source, "max_pickle_bytes", limits.max_pickle_bytes)
    machine = _Machine(
        data,
        source=source,
        limits=limits,
        interpreters=interpreters or {},
        persistent_load=persistent_load,
        find_class=find_class,
        stop=stop,
    )
    machine.pos = start
    try:
        try:
            value = machine.run()
        except ReadError:
            if not machine.defects:
                raise
            # The first problem in the file is reported: what made reading stop came later.
            raise machine.defects[0] from None
        if machine.defects:
            raise machine.defects[0]
        if machine.containers > limits.max_depth:
            _check_depth(value, limits.max_depth, source)
    except ReadError as error:
        error.globals = tuple(machine.globals)
        raise
    frame_end = machine.frame_end if machine.frame_end is not None and machine.frame_end > machine.pos else None
    return Unpickled(value, tuple(machine.globals), machine.pos, machine.containers, frame_end)


def _children(value: Any) -> Iterator[Any] | None:
    """What a value holds, or None for a leaf."""
    if isinstance(value, dict):
        pairs: Iterator[Any] = itertools.chain.from_iterable(value.items())
        if isinstance(value, OrderedDict) and vars(value):  # torch's _metadata
            return itertools.chain(pairs, vars(value).values())
        return pairs
    if isinstance(value, (list, tuple, set, frozenset)):
        return iter(value)
    if isinstance(value, Opaque):
        return iter((value.cls, value.args, value.kwargs, value.state, value.items, value.dict_items))
    if isinstance(value, PersistentRef):
        return iter((value.pid,))
    return None


# Types that never hold another value: the depth walk skips them without a look-up.
_LEAF_TYPES: Final = frozenset({str, bytes, int, float, bool, complex, type(None), GlobalRef})


def _check_depth(root: Any, limit: int, source: str) -> int:
    """The nesting depth of the structure; LimitError if it is deeper than ``limit``.

    Lists and dicts can be filled after they were nested, so their depth is only known at the
    end; every consumer that recurses (repr, ==, copy, json) needs it bounded. Iterative,
    linear in the structure (shared parts are measured once), safe on cycles.
    """
    children = _children(root)
    if children is None:
        return 0
    measured: dict[int, int] = {}
    active = {id(root)}
    stack: list[list[Any]] = [[root, children, 0]]
    while stack:
        frame = stack[-1]
        child = next(frame[1], _MARK)
        if type(child) in _LEAF_TYPES:  # most of a checkpoint: names, numbers, tensors
            continue
        if child is _MARK:
            depth = frame[2] + 1
            measured[id(frame[0])] = depth
            active.discard(id(frame[0]))
            stack.pop()
            if stack:
                stack[-1][2] = max(stack[-1][2], depth)
            continue
        key = id(child)
        if key in measured:
            frame[2] = max(frame[2], measured[key])
            continue
        grandchildren = _children(child)
        if grandchildren is None or key in active:  # a leaf, or a cycle back up the path
            continue
        if len(stack) >= limit:
            raise LimitError(source, "max_depth", limit)
        active.add(key)
        stack.append([child, grandchildren, 0])
    return measured[id(root)]
