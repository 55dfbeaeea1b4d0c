"""torch's ``.pt`` zip format, written without torch: byte for byte as ``torch.save`` 2.13 writes it.

``torch.save(obj, f)`` pickles ``obj`` (protocol 2, C pickle's opcodes and memo) with each tensor
as a call to ``torch._utils._rebuild_tensor_v2`` (``_v3`` for the dtypes that have no legacy
storage class) over a persistent id ``('storage', torch.<X>Storage, key, 'cpu', numel)``, then
hands the records to ``PyTorchStreamWriter`` (caffe2/serialize/inline_container.cc), which
writes them with miniz into a zip under the folder ``archive``: ``data.pkl``,
``.format_version``, ``.storage_alignment``, ``byteorder``, ``data/<key>`` per storage in
first-seen order, ``version`` and ``.data/serialization_id``. Every record is stored (method
0), its data starts on a 64-byte boundary (a ``FB`` extra field of ``Z`` bytes pads the local
header), its CRC-32 and sizes follow it in a data descriptor (none for an empty record), and
the archive ends with a ZIP64 end record and locator whatever its size. The serialization id is
torch's own: a hash of the record names and of the records' CRC-32s.

Here the same file is written from an object tree whose tensors are :class:`PtTensor` leaves over
:class:`PtStorage` records: the writer never sees a tensor's bytes, it asks ``write_storage``
to stream them into place and checks the count, so memory stays flat in the file's size. The
tree's other leaves are what a pickle of a DeepSpeed checkpoint holds: dicts (in insertion
order), lists, tuples, ``OrderedDict`` (with its ``_metadata``), strings, bytes, numbers,
``None``, globals (:class:`~ckptkeys._read._globalref.GlobalRef`) and the inert records of
DeepSpeed's objects (:class:`~ckptkeys._read._pickle.Opaque`), re-emitted with the opcode that
built them. What protocol 2 cannot say as the source said it is refused, naming where it is.
"""

from __future__ import annotations

import _compat_pickle  # the Python 3 -> 2 renaming C pickle applies at protocols 0-2 (fix_imports)
import math
import struct
import zlib
from collections import OrderedDict
from dataclasses import dataclass

from .._read._globalref import GlobalRef
from .._read._pickle import Opaque
from .._read._torch import DTYPE_ITEMSIZE, STORAGE_DTYPES, TensorInfo

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import Any, BinaryIO, Final

    from .._read._torch import StorageInfo

__all__ = ["DTYPES", "PtStorage", "PtTensor", "from_read", "pt_size", "write_pt"]


@dataclass(frozen=True, slots=True, eq=False)
class PtStorage:
    """One storage record (``data/<key>``) of the file: ``numel`` elements of ``dtype``.

    Storages are told apart by identity: two tensors over one ``PtStorage`` share one storage
    when loaded. ``source`` is handed back to ``write_storage``; the writer never looks inside.
    """

    dtype: str
    """torch's dtype name without ``torch.``: ``"float32"``, ``"bfloat16"``, ``"int64"``, ``"bool"``."""
    numel: int
    source: Any
    location: str = "cpu"
    """The device torch.save records for it: always ``"cpu"``. Its identity is what counts: torch
    writes its own interned ``"cpu"``, one memo entry with every other reference to that object
    (a dict key ``"cpu"`` written as a literal); :func:`from_read` passes the source pickle's own
    object, so that what the source shared stays shared."""

    @property
    def nbytes(self) -> int:
        return self.numel * DTYPE_ITEMSIZE[self.dtype]


@dataclass(frozen=True, slots=True)
class PtTensor:
    """A tensor of the file: a view of ``shape``, ``stride`` and ``offset`` (in elements) of a storage."""

    storage: PtStorage
    shape: tuple[int, ...]
    stride: tuple[int, ...] | None = None
    """``None``: contiguous (row-major) strides."""
    offset: int = 0
    requires_grad: bool = False
    state: dict[str, Any] | None = None
    """Python attributes of the tensor (its ``__dict__``, such as ZeRO-3's ``ds_id``): a tensor
    with any is pickled as torch pickles one, through ``torch._tensor._rebuild_from_type_v2``."""


def from_read(value: Any, source: Callable[[StorageInfo, str], Any]) -> Any:
    """A tree :func:`ckptkeys.read` returned, with :class:`PtTensor` leaves: what writing it back takes.

    Each storage record becomes one :class:`PtStorage` (shared by the tensors over it) whose
    source is ``source(storage_info, dtype)``; containers and ``Opaque`` records are rebuilt
    around the converted leaves, keeping what the pickle shared shared; other values are the
    same objects. Written with :func:`write_pt`, a file ``torch.save`` wrote comes out equal byte
    for byte, unless it holds a ``torch.Size`` (``read()`` gives a tuple, written as one: a
    model-states file, which a universal tag copies whole). ``ValueError`` for a tensor a plain
    rebuild cannot give back (meta, a parameter, a subclass, altered values).
    """
    storages: dict[tuple[Any, str], PtStorage] = {}
    made: dict[int, Any] = {}
    path: list[str] = []

    def refuse(reason: str) -> ValueError:
        return ValueError(f"{''.join(path) or 'the object'}: {reason}")

    def tensor(info: TensorInfo) -> PtTensor:
        if info.storage is None:
            raise refuse("a tensor on the meta device has no bytes to write")
        if info.is_parameter or info.subclass is not None or info.altered_by is not None:
            what = info.altered_by or ("a Parameter" if info.is_parameter else f"a {info.subclass}")
            raise refuse(f"the tensor is not a plain one ({what}): it is not written back as one")
        record = info.storage
        key = (record.pickled_key, record.key)
        storage = storages.get(key)
        if storage is None:
            numel = record.nbytes // DTYPE_ITEMSIZE[info.dtype]
            # A source saved on a GPU ("cuda:0") is written from the CPU, as torch.save after
            # torch.load(map_location="cpu") writes it; a "cpu" keeps the source's own object.
            location = record.location if record.location == "cpu" else "cpu"
            storage = PtStorage(info.dtype, numel, source(record, info.dtype), location)
            storages[key] = storage
        elif storage.dtype != info.dtype:  # torch.save refuses two dtypes over one storage too
            raise refuse(f"storage {record.key} is viewed as {storage.dtype} and {info.dtype}")
        attributes = None if info.attributes is None else convert(info.attributes)
        return PtTensor(storage, info.shape, info.stride, info.storage_offset, info.requires_grad, attributes)

    def convert(value: Any) -> Any:
        kind = type(value)
        if kind in _ATOMS:
            return value
        known = made.get(id(value))
        if known is not None:
            return known
        result: Any
        if kind is TensorInfo:
            result = tensor(value)
        elif kind is dict or kind is OrderedDict:
            result = made[id(value)] = kind()
            for key, item in value.items():
                path.append(f"[{key!r}]")
                result[key] = convert(item)
                path.pop()
            if kind is OrderedDict:
                vars(result).update({name: convert(item) for name, item in vars(value).items()})
            return result
        elif kind is list:
            result = made[id(value)] = []
            for index, item in enumerate(value):
                path.append(f"[{index}]")
                result.append(convert(item))
                path.pop()
            return result
        elif kind is tuple:
            parts = []
            for index, item in enumerate(value):
                path.append(f"[{index}]")
                parts.append(convert(item))
                path.pop()
            result = tuple(parts)
        elif kind is Opaque:
            path.append(f"<{value.qualname}>")
            result = made[id(value)] = Opaque(value.cls, opcode=value.opcode, builds=value.builds)
            result.args = convert(value.args)
            result.kwargs = convert(value.kwargs)
            result.state = convert(value.state)
            result.items = [convert(item) for item in value.items]
            result.dict_items = {key: convert(item) for key, item in value.dict_items.items()}
            path.pop()
            return result
        else:  # a global, a set, bytes ...: written as they are (or refused by the writer)
            return value
        made[id(value)] = result
        return result

    return convert(value)


_ATOMS: Final = frozenset({type(None), bool, int, float, str, bytes, GlobalRef})


# -- the pickle -----------------------------------------------------------------------------

# The dtypes torch.save pickles with a legacy typed-storage class and _rebuild_tensor_v2
# (torch.storage._dtype_to_storage_type_map); the quantized ones take another rebuild.
_LEGACY_STORAGE: Final = {
    dtype: name
    for name, dtype in STORAGE_DTYPES.items()
    if name != "UntypedStorage" and not dtype.startswith(("qint", "quint"))
}
# torch.storage._new_dtypes(): an UntypedStorage (numel in bytes) and _rebuild_tensor_v3 with the dtype.
_V3_DTYPES: Final = frozenset(
    {
        "uint16",
        "uint32",
        "uint64",
        "complex32",
        "float8_e4m3fn",
        "float8_e4m3fnuz",
        "float8_e5m2",
        "float8_e5m2fnuz",
        "float8_e8m0fnu",
        "float4_e2m1fn_x2",
    }
)
DTYPES: Final = frozenset(_LEGACY_STORAGE) | _V3_DTYPES
"""The dtypes a :class:`PtStorage` may have: those torch.save pickles as plain tensors."""
# torch: "Only Tensors of floating point and complex dtype can require gradients"; and
# _rebuild_tensor_v3 fails on one (float8, complex32: "a leaf Variable that requires grad is
# being used in an in-place operation"), so only these load back requiring them.
_GRAD_DTYPES: Final = frozenset({"float16", "bfloat16", "float32", "float64", "complex64", "complex128"})

_BATCHSIZE: Final = 1000  # C pickle's BATCHSIZE: APPENDS/SETITEMS carry at most this many items
_PROTOCOL: Final = 2  # torch.serialization.DEFAULT_PROTOCOL

# Strings torch's code passes as literals, one object each (C pickle memoizes by identity): the
# second persistent id reuses the first's 'storage' through the memo (and 'cpu': PtStorage.location).
_STORAGE: Final = "storage"
_LATIN1: Final = "latin1"  # C pickle's protocol-2 bytes: _codecs.encode(text, 'latin1')

_REBUILD_V2: Final = GlobalRef("torch._utils", "_rebuild_tensor_v2")
_REBUILD_V3: Final = GlobalRef("torch._utils", "_rebuild_tensor_v3")
_REBUILD_FROM_TYPE: Final = GlobalRef("torch._tensor", "_rebuild_from_type_v2")
_TENSOR: Final = GlobalRef("torch", "Tensor")  # torch.Tensor.__module__ is "torch"
_ORDERED_DICT: Final = GlobalRef("collections", "OrderedDict")
_UNTYPED_STORAGE: Final = GlobalRef("torch.storage", "UntypedStorage")
_CODECS_ENCODE: Final = GlobalRef("_codecs", "encode")
_BYTES: Final = GlobalRef("builtins", "bytes")

_END: Final[Any] = object()  # an iterator's end, as next(items, _END) says it
_DOUBLE_BE: Final = struct.Struct(">d")
_LE4: Final = struct.Struct("<I")


class _Refused(ValueError):
    """Something of the tree protocol 2 cannot say as it was said: named by its path in the tree."""


class _Pickler:
    """C pickle's ``Pickler(protocol=2)`` with torch's ``persistent_id``, over the inert tree."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.memo: dict[Any, int] = {}
        self.alive: list[Any] = []  # what the memo names by id(), held so that no other object takes its id
        self.storages: dict[int, tuple[str, PtStorage]] = {}
        self.path: list[str] = []

    # -- memo ----------------------------------------------------------------------------------

    def put(self, obj: Any) -> None:
        """Memoize ``obj`` (by identity, as C pickle: kept alive so that its id stays its own)."""
        self.alive.append(obj)
        self.put_key(id(obj))

    def put_key(self, key: Any) -> None:
        index = len(self.memo)
        self.memo[key] = index
        self.out += b"q" + bytes((index,)) if index < 256 else b"r" + _LE4.pack(index)

    def get(self, index: int) -> None:
        self.out += b"h" + bytes((index,)) if index < 256 else b"j" + _LE4.pack(index)

    def refuse(self, reason: str) -> _Refused:
        return _Refused(f"{''.join(self.path) or 'the object'}: {reason}")

    # -- values --------------------------------------------------------------------------------

    def save(self, obj: Any) -> None:
        kind = type(obj)
        if obj is None:
            self.out += b"N"
        elif kind is bool:
            self.out += b"\x88" if obj else b"\x89"
        elif kind is int:
            self.save_int(obj)
        elif kind is float:
            self.out += b"G" + _DOUBLE_BE.pack(obj)
        elif kind is GlobalRef:
            self.save_global(obj)
        else:
            index = self.memo.get(id(obj))
            if index is not None:
                self.get(index)
            elif kind is str:
                self.save_str(obj)
            elif kind is bytes:
                self.save_bytes(obj)
            elif kind is dict:
                self.save_dict(obj)
            elif kind is list:
                self.save_list(obj)
            elif kind is tuple:
                self.save_tuple(obj)
            elif kind is OrderedDict:
                self.save_ordered_dict(obj)
            elif kind is PtTensor:
                self.save_tensor(obj)
            elif kind is Opaque:
                self.save_opaque(obj)
            else:
                raise self.refuse(f"a {kind.__name__} has no place in a file torch.save writes here")

    def save_int(self, value: int) -> None:
        if 0 <= value <= 0xFF:
            self.out += b"K" + bytes((value,))
        elif 0 <= value <= 0xFFFF:
            self.out += b"M" + value.to_bytes(2, "little")
        elif -(1 << 31) <= value < 1 << 31:
            self.out += b"J" + value.to_bytes(4, "little", signed=True)
        else:  # pickle.encode_long: the shortest two's complement, little-endian
            data = value.to_bytes((value.bit_length() >> 3) + 1, "little", signed=True)
            if value < 0 and len(data) > 1 and data[-1] == 0xFF and data[-2] & 0x80:
                data = data[:-1]
            if len(data) < 256:
                self.out += b"\x8a" + bytes((len(data),)) + data
            else:
                self.out += b"\x8b" + _LE4.pack(len(data)) + data

    def save_str(self, text: str) -> None:
        data = text.encode("utf-8", "surrogatepass")
        if len(data) > 0xFFFFFFFF:
            raise self.refuse("a string of 4 GiB or more has no protocol-2 opcode")
        self.out += b"X" + _LE4.pack(len(data)) + data
        self.put(text)

    def save_bytes(self, data: bytes) -> None:
        # Protocol 2 has no bytes opcode: C pickle reduces them to bytes() or _codecs.encode.
        if not data:
            self.reduce(_BYTES, (), data)
            return
        text = data.decode("latin-1")
        self.reduce(_CODECS_ENCODE, (text, _LATIN1), data)

    def save_global(self, ref: GlobalRef) -> None:
        key = ("global", ref.module, ref.name)
        index = self.memo.get(key)
        if index is not None:
            self.get(index)
            return
        module, name = ref.module, ref.name
        if "." in name:
            raise self.refuse(f"the global {ref.qualname} is no top-level name: protocol 2 cannot name it")
        # C pickle's fix_imports at protocols 0-2: Python 3 names written as Python 2's.
        renamed = _compat_pickle.REVERSE_NAME_MAPPING.get((module, name))
        if renamed is not None:
            module, name = renamed
        else:
            module = _compat_pickle.REVERSE_IMPORT_MAPPING.get(module, module)
        try:
            line = f"{module}\n{name}\n".encode("ascii")
        except UnicodeEncodeError:
            raise self.refuse(f"the global {ref.qualname} is not ASCII: protocol 2 cannot name it") from None
        if "\n" in module or "\n" in name:
            raise self.refuse(f"the global {ref.qualname!r} has a line break in its name")
        self.out += b"c" + line
        self.put_key(key)

    def save_tuple(self, items: tuple[Any, ...]) -> None:
        if not items:
            self.out += b")"
            return
        small = len(items) <= 3
        if not small:
            self.out += b"("
        self.save_items(items)
        index = self.memo.get(id(items))
        if index is not None:  # a recursive tuple: what was pushed goes, the memo gives it back
            self.out += b"0" * len(items) if small else b"1"
            self.get(index)
            return
        self.out += b"\x85\x86\x87"[len(items) - 1 : len(items)] if small else b"t"
        self.put(items)

    def save_items(self, items: Iterable[Any]) -> None:
        for i, item in enumerate(items):
            self.path.append(f"[{i}]")
            self.save(item)
            self.path.pop()

    def save_list(self, items: list[Any]) -> None:
        self.out += b"]"
        self.put(items)
        if len(items) == 1:
            self.path.append("[0]")
            self.save(items[0])
            self.path.pop()
            self.out += b"a"
            return
        # batch_list_exact: batches of BATCHSIZE, none empty
        for start in range(0, len(items), _BATCHSIZE):
            self.out += b"("
            for i in range(start, min(start + _BATCHSIZE, len(items))):
                self.path.append(f"[{i}]")
                self.save(items[i])
                self.path.pop()
            self.out += b"e"

    def save_dict(self, mapping: dict[Any, Any]) -> None:
        self.out += b"}"
        self.put(mapping)
        if not mapping:
            return
        if len(mapping) == 1:
            self.save_pairs(mapping.items())
            self.out += b"s"
            return
        # batch_dict_exact: a batch after every full one, even when nothing is left for it
        pairs = iter(mapping.items())
        while True:
            self.out += b"("
            count = self.save_pairs(pairs, _BATCHSIZE)
            self.out += b"u"
            if count < _BATCHSIZE:
                return

    def save_pairs(self, pairs: Iterable[tuple[Any, Any]], limit: int | None = None) -> int:
        count = 0
        for key, value in pairs:
            self.path.append(f"[{key!r}]")
            self.save(key)
            self.save(value)
            self.path.pop()
            count += 1
            if count == limit:
                break
        return count

    def batch_appends(self, items: Iterator[Any]) -> None:
        """C pickle's batch_list over an iterator (a reduce's list items)."""
        index = 0
        while True:
            first = next(items, _END)
            if first is _END:
                return
            second = next(items, _END)
            self.path.append(f"[{index}]")
            if second is _END:
                self.save(first)
                self.path.pop()
                self.out += b"a"
                return
            self.out += b"("
            self.save(first)
            self.path.pop()
            count = 1
            item = second
            while item is not _END:
                index += 1
                self.path.append(f"[{index}]")
                self.save(item)
                self.path.pop()
                count += 1
                if count == _BATCHSIZE:
                    break
                item = next(items, _END)
            self.out += b"e"
            if count < _BATCHSIZE:
                return
            index += 1

    def batch_setitems(self, pairs: Iterator[tuple[Any, Any]]) -> None:
        """C pickle's batch_dict over an iterator (a reduce's dict items)."""
        while True:
            first = next(pairs, _END)
            if first is _END:
                return
            second = next(pairs, _END)
            if second is _END:
                self.save_pairs((first,))
                self.out += b"s"
                return
            self.out += b"("
            count = self.save_pairs((first, second))
            count += self.save_pairs(pairs, _BATCHSIZE - count)
            self.out += b"u"
            if count < _BATCHSIZE:
                return

    def reduce(self, func: GlobalRef, args: tuple[Any, ...], obj: Any, opcode: bytes = b"R") -> None:
        """C pickle's save_reduce: the callable, its arguments, the call, the memo."""
        self.save(func)
        self.save(args)
        self.out += opcode
        index = self.memo.get(id(obj))
        if index is not None:  # made while its arguments were written: the memo gives it back
            self.out += b"0"
            self.get(index)
        else:
            self.put(obj)

    def save_ordered_dict(self, mapping: OrderedDict[Any, Any]) -> None:
        # OrderedDict.__reduce__: (OrderedDict, (), state, None, iter(items)); state is the
        # instance dict (torch's _metadata) when it holds anything.
        self.reduce(_ORDERED_DICT, (), mapping)
        self.batch_setitems(iter(mapping.items()))
        state = vars(mapping)
        if state:
            self.path.append(".__dict__")
            self.save(state)
            self.path.pop()
            self.out += b"b"

    def save_opaque(self, record: Opaque) -> None:
        what = record.qualname
        if not isinstance(record.cls, GlobalRef):
            raise self.refuse(f"{what} was made by a call of no global: it cannot be written faithfully")
        if record.opcode not in ("REDUCE", "NEWOBJ"):
            made = f"by {record.opcode}" if record.opcode else "by no pickle opcode"
            raise self.refuse(f"{what} was made {made}: protocol 2 as torch.save writes it has no such call")
        if record.kwargs is not None:
            raise self.refuse(f"{what} takes keyword arguments: protocol 2 cannot pass them")
        if record.builds > 1:
            raise self.refuse(f"{what} had BUILD applied {record.builds} times: its states cannot be told apart")
        self.path.append(f"<{what}>")
        self.reduce(record.cls, record.args, record, b"R" if record.opcode == "REDUCE" else b"\x81")
        self.batch_appends(iter(record.items))
        self.batch_setitems(iter(record.dict_items.items()))
        if record.builds:
            self.save(record.state)
            self.out += b"b"
        self.path.pop()

    # -- tensors -------------------------------------------------------------------------------

    def save_tensor(self, tensor: PtTensor) -> None:
        storage = tensor.storage
        if type(storage) is not PtStorage:
            raise self.refuse(f"the tensor's storage is a {type(storage).__name__}, not a PtStorage")
        dtype = storage.dtype
        if dtype not in DTYPES:
            raise self.refuse(f"dtype {dtype!r} is not one torch.save writes with _rebuild_tensor_v2/v3")
        if storage.location != "cpu":
            raise self.refuse(f"the storage's location is {storage.location!r}: torch.save here records 'cpu'")
        if type(storage.numel) is not int or storage.numel < 0:
            raise self.refuse(f"the storage's numel {storage.numel!r} is no count")
        shape = _ints(tensor.shape, "shape", self)
        stride = _contiguous(shape) if tensor.stride is None else _ints(tensor.stride, "stride", self)
        if len(stride) != len(shape):
            raise self.refuse(f"stride {stride} does not match shape {shape}")
        offset = tensor.offset
        if type(offset) is not int or offset < 0:
            raise self.refuse(f"storage offset {offset!r} is no count")
        if math.prod(shape):
            end = offset + sum((size - 1) * step for size, step in zip(shape, stride)) + 1
            if end > storage.numel:
                raise self.refuse(
                    f"the view (shape {shape}, stride {stride}, offset {offset}) reaches element {end - 1} "
                    f"of a storage of {storage.numel}"
                )
        if type(tensor.requires_grad) is not bool:
            raise self.refuse(f"requires_grad {tensor.requires_grad!r} is no bool")
        if tensor.requires_grad and dtype not in _GRAD_DTYPES:
            raise self.refuse(f"a {dtype} tensor that requires gradients does not load back (torch.load)")
        state = tensor.state
        if state is not None and type(state) is not dict:
            raise self.refuse(f"the tensor's state is a {type(state).__name__}, not a dict of attributes")
        v3 = dtype in _V3_DTYPES
        rebuild = _REBUILD_V3 if v3 else _REBUILD_V2
        if state:  # Tensor.__reduce_ex__: (_rebuild_from_type_v2, (func, Tensor, args, state))
            self.save(_REBUILD_FROM_TYPE)
            self.out += b"("
        self.save(rebuild)
        if state:
            self.save(_TENSOR)
        # The arguments tuple (memoized as C pickle does; the tuples are new objects each time).
        self.out += b"("
        self.persistent_id(storage, v3)
        self.save_int(offset)
        for part in (shape, stride):
            self.save_tuple(part)
        self.out += b"\x88" if tensor.requires_grad else b"\x89"
        hooks: OrderedDict[Any, Any] = OrderedDict()  # backward_hooks: an empty OrderedDict
        self.save_ordered_dict(hooks)
        if v3:
            self.save(GlobalRef("torch", dtype))
        self.out += b"t"
        self.put(object())  # the arguments tuple, never shared
        if state:
            self.path.append(".__dict__")
            self.save(state)
            self.path.pop()
            self.out += b"t"
            self.put(object())
        self.out += b"R"
        self.put(tensor)

    def persistent_id(self, storage: PtStorage, v3: bool) -> None:
        known = self.storages.get(id(storage))
        if known is None:
            known = (str(len(self.storages)), storage)
            self.storages[id(storage)] = known
        key = known[0]
        self.out += b"("
        self.save(_STORAGE)
        self.save(_UNTYPED_STORAGE if v3 else GlobalRef("torch", _LEGACY_STORAGE[storage.dtype]))
        self.save(key)
        self.save(storage.location)
        self.save_int(storage.nbytes if v3 else storage.numel)
        self.out += b"t"
        pid = object()
        self.put(pid)
        self.out += b"Q"



def _ints(values: Any, what: str, pickler: _Pickler) -> tuple[int, ...]:
    if not isinstance(values, tuple) or any(type(v) is not int or v < 0 for v in values):
        raise pickler.refuse(f"{what} {values!r} is no tuple of counts")
    return tuple(list(values))  # a new tuple, as torch's tuple(self.size()) and self.stride() are


def _contiguous(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides = []
    step = 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def _pickle(obj: Any, archive: str) -> tuple[bytes, list[tuple[str, PtStorage]]]:
    pickler = _Pickler()
    pickler.out += b"\x80\x02"
    try:
        pickler.save(obj)
    except _Refused as error:
        raise ValueError(f"{archive}: {error}") from None
    except RecursionError:
        raise ValueError(f"{archive}: the object nests too deep to pickle") from None
    pickler.out += b"."
    return bytes(pickler.out), list(pickler.storages.values())


# -- the zip --------------------------------------------------------------------------------

_ALIGNMENT: Final = 64  # torch.serialization._get_storage_alignment(), kFieldAlignment
_VERSION: Final = b"3\n"  # kMinProducedFileFormatVersion, as writeEndOfFile writes it
_U32_MAX: Final = 0xFFFFFFFF
_LOCAL: Final = struct.Struct("<4sHHHHHIIIHH")
_CENTRAL: Final = struct.Struct("<4sHHHHHHIIIHHHHHII")
_DESCRIPTOR32: Final = struct.Struct("<4sIII")
_DESCRIPTOR64: Final = struct.Struct("<4sIQQ")
_ZIP64_END: Final = struct.Struct("<4sQHHIIQQQQ")
_ZIP64_LOCATOR: Final = struct.Struct("<4sIQI")
_END_RECORD: Final = struct.Struct("<4sHHHHIIH")
_FLAGS_DESCRIPTOR: Final = 0x0808  # bit 3: sizes and CRC-32 in a data descriptor; bit 11: UTF-8 names
_FLAGS_EMPTY: Final = 0x0800  # miniz writes no descriptor for an empty record
_MASK64: Final = (1 << 64) - 1


@dataclass(slots=True)
class _Record:
    name: bytes
    size: int
    data: bytes | None  # None: a storage, streamed by write_storage
    storage: PtStorage | None = None
    offset: int = 0
    crc: int = 0


def _records(pkl: bytes, storages: list[tuple[str, PtStorage]]) -> list[_Record]:
    records = [
        _Record(b"data.pkl", len(pkl), pkl),
        _Record(b".format_version", 1, b"1"),
        _Record(b".storage_alignment", 2, b"64"),
        _Record(b"byteorder", 6, b"little"),
    ]
    records += [_Record(f"data/{key}".encode(), storage.nbytes, None, storage) for key, storage in storages]
    records.append(_Record(b"version", len(_VERSION), _VERSION))
    return records


def _local_extra(offset: int, size: int) -> bytes:
    """miniz's ZIP64 extra field of a local header (its compressed size not known yet: 0)."""
    fields = b""
    if size >= _U32_MAX:
        fields += struct.pack("<QQ", size, 0)
    if offset >= _U32_MAX:
        fields += struct.pack("<Q", offset)
    return struct.pack("<HH", 1, len(fields)) + fields if fields else b""


def _padding(offset: int, name_size: int, extra_size: int) -> bytes:
    """getPadding: the ``FB`` field that makes the record's data start on a 64-byte boundary."""
    start = offset + _LOCAL.size + name_size + extra_size + 4
    pad = -start % _ALIGNMENT
    return b"FB" + struct.pack("<H", pad) + b"Z" * pad


def _header(record: _Record, folder: bytes) -> bytes:
    name = folder + record.name
    extra = _local_extra(record.offset, record.size)
    extra += _padding(record.offset, len(name), len(extra))
    flags = _FLAGS_DESCRIPTOR if record.size else _FLAGS_EMPTY
    return _LOCAL.pack(b"PK\x03\x04", 0, flags, 0, 0, 0, 0, 0, 0, len(name), len(extra)) + name + extra


def _descriptor(record: _Record) -> bytes:
    if not record.size:
        return b""
    if record.size >= _U32_MAX or record.offset >= _U32_MAX:
        return _DESCRIPTOR64.pack(b"PK\x07\x08", record.crc, record.size, record.size)
    return _DESCRIPTOR32.pack(b"PK\x07\x08", record.crc, record.size, record.size)


def _central(record: _Record, folder: bytes) -> bytes:
    name = folder + record.name
    fields = b""
    if record.size >= _U32_MAX:
        fields += struct.pack("<QQ", record.size, record.size)
    if record.offset >= _U32_MAX:
        fields += struct.pack("<Q", record.offset)
    extra = struct.pack("<HH", 1, len(fields)) + fields if fields else b""
    size32 = min(record.size, _U32_MAX)
    return (
        _CENTRAL.pack(
            b"PK\x01\x02",
            0,
            0,
            _FLAGS_DESCRIPTOR if record.size else _FLAGS_EMPTY,
            0,
            0,
            0,
            record.crc,
            size32,
            size32,
            len(name),
            len(extra),
            0,
            0,
            0,
            0,
            min(record.offset, _U32_MAX),
        )
        + name
        + extra
    )


def _end(entries: int, central_offset: int, central_size: int) -> bytes:
    zip64_end_offset = central_offset + central_size
    return (
        _ZIP64_END.pack(b"PK\x06\x06", 44, 0x031E, 45, 0, 0, entries, entries, central_size, central_offset)
        + _ZIP64_LOCATOR.pack(b"PK\x06\x07", 0, zip64_end_offset, 1)
        + _END_RECORD.pack(
            b"PK\x05\x06",
            0,
            0,
            min(entries, 0xFFFF),
            min(entries, 0xFFFF),
            min(central_size, _U32_MAX),
            min(central_offset, _U32_MAX),
            0,
        )
    )


def _hash_combine(seed: int, value: int) -> int:
    """c10::hash_combine on 64-bit size_t."""
    return (seed ^ ((value + 0x9E3779B9 + (seed << 6) + (seed >> 2)) & _MASK64)) & _MASK64


def _serialization_id(records: list[_Record]) -> bytes:
    """writeSerializationId: a hash of the record names, then the CRC-32s combined in write order."""
    crcs = 0
    for record in records:
        if record.size:  # combined as the data descriptors go by: an empty record has none
            crcs = _hash_combine(crcs, record.crc)
    names = _names_hash([record.name for record in records])
    return f"{names:020d}{crcs:020d}".encode()


def _names_hash(names: list[bytes]) -> int:
    """The combined hash of the record names, over ``files_written_``, a libstdc++ unordered_set."""
    combined = 0
    for name in _unordered_set_order(names):
        combined = _hash_combine(combined, _hash_bytes(name))
    return combined


_MUL: Final = 0xC6A4A7935BD1E995
_STRING_SEED: Final = 0xC70F6907  # std::hash<std::string> in libstdc++


def _shift_mix(value: int) -> int:
    return value ^ (value >> 47)


def _hash_bytes(data: bytes) -> int:
    """libstdc++'s std::_Hash_bytes (64-bit), which std::hash<std::string> is."""
    size = len(data)
    value = (_STRING_SEED ^ (size * _MUL)) & _MASK64
    whole = size & ~7
    for start in range(0, whole, 8):
        word = (_shift_mix((int.from_bytes(data[start : start + 8], "little") * _MUL) & _MASK64) * _MUL) & _MASK64
        value = ((value ^ word) * _MUL) & _MASK64
    if size & 7:
        value = ((value ^ int.from_bytes(data[whole:], "little")) * _MUL) & _MASK64
    value = (_shift_mix(value) * _MUL) & _MASK64
    return _shift_mix(value)


# libstdc++'s _Prime_rehash_policy: its small table, then its list of bucket counts.
_FAST_BUCKETS: Final = (2, 2, 2, 3, 5, 5, 7, 7, 11, 11, 11, 11, 13, 13)
_PRIME_BUCKETS: Final = (
    17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 103, 109, 113, 127, 137, 139, 149,
    157, 167, 179, 193, 199, 211, 227, 241, 257, 277, 293, 313, 337, 359, 383, 409, 439, 467, 503, 541, 577, 619,
    661, 709, 761, 823, 887, 953, 1031, 1109, 1193, 1289, 1381, 1493, 1613, 1741, 1879, 2029, 2179, 2357, 2549,
    2753, 2971, 3209, 3469, 3739, 4027, 4349, 4703, 5087, 5503, 5953, 6427, 6949, 7517, 8123, 8783, 9497, 10273,
    11113, 12011, 12983, 14033, 15173, 16411, 17749, 19183, 20753, 22447, 24281, 26267, 28411, 30727, 33223,
    35933, 38873, 42043, 45481, 49201, 53201, 57557, 62233, 67307, 72817, 78779, 85229, 92203, 99733, 107897,
    116731, 126271, 136607, 147793, 159871, 172933, 187091, 202409, 218971, 236897, 256279, 277261, 299951,
    324503, 351061, 379787, 410857, 444487, 480881, 520241, 562841, 608903, 658753, 712697, 771049, 834181,
    902483, 976369,
)


def _next_buckets(wanted: int) -> int:
    if wanted < len(_FAST_BUCKETS):
        return _FAST_BUCKETS[wanted]
    for count in _PRIME_BUCKETS:
        if count >= wanted:
            return count
    # Past the list above (a million records): the next prime, where libstdc++ may pick another
    # from its own list. The id may then differ from torch's; nothing reads it back but a human.
    candidate = wanted | 1
    while any(candidate % d == 0 for d in range(3, math.isqrt(candidate) + 1, 2)):
        candidate += 2
    return candidate


def _unordered_set_order(names: list[bytes]) -> list[bytes]:
    """The order a ``std::unordered_set<std::string>`` iterates ``names`` inserted in this order.

    libstdc++'s hashtable: one singly linked list, each bucket pointing at the node before its
    first; a new node goes first in its bucket (or first in the list if its bucket is empty), and
    a rehash relinks the nodes in list order (_M_insert_bucket_begin, _M_rehash_aux).
    """
    codes = [_hash_bytes(name) for name in names]
    after: dict[int, int | None] = {-1: None}  # node -> the next node; -1 is _M_before_begin
    buckets: dict[int, int] = {}  # bucket -> the node before its first
    count = 1
    next_resize = 0

    def first_node() -> int | None:
        return after[-1]

    for node, code in enumerate(codes):
        if node + 1 > next_resize:  # _M_need_rehash
            least = max(node + 1, 0 if next_resize else 11)
            if least >= count:
                count = _next_buckets(max(least + 1, count * 2))
                next_resize = count
                # _M_rehash_aux: relink in list order
                walk = first_node()
                after[-1] = None
                buckets = {}
                head_bucket = 0
                while walk is not None:
                    following = after[walk]
                    bucket = codes[walk] % count
                    if bucket not in buckets:
                        after[walk] = after[-1]
                        after[-1] = walk
                        buckets[bucket] = -1
                        if after[walk] is not None:
                            buckets[head_bucket] = walk
                        head_bucket = bucket
                    else:
                        before = buckets[bucket]
                        after[walk] = after[before]
                        after[before] = walk
                    walk = following
            else:
                next_resize = count
        bucket = code % count
        if bucket in buckets:
            before = buckets[bucket]
            after[node] = after[before]
            after[before] = node
        else:
            after[node] = after[-1]
            after[-1] = node
            following = after[node]
            if following is not None:
                buckets[codes[following] % count] = node
            buckets[bucket] = -1
    order = []
    walk = first_node()
    while walk is not None:
        order.append(names[walk])
        walk = after[walk]
    return order


def _layout(records: list[_Record], folder: bytes) -> int:
    """Set every record's offset; return where the last one ends (before the serialization id)."""
    cursor = 0
    for record in records:
        record.offset = cursor
        cursor += len(_header(record, folder)) + record.size + len(_descriptor(record))
    return cursor


class _Crc:
    """The stream ``write_storage`` writes a storage into: counted and CRC-32'd on the way.

    It has no file descriptor (``fileno`` raises ``EBADF``), so a copy that would go around it in
    the kernel (``copy_file_range``) goes through it instead.
    """

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.count = 0
        self.crc = 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        written = self.out.write(view)
        n = len(view) if written is None else written
        if n != len(view):
            raise OSError(f"short write: {n} of {len(view)} bytes")
        self.crc = zlib.crc32(view, self.crc)
        self.count += n
        return n

    def flush(self) -> None:
        self.out.flush()

    def fileno(self) -> int:
        import errno

        raise OSError(errno.EBADF, "a storage is written through the .pt writer, not to its file descriptor")

    def tell(self) -> int:
        return self.count

    def seek(self, offset: int, whence: int = 0) -> int:
        if (offset, whence) not in ((0, 1), (0, 2), (self.count, 0)):
            raise OSError("the .pt writer's storage stream only moves forward")
        return self.count

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False


def pt_size(obj: Any, *, archive: str) -> int:
    """The exact size in bytes of the file :func:`write_pt` writes for ``obj`` under ``archive``."""
    folder = _folder(archive)
    pkl, storages = _pickle(obj, archive)
    records = _records(pkl, storages)
    records.append(_Record(b".data/serialization_id", 40, b"0" * 40))
    end = _layout(records, folder)
    central = sum(len(_central(record, folder)) for record in records)
    return end + central + _ZIP64_END.size + _ZIP64_LOCATOR.size + _END_RECORD.size


def write_pt(
    out: BinaryIO, obj: Any, *, archive: str, write_storage: Callable[[PtStorage, BinaryIO], None]
) -> None:
    """Write ``obj`` to ``out`` as ``torch.save(obj, f"{archive}.pt")`` writes it, streaming each storage.

    ``write_storage(storage, stream)`` must write exactly ``storage.nbytes`` bytes to ``stream``
    (a forward-only stream without a file descriptor); a count that differs is an ``OSError``
    naming the storage. ``ValueError`` for what the file cannot hold faithfully, before any byte
    is written. The archive is written from ``out``'s position on; nothing is seeked.
    """
    folder = _folder(archive)
    pkl, storages = _pickle(obj, archive)
    records = _records(pkl, storages)
    cursor = 0
    for record in records:
        record.offset = cursor
        head = _header(record, folder)
        out.write(head)
        if record.data is not None:
            out.write(record.data)
            record.crc = zlib.crc32(record.data)
        else:
            storage = record.storage
            assert storage is not None
            stream = _Crc(out)
            write_storage(storage, stream)  # type: ignore[arg-type]  # the BinaryIO it uses
            if stream.count != record.size:
                label = getattr(storage.source, "name", None)
                named = f" ({label})" if isinstance(label, str) else ""
                raise OSError(
                    f"{archive}: storage {record.name.decode()}{named} of {storage.numel} {storage.dtype}: "
                    f"write_storage wrote {stream.count} bytes, {record.size} were expected"
                )
            record.crc = stream.crc
        tail = _descriptor(record)
        out.write(tail)
        cursor += len(head) + record.size + len(tail)
    ident = _Record(b".data/serialization_id", 40, _serialization_id(records), offset=cursor)
    ident.crc = zlib.crc32(ident.data or b"")
    records.append(ident)
    head, tail = _header(ident, folder), _descriptor(ident)
    out.write(head + (ident.data or b"") + tail)
    cursor += len(head) + ident.size + len(tail)
    central = b"".join(_central(record, folder) for record in records)
    out.write(central)
    out.write(_end(len(records), cursor, len(central)))


def _folder(archive: str) -> bytes:
    if not archive or "/" in archive or "\x00" in archive:
        raise ValueError(f"archive name {archive!r}: a file stem is expected (no '/', not empty)")
    return archive.encode("utf-8") + b"/"
