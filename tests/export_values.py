"""The export-values oracle: checkpoints built pickle by pickle, exported, and compared with torch.load.

A :class:`Case` is a ZeRO-0 tag folder's one file, ``mp_rank_00_model_states.pt``, whose module
holds tensors described exactly as torch pickles them: the storage persistent id (class, key as
``str``/``int``/``bytes``, location, size), the rebuild call (``_rebuild_tensor_v2``/``_v3`` with
offset, size, stride and metadata), ``Parameter``\\s with and without state,
``_rebuild_from_type_v2`` with a state or a subclass, and the zip's ``byteorder`` record. Random
cases come from :func:`random_case` (a seed is a case); :func:`torch_saved_case` makes the file
with ``torch.save`` itself from tensors made by torch (views, negative and conjugate views,
Parameters, a subclass) and then edits its byte order.

:func:`check` exports the folder with ckptkeys and loads the file with ``torch.load(...,
weights_only=False)``. Every tensor exported must hold, bit for bit, torch's value made
contiguous (negation and conjugation resolved, cast to float32 where the export casts), or the
export must be refused with an :class:`~ckptkeys.ExportError` that names a tensor of the module.
Anything else is a finding: a file torch loads that ckptkeys cannot read, a file torch cannot
load that ckptkeys exports, another exception. Needs torch; the files are our own, so loading
them with ``weights_only=False`` runs nothing but torch's rebuilds and this module's subclass.
"""

from __future__ import annotations

import collections
import io
import json
import pickle
import random
import re
import struct
import zipfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import ckptkeys

if TYPE_CHECKING:
    import pathlib

    import torch

FILE = "mp_rank_00_model_states.pt"
# Everything else DeepSpeed writes in a ZeRO-0 model-states file: export refuses a file that
# validate reports incomplete, and these files are about tensor values, not completeness.
ZERO0_STATE: dict[str, Any] = {
    "optimizer": None,
    "param_shapes": None,
    "frozen_param_shapes": None,
    "frozen_param_fragments": None,
    "lr_scheduler": None,
    "skipped_steps": 0,
    "global_steps": 1,
    "dp_world_size": 1,
    "mp_world_size": 1,
    "checkpoint_parallel_dimensions": {"pp_degree": 1, "tp_degree": 1},
    "ds_config": "ds_config.json",  # a path, as DeepSpeed saves it when given one: the module then tells the precision
    "ds_version": "0.19.8",
}
# dtype name -> (the legacy storage class torch.save names, or None: UntypedStorage and _v3; itemsize)
DTYPES: dict[str, tuple[str | None, int]] = {
    "float32": ("FloatStorage", 4),
    "float64": ("DoubleStorage", 8),
    "float16": ("HalfStorage", 2),
    "bfloat16": ("BFloat16Storage", 2),
    "int64": ("LongStorage", 8),
    "int32": ("IntStorage", 4),
    "int16": ("ShortStorage", 2),
    "int8": ("CharStorage", 1),
    "uint8": ("ByteStorage", 1),
    "bool": ("BoolStorage", 1),
    "complex64": ("ComplexFloatStorage", 8),
    "uint16": (None, 2),
    "uint32": (None, 4),
    "float8_e4m3fn": (None, 1),
}


class Global:
    """A global the pickle names (``torch._utils._rebuild_tensor_v2``), written by name: no torch needed."""

    def __init__(self, module: str, name: str) -> None:
        self.module = module
        self.name = name

    def __call__(self, *args: Any) -> Any:  # the pickler asks a reduce's function to be callable
        raise TypeError(f"{self.module}.{self.name} is only written by name")


@dataclass
class Storage:
    key: Any
    """As pickled: ``"0"``, ``0``, ``b"0"``."""
    dtype: str
    """The storage class's dtype (``"uint8"`` for ``UntypedStorage``)."""
    numel: int
    untyped: bool = False
    typename: Any = "storage"
    location: Any = "cpu"


@dataclass
class Tensor:
    storage: int
    """Index into :attr:`Case.storages`."""
    offset: int | TextInt
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: str | None = None
    """``_rebuild_tensor_v3``'s dtype; ``None``: ``_rebuild_tensor_v2`` (the storage's dtype)."""
    metadata: Any = None
    wrap: str = "tensor"
    """``tensor``, ``parameter``, ``parameter_state``, ``from_type`` (a plain Tensor), ``subclass``."""
    state: Any = None
    requires_grad: bool = False


@dataclass
class Case:
    storages: list[Storage]
    tensors: dict[str, Tensor]
    records: dict[str, bytes] = field(default_factory=dict)
    """Record name -> bytes, as written in the archive."""
    byteorder: bytes | None = b"little"
    protocol: int = 2

    def write(self, tag: pathlib.Path) -> pathlib.Path:
        tag.mkdir(parents=True, exist_ok=True)
        path = tag / FILE
        path.write_bytes(zip_file(self.pickle(), self.records, self.byteorder))
        return path

    def pickle(self) -> bytes:
        module = collections.OrderedDict((name, self._call(t)) for name, t in self.tensors.items())
        stream = io.BytesIO()
        _Pickler(stream, self.protocol).dump({"module": module, "buffer_names": [], **ZERO0_STATE})
        return stream.getvalue()

    def _call(self, tensor: Tensor) -> _Call:
        storage = self.storages[tensor.storage]
        cls = "UntypedStorage" if storage.untyped else DTYPES[storage.dtype][0] or "UntypedStorage"
        pid = _Pid((storage.typename, Global("torch", cls), storage.key, storage.location, storage.numel))
        hooks: collections.OrderedDict[str, Any] = collections.OrderedDict()
        size = _Call(Global("torch", "Size"), (tensor.shape,))
        args: tuple[Any, ...] = (pid, tensor.offset, size, tensor.stride, tensor.requires_grad, hooks)
        if tensor.dtype is None:
            func = Global("torch._utils", "_rebuild_tensor_v2")
        else:
            func, args = Global("torch._utils", "_rebuild_tensor_v3"), (*args, Global("torch", tensor.dtype))
        if tensor.metadata is not None:
            args = (*args, tensor.metadata)
        rebuild = _Call(func, args)
        if tensor.wrap == "parameter":
            return _Call(Global("torch._utils", "_rebuild_parameter"), (rebuild, False, collections.OrderedDict()))
        if tensor.wrap == "parameter_state":
            with_state = Global("torch._utils", "_rebuild_parameter_with_state")
            return _Call(with_state, (rebuild, False, collections.OrderedDict(), self._state(tensor.state)))
        new_type = {"from_type": Global("torch", "Tensor"), "subclass": Global("tests.value_tensor", "ValueTensor")}
        if tensor.wrap in new_type:
            from_type = Global("torch._tensor", "_rebuild_from_type_v2")
            return _Call(from_type, (func, new_type[tensor.wrap], args, self._state(tensor.state)))
        return rebuild

    def _state(self, state: Any) -> Any:
        # A state naming another tensor of the case (by "@name") holds that tensor's rebuild.
        if isinstance(state, dict):
            return {k: self._state(v) for k, v in state.items()}
        if isinstance(state, tuple):
            return tuple(self._state(v) for v in state)
        if isinstance(state, str) and state.startswith("@"):
            return self._call(self.tensors[state[1:]])
        return state


class TextInt:
    """An int written as the text opcode ``INT`` (``I<text>\\n``), in any protocol: how C pickle
    and ckptkeys parse the text (``010``: C's strtol reads octal 8) is then part of the test."""

    def __init__(self, text: str) -> None:
        self.text = text


class _Pid:
    def __init__(self, pid: tuple[Any, ...]) -> None:
        self.pid = pid


class _Call:
    def __init__(self, func: Any, args: tuple[Any, ...]) -> None:
        self.func = func
        self.args = args


class _Pickler(pickle._Pickler):
    """Python's pickler, writing :class:`Global` by name and :class:`_Call` as its reduce."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_marker(self, obj: Global) -> None:
        if self.proto >= 4:  # type: ignore[attr-defined]
            self.save(obj.module)  # type: ignore[attr-defined]
            self.save(obj.name)  # type: ignore[attr-defined]
            self.write(pickle.STACK_GLOBAL)  # type: ignore[attr-defined]
        else:
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())  # type: ignore[attr-defined]
        self.memoize(obj)  # type: ignore[attr-defined]

    dispatch[Global] = save_marker  # type: ignore[assignment]

    def save_text_int(self, obj: TextInt) -> None:
        self.write(b"I" + obj.text.encode() + b"\n")  # type: ignore[attr-defined]

    dispatch[TextInt] = save_text_int  # type: ignore[assignment]

    def persistent_id(self, obj: Any) -> Any:
        return obj.pid if isinstance(obj, _Pid) else None

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, _Call):
            return obj.func, obj.args
        return NotImplemented


def zip_file(data_pkl: bytes, records: dict[str, bytes], byteorder: bytes | None) -> bytes:
    """torch's zip layout, every record stored."""
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        if byteorder is not None:
            archive.writestr("archive/byteorder", byteorder)
        for name, data in records.items():
            archive.writestr(f"archive/data/{name}", data)
        archive.writestr("archive/version", b"3\n")
    return stream.getvalue()


def record_name(key: Any) -> str:
    return f"{key}".split("\x00", 1)[0]


def swap_unit(dtype: str) -> int:
    size = DTYPES[dtype][1]
    return max(size // 2, 1) if dtype.startswith("complex") else size


def swapped(data: bytes, unit: int) -> bytes:
    """Every whole ``unit`` of bytes reversed (a tail shorter than a unit as it is)."""
    out = bytearray(data)
    end = len(data) - len(data) % unit
    for i in range(unit):
        out[i:end:unit] = data[unit - 1 - i : end : unit]
    return bytes(out)


# -- random cases ----------------------------------------------------------------------------


def random_case(seed: int, *, text_ints: bool = False) -> Case:
    """A file of 1-4 tensors over 1-3 storages, drawn from ``seed``; with ``text_ints``, some
    storage offsets are written as text (``I010\\n``: octal to C pickle)."""
    rng = random.Random(seed)
    storages: list[Storage] = []
    for index in range(rng.randint(1, 3)):
        dtype = rng.choice(list(DTYPES))
        untyped = DTYPES[dtype][1] is None or rng.random() < 0.15
        numel = rng.randint(0, 24)
        key: Any = str(index)
        roll = rng.random()
        if roll < 0.15:
            key = index  # an int key names record str(index) too
        elif roll < 0.22:
            key = f"{index}".encode()
        elif roll < 0.27:
            key = f"{index}\x00tail"
        elif roll < 0.35 and storages:  # another storage of an existing record: 2 and '2'
            other = storages[-1].key
            key = str(other) if not isinstance(other, str) else (int(other) if other.isdigit() else other)
        storage = Storage(key, "uint8" if untyped else dtype, numel, untyped)
        storage.numel = numel * (DTYPES[dtype][1] if untyped else 1)
        if index and record_name(key) == record_name(storages[-1].key) and rng.random() < 0.8:
            # torch reads a record only at its own size: the same bytes, as another dtype
            nbytes = storages[-1].numel * DTYPES[storages[-1].dtype][1]
            dtype = rng.choice([d for d, (_, size) in DTYPES.items() if nbytes % size == 0])
            untyped = DTYPES[dtype][0] is None
            count = nbytes if untyped else nbytes // DTYPES[dtype][1]
            storage = Storage(key, "uint8" if untyped else dtype, count, untyped)
        if rng.random() < 0.05:
            storage.typename = b"storage"
        if rng.random() < 0.05:
            storage.location = b"cpu"
        storages.append(storage)
    big = rng.random() < 0.4
    records: dict[str, bytes] = {}
    for storage in storages:
        name = record_name(storage.key)
        if name not in records:
            size = storage.numel * DTYPES[storage.dtype][1]
            records[name] = rng.randbytes(size + (4 if rng.random() < 0.03 else 0))
    tensors: dict[str, Tensor] = {}
    for index in range(rng.randint(1, 4)):
        which = rng.randrange(len(storages))
        storage = storages[which]
        view_dtype: str | None = None
        if storage.untyped or rng.random() < 0.1:
            view_dtype = rng.choice(list(DTYPES))
        itemsize = DTYPES[view_dtype or storage.dtype][1]
        nbytes = storage.numel * DTYPES[storage.dtype][1]
        elements = nbytes // itemsize
        shape, stride, offset = _view(rng, elements)
        tensor = Tensor(which, offset, shape, stride, view_dtype)
        tensor.requires_grad = rng.random() < 0.1
        if text_ints and rng.random() < 0.2:
            tensor.offset = TextInt(rng.choice([f"{offset}", f"0{offset:o}", f"+{offset}", f"0{offset}"]))
        roll = rng.random()
        if roll < 0.1:
            tensor.metadata = rng.choice([{"neg": True}, {"conj": True}, {"other": True}, {}, {"neg": False}])
        roll = rng.random()
        if roll < 0.1:
            tensor.wrap = "parameter"
        elif roll < 0.2:
            tensor.wrap, tensor.state = "parameter_state", rng.choice([{}, {"note": 1}, ({"note": 1}, None)])
        elif roll < 0.28:
            tensor.wrap, tensor.state = "from_type", rng.choice([{}, None, {"note": 1}, {"requires_grad": False}])
        elif roll < 0.32:
            tensor.wrap, tensor.state = "subclass", {}
        tensors[f"t{index}"] = tensor
    if len(tensors) > 1 and rng.random() < 0.1:  # a state that replaces data with another tensor
        names = list(tensors)
        tensors[names[0]].wrap = rng.choice(["parameter_state", "from_type"])
        tensors[names[0]].state = {"data": "@" + names[1]}
    byteorder = b"big" if big else rng.choice([b"little", None])
    return Case(storages, tensors, records, byteorder, rng.choice([2, 2, 3, 4, 5]))


def _view(rng: random.Random, elements: int) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """A shape, stride and offset inside ``elements``: contiguous mostly, else any view."""
    if elements == 0 or rng.random() < 0.05:
        return (0,), (1,), 0
    ndim = rng.randint(0, 3)
    if rng.random() < 0.6:  # contiguous, somewhere in the storage
        shape = [rng.randint(1, 3) for _ in range(ndim)]
        while shape and _prod(shape) > elements:
            shape.pop()
        offset = rng.randint(0, elements - _prod(shape))
        stride: list[int] = []
        step = 1
        for n in reversed(shape):
            stride.insert(0, step)
            step *= n
        if shape and rng.random() < 0.2:
            stride[rng.randrange(len(shape))] = rng.randint(0, 5) if 1 in shape else stride[0]
        return tuple(shape), tuple(stride), offset
    shape = [rng.randint(1, 3) for _ in range(ndim)]
    stride = [rng.randint(0, 4) for _ in range(ndim)]
    reach = sum((n - 1) * s for n, s in zip(shape, stride, strict=True))
    if reach >= elements:
        return (1,), (1,), rng.randrange(elements)
    return tuple(shape), tuple(stride), rng.randint(0, elements - 1 - reach)


def _prod(values: list[int]) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def big_endian(case: Case) -> Case:
    """The same values torch gives, from a big-endian file: every record swapped as its storages
    are (records whose storages disagree on the unit are left as they are)."""
    units: dict[str, set[int]] = collections.defaultdict(set)
    for storage in case.storages:
        units[record_name(storage.key)].add(swap_unit(storage.dtype))
    records = {
        name: swapped(data, units[name].pop()) if len(units[name]) == 1 else data for name, data in case.records.items()
    }
    return Case(case.storages, case.tensors, records, b"big", case.protocol)


# -- torch.save cases ------------------------------------------------------------------------


def torch_saved_case(seed: int, tag: pathlib.Path) -> pathlib.Path:
    """``torch.save`` of a random module (views, negative and conjugate views, Parameters, a
    subclass), its byte order then set to big or its record removed, drawn from ``seed``."""
    import torch

    from tests.value_tensor import ValueTensor

    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    module: dict[str, Any] = collections.OrderedDict()
    for index in range(rng.randint(1, 5)):
        name = rng.choice(["float32", "float16", "bfloat16", "float64", "int64", "int32", "uint8", "complex64"])
        dtype = getattr(torch, name)
        base = torch.randn(rng.randint(1, 4), rng.randint(1, 4), generator=generator, dtype=torch.float64)
        base = (base * 100).to(dtype) if not dtype.is_complex else torch.complex(base, -base).to(dtype)
        roll = rng.random()
        if roll < 0.15:
            value = base.t()
        elif roll < 0.3:
            value = base[:, 1:] if base.shape[1] > 1 else base[1:]
        elif roll < 0.4:
            value = base[0].expand(2, base.shape[1])
        elif roll < 0.5 and (dtype.is_floating_point or dtype.is_complex):
            value = base._neg_view()
        elif roll < 0.55 and dtype.is_complex:
            value = base.conj()
        else:
            value = base
        roll = rng.random()
        if roll < 0.15 and (dtype.is_floating_point or dtype.is_complex):
            value = torch.nn.Parameter(value, requires_grad=rng.random() < 0.5)
        elif roll < 0.2:
            value = value.as_subclass(ValueTensor)
        module[f"t{index}"] = value
    stream = io.BytesIO()
    torch.save({"module": module, "buffer_names": [], **ZERO0_STATE}, stream)
    archive = zipfile.ZipFile(io.BytesIO(stream.getvalue()))
    members = {info.filename: archive.read(info) for info in archive.infolist()}
    folder = next(iter(members)).split("/")[0]
    order = rng.choice([b"big", b"big", None, b"little"])
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as rewritten:
        for name, data in members.items():
            if name == f"{folder}/byteorder":
                if order is None:
                    continue
                data = order
            elif name == f"{folder}/data.pkl":
                data = _retype_keys(data, rng)
            rewritten.writestr(name, data)
    tag.mkdir(parents=True, exist_ok=True)
    path = tag / FILE
    path.write_bytes(out.getvalue())
    return path


# torch.save's storage keys in data.pkl: BINUNICODE of one digit (the module's names are longer).
_KEY = re.compile(rb"X\x01\x00\x00\x00([0-9])")


def _retype_keys(data: bytes, rng: random.Random) -> bytes:
    """Each storage key kept a str, or pickled as an int (``K``) or as bytes (``C``), at random:
    the same record, a key of another type (torch formats it into the record name)."""

    def retype(match: re.Match[bytes]) -> bytes:
        digit = match.group(1)
        same, as_int, as_bytes = match.group(0), b"K" + bytes([int(digit)]), b"C\x01" + digit
        return rng.choice([same, same, same, as_int, as_int, as_bytes]) if rng.random() < 0.5 else same

    retyped = _KEY.sub(retype, data)
    return retyped


# -- the oracle ------------------------------------------------------------------------------


@dataclass
class Outcome:
    findings: list[str]
    exported: int = 0
    """Tensors written and equal to torch's."""
    refused: str | None = None
    """The export's error, when it refused a file torch loads."""
    both_failed: bool = False


def expected_bytes(value: torch.Tensor) -> tuple[str, list[int], bytes, bool]:
    """torch's value as export writes it: contiguous, negation and conjugation resolved, floats
    as float32; and whether that took a cast."""
    import torch

    tensor = value.detach()
    if type(tensor) is not torch.Tensor:
        tensor = tensor.as_subclass(torch.Tensor)
    tensor = tensor.resolve_neg().resolve_conj()
    floats = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
    cast = tensor.dtype in floats and tensor.dtype != torch.float32
    if tensor.dtype in floats:
        tensor = tensor.to(torch.float32)
    tensor = tensor.contiguous()  # the bytes as they are: a bool byte of 0x25 stays 0x25
    start = tensor.storage_offset() * tensor.element_size()
    data = bytes(tensor.untyped_storage())[start : start + tensor.numel() * tensor.element_size()]
    return str(tensor.dtype).removeprefix("torch."), list(tensor.shape), data, cast


def same_floats(exported: bytes, expected: bytes) -> bool:
    """Equal float32 bits, any NaN equal to any NaN: torch's own float16 -> float32 cast gives a
    NaN the vectorised kernel's bits (sign and payload kept) but 0x7FFFFFFF in the scalar loop
    that finishes a tensor whose length is no multiple of the vector width, so the bits of a cast
    NaN depend on its position; export gives the vectorised kernel's everywhere."""
    import torch

    a = torch.frombuffer(bytearray(exported), dtype=torch.float32) if exported else torch.empty(0)
    b = torch.frombuffer(bytearray(expected), dtype=torch.float32) if expected else torch.empty(0)
    if a.shape != b.shape:
        return False
    nan = a.isnan() & b.isnan()
    return bool(torch.equal(a.view(torch.int32)[~nan], b.view(torch.int32)[~nan]) and torch.equal(a.isnan(), b.isnan()))


def safetensors_file(path: pathlib.Path) -> dict[str, tuple[str, list[int], bytes]]:
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    header.pop("__metadata__", None)
    body = raw[8 + size :]
    return {name: (h["dtype"], h["shape"], body[slice(*h["data_offsets"])]) for name, h in header.items()}


_SAFETENSORS = {"float32": "F32", "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8",
                "bool": "BOOL", "uint16": "U16", "uint32": "U32", "uint64": "U64", "complex64": "C64",
                "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2"}  # fmt: skip


def check(tag: pathlib.Path, out: pathlib.Path) -> Outcome:
    """Export ``tag`` with ckptkeys and compare with ``torch.load`` of its file (module above)."""
    import torch

    try:
        loaded = torch.load(tag / FILE, weights_only=False, map_location="cpu")
        module = loaded["module"]
        torch_error = None
    except Exception as error:
        module, torch_error = None, error
    try:
        plan = ckptkeys.plan_export(tag)
        ckptkeys.write_export(plan, out, fsync=False, overwrite=True)
    except ckptkeys.ExportError as error:
        if torch_error is not None:
            return Outcome([], both_failed=True)
        assert module is not None
        if not any(f"module[{name!r}]" in str(error) for name in module):
            return Outcome([f"export refused without naming a tensor: {error}"])
        return Outcome([], refused=str(error))
    except ckptkeys.ReadError as error:
        if torch_error is not None:
            return Outcome([], both_failed=True)
        return Outcome([f"torch loads the file, ckptkeys cannot read it: {error}"])
    except Exception as error:  # a crash of ckptkeys
        return Outcome([f"ckptkeys raised {type(error).__name__}: {error}"])
    if torch_error is not None or module is None:
        return Outcome([f"ckptkeys exported a file torch.load fails on: {type(torch_error).__name__}: {torch_error}"])
    written = safetensors_file(out / "model.safetensors")
    findings = []
    if set(written) != set(module):
        findings.append(f"names: exported {sorted(written)}, torch {sorted(module)}")
    for name, value in module.items():
        if name not in written:
            continue
        dtype, shape, data, cast = expected_bytes(value)
        got = written[name]
        if (got[0], got[1]) != (_SAFETENSORS.get(dtype), shape):
            findings.append(f"{name}: exported {got[0]}{got[1]}, torch {dtype}{shape}")
        elif got[2] != data and not (cast and same_floats(got[2], data)):
            findings.append(f"{name}: exported {got[2][:32].hex()}, torch {data[:32].hex()} ({dtype}{shape})")
    return Outcome(findings, exported=len(written) if not findings else 0)


def refusal_kind(reason: str) -> str:
    """A short label of a refusal, for the fuzz report."""
    for label, pattern in (
        ("not contiguous", r"not contiguous"),
        ("negative/conjugate view", r"metadata"),
        ("state sets a tensor attribute", r"state sets torch\.Tensor"),
        ("bad state", r"state (holds|is|sets)"),
        ("subclass", r"rebuilt as"),
        ("byte swap splits elements", r"byte-swaps"),
        ("dtype safetensors cannot hold", r"safetensors cannot hold"),
        ("no storage", r"no storage"),
    ):
        if re.search(pattern, reason):
            return label
    return reason[:80]
