"""What torch's pickles mean, without torch: dtypes, storages and tensor rebuilds.

torch pickles a tensor as a call to a rebuild function (``torch._utils._rebuild_tensor_v2``)
whose first argument is a persistent id naming a storage record in the archive. The
interpreters here turn those calls into :class:`TensorInfo` records from the pickled
arguments alone; the storage bytes are never read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from ._globalref import GlobalRef
from ._pickle import Opaque, find_class

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any, Final

    from ._pickle import Interpreter

__all__ = [
    "DTYPE_ITEMSIZE",
    "STORAGE_DTYPES",
    "TORCH_INTERPRETERS",
    "StorageInfo",
    "TensorInfo",
    "legacy_find_class",
    "storage_dtype",
    "tensors_in",
    "zip_find_class",
]

# Element size in bytes of every torch dtype, by the name torch pickles it under.
DTYPE_ITEMSIZE: Final[dict[str, int]] = {
    "float64": 8,
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "complex128": 16,
    "complex64": 8,
    "complex32": 4,
    "int64": 8,
    "int32": 4,
    "int16": 2,
    "int8": 1,
    "uint64": 8,
    "uint32": 4,
    "uint16": 2,
    "uint8": 1,
    "bool": 1,
    "qint8": 1,
    "qint32": 4,
    "quint8": 1,
    "quint4x2": 1,
    "quint2x4": 1,
    "float8_e4m3fn": 1,
    "float8_e4m3fnuz": 1,
    "float8_e5m2": 1,
    "float8_e5m2fnuz": 1,
    "float8_e8m0fnu": 1,
    "float4_e2m1fn_x2": 1,
}
_DTYPE_ALIASES: Final = {
    "double": "float64",
    "float": "float32",
    "half": "float16",
    "cdouble": "complex128",
    "cfloat": "complex64",
    "chalf": "complex32",
    "long": "int64",
    "int": "int32",
    "short": "int16",
}

# torch's legacy typed-storage class names (torch.storage._dtype_to_storage_type_map).
STORAGE_DTYPES: Final[dict[str, str]] = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "BFloat16Storage": "bfloat16",
    "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64",
    "QInt8Storage": "qint8",
    "QInt32Storage": "qint32",
    "QUInt8Storage": "quint8",
    "QUInt4x2Storage": "quint4x2",
    "QUInt2x4Storage": "quint2x4",
    "UntypedStorage": "uint8",  # raw bytes; the tensor's dtype then comes from _rebuild_tensor_v3
}


# torch.load's own renaming of modules before C pickle's (torch.serialization._load's
# load_module_mapping): the zip format only.
_ZIP_MODULE_MAPPING: Final = {"torch.tensor": "torch._tensor"}


def _storage_type(module: str, name: str) -> GlobalRef | None:
    # torch's UnpicklerWrapper.find_class answers a legacy storage class name (FloatStorage)
    # with a StorageType of its own, whatever the module, and imports nothing.
    if "Storage" in name and name in STORAGE_DTYPES and name != "UntypedStorage":
        return GlobalRef("torch", name, None if module == "torch" else (module, name))
    return None


def legacy_find_class(module: str, name: str, protocol: int) -> GlobalRef:
    """The global ``torch.load`` resolves for the object pickle of the legacy format."""
    return _storage_type(module, name) or find_class(module, name, protocol)


def zip_find_class(module: str, name: str, protocol: int) -> GlobalRef:
    """The global ``torch.load`` resolves for ``data.pkl`` of the zip format."""
    storage = _storage_type(module, name)
    if storage is not None:
        return storage
    mapped = _ZIP_MODULE_MAPPING.get(module)
    if mapped is None:
        return find_class(module, name, protocol)
    ref = find_class(mapped, name, protocol)
    return GlobalRef(ref.module, ref.name, (module, name))


def storage_dtype(ref: Any) -> str | None:
    """The dtype a pickled storage class stands for (torch matches on the name alone)."""
    if isinstance(ref, GlobalRef) and ref.module.split(".")[0] == "torch":
        return STORAGE_DTYPES.get(ref.name)
    return None


def _dtype_name(ref: Any) -> str:
    if isinstance(ref, GlobalRef) and ref.module == "torch":
        name = _DTYPE_ALIASES.get(ref.name, ref.name)
        if name in DTYPE_ITEMSIZE:
            return name
    raise ValueError(f"{ref!r} is not a torch dtype")


@dataclass(frozen=True, slots=True)
class StorageInfo:
    """A storage record of a checkpoint: where a tensor's bytes are, never the bytes."""

    key: str
    """The record's name in the archive (``<archive>/data/<key>``): the pickled key as torch
    formats it (``f"{key}"``), up to a NUL (torch's zip reader takes a C string)."""
    dtype: str
    numel: int
    """Elements of ``dtype`` in the record."""
    location: str
    """The device it was saved from (``"cpu"``, ``"cuda:0"``)."""
    pickled_key: Any = None
    """The key as the pickle holds it (``"2"``, ``2``, ``b"2"``): the key of torch's dict of
    loaded storages, so ``2`` and ``"2"`` are two storages of one record, each of its own dtype."""

    @property
    def nbytes(self) -> int:
        """Bytes of the record: :attr:`numel` elements of :attr:`dtype`."""
        return self.numel * DTYPE_ITEMSIZE[self.dtype]

    @property
    def swap_size(self) -> int:
        """The bytes ``torch.load`` reverses in place when the file's byte order is not the
        machine's (``UntypedStorage.byteswap``): the element size, half of it for complex
        dtypes (each of the two numbers alone); 1 means nothing is swapped."""
        size = DTYPE_ITEMSIZE[self.dtype]
        return max(size // 2, 1) if self.dtype.startswith("complex") else size


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """A tensor as a checkpoint describes it: dtype, shape and where its bytes are.

    Built from the pickle alone, without reading or mapping the bytes.
    """

    dtype: str
    """torch's name for the dtype without the ``torch.`` prefix: ``"float32"``, ``"bfloat16"``."""
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    storage_offset: int
    """Offset into the storage, in elements."""
    storage: StorageInfo | None
    """The storage record (``None`` for tensors on the meta device)."""
    requires_grad: bool = False
    is_parameter: bool = False
    """Saved as a ``torch.nn.Parameter``."""
    subclass: GlobalRef | None = None
    """A tensor subclass other than ``Parameter`` that the pickle names, if any."""
    altered_by: str | None = None
    """What in the pickle makes the values ``torch.load`` gives differ from the storage's
    bytes, or makes its rebuild fail: negation or conjugation metadata, a pickled state that
    sets an attribute of ``torch.Tensor`` (``data``), a subclass; ``None`` when the values are
    the bytes. Export refuses such a tensor."""
    attributes: dict[str, Any] | None = field(default=None, compare=False)
    """Python attributes the pickle sets on a plain tensor (its pickled ``__dict__``, such as
    ZeRO-3's ``ds_id``) that leave its values alone; ``None`` when it sets none. Kept so that a
    writer can pickle the tensor again as torch did (``ckptkeys._export._pt``)."""

    @property
    def numel(self) -> int:
        """Elements of the tensor: the product of :attr:`shape` (1 for a scalar)."""
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        """Bytes of one element of :attr:`dtype`."""
        return DTYPE_ITEMSIZE[self.dtype]

    @property
    def nbytes(self) -> int:
        """Bytes of this tensor's elements (a view's share, not its whole storage)."""
        return self.numel * self.itemsize

    @property
    def storage_key(self) -> str | None:
        """The key of its storage record in the archive (``data/<key>``), ``None`` on the meta device."""
        return None if self.storage is None else self.storage.key

    @property
    def device(self) -> str:
        """The device it was saved from (``"cpu"``, ``"cuda:0"``), ``"meta"`` without a storage."""
        return "meta" if self.storage is None else self.storage.location

    def __repr__(self) -> str:
        kind = "Parameter" if self.is_parameter else "Tensor"
        return f"<{kind} {self.dtype}{list(self.shape)}>"


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if isinstance(value, (tuple, list)) and all(type(v) is int and v >= 0 for v in value):
        return tuple(value)
    raise ValueError(f"{what} is not a tuple of non-negative ints: {value!r}")


def _tensor(
    storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False, dtype: str | None = None
) -> TensorInfo:
    if not isinstance(storage, StorageInfo):
        raise ValueError(f"the storage argument is {type(storage).__name__}, not a storage record")
    if type(offset) is not int or offset < 0:
        raise ValueError(f"storage offset {offset!r} is not a non-negative int")
    shape = _ints(size, "size")
    strides = _ints(stride, "stride")
    if len(shape) != len(strides):
        raise ValueError(f"size {shape} and stride {strides} differ in length")
    if not isinstance(requires_grad, bool):
        raise ValueError(f"requires_grad {requires_grad!r} is not a bool")
    dtype = dtype or storage.dtype
    _check_grad(dtype, requires_grad)
    if math.prod(shape):  # the last element a view reaches must lie inside its storage
        last = offset + sum((n - 1) * s for n, s in zip(shape, strides, strict=True))
        if (last + 1) * DTYPE_ITEMSIZE[dtype] > storage.nbytes:
            raise ValueError(f"a tensor of shape {shape} reaches past the end of storage {storage.key!r}")
    return TensorInfo(dtype, shape, strides, offset, storage, requires_grad)


def _check_grad(dtype: str, requires_grad: Any) -> None:
    # torch sets requires_grad on the rebuilt tensor (Parameter(data, requires_grad) too), which
    # fails for any dtype that is not floating point or complex.
    if requires_grad and not dtype.startswith(("float", "bfloat", "complex")):
        raise ValueError(f"requires_grad on a {dtype} tensor, which torch.load refuses")


def _rebuild_tensor(args: tuple[Any, ...], kwargs: dict[Any, Any] | None) -> TensorInfo:
    if kwargs or len(args) != 4:
        raise ValueError("expected (storage, offset, size, stride)")
    return _tensor(*args)


def _rebuild_tensor_v2(args: tuple[Any, ...], kwargs: dict[Any, Any] | None) -> TensorInfo:
    if kwargs or len(args) not in (6, 7):
        raise ValueError("expected (storage, offset, size, stride, requires_grad, hooks[, metadata])")
    return _with_metadata(_tensor(*args[:5]), args[6] if len(args) == 7 else None)


def _rebuild_tensor_v3(args: tuple[Any, ...], kwargs: dict[Any, Any] | None) -> TensorInfo:
    if kwargs or len(args) not in (7, 8):
        raise ValueError("expected (storage, offset, size, stride, requires_grad, hooks, dtype[, metadata])")
    storage, offset, size, stride, requires_grad = args[:5]
    if requires_grad:  # torch.empty(..., requires_grad=True).set_(...): an in-place op on such a leaf fails
        raise ValueError("requires_grad is set, and torch.load's _rebuild_tensor_v3 then fails (set_ on a leaf)")
    tensor = _tensor(storage, offset, size, stride, requires_grad, dtype=_dtype_name(args[6]))
    return _with_metadata(tensor, args[7] if len(args) == 8 else None)


# The keys torch._C._set_tensor_metadata acts on (torch._utils.get_tensor_metadata writes them):
# a negative or conjugate view, whose values torch gives negated or conjugated.
_METADATA_BITS: Final = ("neg", "conj")


def _with_metadata(tensor: TensorInfo, metadata: Any) -> TensorInfo:
    # torch: `if metadata: set_tensor_metadata(tensor, metadata)`, which asserts a dict and hands
    # it to C++ as a map of str to bool; other keys are ignored.
    if not metadata:
        return tensor
    if not isinstance(metadata, dict):
        return replace(tensor, altered_by=f"its rebuild metadata is a {type(metadata).__name__}, not a dict")
    if not all(type(k) is str and isinstance(v, int) for k, v in metadata.items()):
        return replace(tensor, altered_by=f"its rebuild metadata {metadata!r:.60} is not a dict of str to bool")
    bits = [k for k in _METADATA_BITS if k in metadata]
    if bits:
        return replace(tensor, altered_by=f"its rebuild metadata sets {', '.join(bits)} (a {bits[0]} view)")
    return tensor


def _rebuild_meta(args: tuple[Any, ...], kwargs: dict[Any, Any] | None) -> TensorInfo:
    if kwargs or len(args) != 4:
        raise ValueError("expected (dtype, size, stride, requires_grad)")
    dtype, size, stride, requires_grad = args
    return TensorInfo(_dtype_name(dtype), _ints(size, "size"), _ints(stride, "stride"), 0, None, bool(requires_grad))


def _rebuild_parameter(args: tuple[Any, ...], kwargs: dict[Any, Any] | None) -> TensorInfo:
    if kwargs or len(args) != 3:
        raise ValueError("expected (data, requires_grad, hooks)")
    return _parameter(args[0], args[1])


def _rebuild_parameter_with_state(args: tuple[Any, ...], kwargs: dict[Any, Any] | None) -> TensorInfo:
    if kwargs or len(args) != 4:
        raise ValueError("expected (data, requires_grad, hooks, state)")
    return _with_state(_parameter(args[0], args[1]), args[3])


def _parameter(data: Any, requires_grad: Any) -> TensorInfo:
    if not isinstance(data, TensorInfo):
        raise ValueError(f"the data argument is {type(data).__name__}, not a tensor")
    _check_grad(data.dtype, requires_grad)
    return replace(data, is_parameter=True, requires_grad=bool(requires_grad))


def _with_state(tensor: TensorInfo, state: Any) -> TensorInfo:
    """What ``torch._utils._set_obj_state`` does with ``state``: a dict, or a (dict, slots) pair,
    whose items are set as attributes. Plain attributes leave the values alone; an attribute
    ``torch.Tensor`` has (``data``, ``grad``, ``__class__``...) may change them, and a state
    torch cannot apply makes the load fail."""
    if isinstance(state, tuple):
        if len(state) != 2:
            return replace(tensor, altered_by=f"its pickled state is a tuple of {len(state)}, not (dict, slots)")
        parts = state
    else:
        parts = (state, None)
    for part in parts:
        if not part:  # torch skips an empty or None part
            continue
        if not isinstance(part, dict):
            return replace(tensor, altered_by=f"its pickled state holds a {type(part).__name__}, not a dict")
        # Imported only for a state that sets something (torch.save writes none): 751 names.
        from ._tensor_attributes import TENSOR_ATTRIBUTES

        for name in part:
            if type(name) is not str:
                return replace(tensor, altered_by=f"its pickled state sets {name!r:.40}, not an attribute name")
            if name in TENSOR_ATTRIBUTES:
                return replace(tensor, altered_by=f"its pickled state sets torch.Tensor's attribute {name!r}")
    return tensor


_PARAMETER: Final = GlobalRef("torch.nn.parameter", "Parameter")
_PLAIN_TENSORS: Final = frozenset({GlobalRef("torch", "Tensor"), GlobalRef("torch._tensor", "Tensor")})


def _rebuild_from_type_v2(args: tuple[Any, ...], kwargs: dict[Any, Any] | None) -> Any:
    # (func, new_type, args, state): torch calls func(*args), casts the result to new_type, then
    # applies state (with new_type's own __setstate__ if it has one: only a subclass can).
    if kwargs or len(args) != 4:
        raise ValueError("expected (func, new_type, args, state)")
    func, new_type, func_args, state = args
    interpret = TORCH_INTERPRETERS.get((func.module, func.name)) if isinstance(func, GlobalRef) else None
    if interpret is None or not isinstance(func_args, tuple):
        return Opaque(GlobalRef("torch._tensor", "_rebuild_from_type_v2"), args)
    tensor = interpret(func_args, None)
    if not isinstance(tensor, TensorInfo):
        return tensor
    if new_type == _PARAMETER:
        tensor = replace(tensor, is_parameter=True)
    elif new_type not in _PLAIN_TENSORS:
        named = new_type if isinstance(new_type, GlobalRef) else None
        what = new_type.qualname if named is not None else type(new_type).__name__
        return replace(tensor, subclass=named, altered_by=tensor.altered_by or f"it is rebuilt as {what}")
    if tensor.altered_by:
        return tensor
    tensor = _with_state(tensor, state)
    if not tensor.altered_by and type(state) is dict and state:
        tensor = replace(tensor, attributes=state)
    return tensor


def _size(args: tuple[Any, ...], kwargs: dict[Any, Any] | None) -> tuple[int, ...]:
    if kwargs or len(args) > 1:
        raise ValueError("torch.Size takes one sequence")
    return _ints(args[0] if args else (), "torch.Size")


TORCH_INTERPRETERS: Final[dict[tuple[str, str], Interpreter]] = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_meta_tensor_no_storage"): _rebuild_meta,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch.tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,  # torch < 1.9 module name
    ("torch", "Size"): _size,
}


def tensors_in(root: Any) -> Iterator[tuple[str, TensorInfo]]:
    """Every tensor of a read structure once, as torch.load gives it (one object per memo entry),
    with where it is, as export names tensors: ``module['fc1.weight']``, ``optimizer[0]``.

    The structure is a graph: a pickle can reference one container many times (40 levels of ten
    references each is a 5 KB file of 10**40 paths), so every object is visited once, by identity.
    """
    stack: list[tuple[str, Any]] = [("", root)]
    seen: set[int] = set()
    while stack:
        where, item = stack.pop()
        if isinstance(item, (TensorInfo, dict, list, tuple, Opaque)):
            if id(item) in seen:
                continue
            seen.add(id(item))
        if isinstance(item, TensorInfo):
            yield where or "the top level", item
        elif isinstance(item, dict):
            stack.extend((_subscript(where, key), value) for key, value in item.items())
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{where}[{index}]", value) for index, value in enumerate(item))
        elif isinstance(item, Opaque):
            parts = (item.args, item.kwargs, item.state, item.items, item.dict_items)
            stack.extend((f"{where}<{item.qualname}>", value) for value in parts)


def _subscript(where: str, key: Any) -> str:
    text = repr(key) if len(repr(key)) <= 60 else repr(key)[:57] + "..."
    return f"{where}[{text}]" if where or not isinstance(key, str) else key
