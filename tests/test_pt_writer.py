"""The torch-free ``.pt`` writer (ckptkeys._export._pt) against torch.save and torch.load.

Random object trees (hypothesis) are built twice from one description: once with torch tensors
for ``torch.save``, once with ``PtTensor``/``PtStorage`` leaves for ``write_pt``, the plain
values being the very same objects on both sides (pickle's memo goes by identity). The files
must be equal byte for byte (the serialization id too: torch derives it from the record names
and CRC-32s), load under ``torch.load`` (weights_only True and False, mmap) with the same
values and the same storage sharing, and read back with ckptkeys' own reader with the same
structure; ``pt_size`` is the written size. The torch-free tests run on every Python.
"""

from __future__ import annotations

import importlib.util
import io
import struct
import math
import os
import pathlib
import random
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ckptkeys
from ckptkeys._export._pt import DTYPES, PtStorage, PtTensor, from_read, pt_size, write_pt
from ckptkeys._read._globalref import GlobalRef
from ckptkeys._read._pickle import Opaque
from ckptkeys._read._torch import DTYPE_ITEMSIZE, TensorInfo

# torch warns when it makes a complex32 tensor (one of the dtypes drawn): not what is tested
pytestmark = pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")

EXAMPLES = int(os.environ.get("CKPTKEYS_PT_EXAMPLES", "40"))
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


# -- the description of a tree, and its two builds --------------------------------------------


@dataclass
class StorageSpec:
    dtype: str
    numel: int
    data: bytes = b""


@dataclass
class TensorSpec:
    storage: int
    shape: tuple[int, ...]
    stride: tuple[int, ...] | None
    offset: int
    requires_grad: bool = False


@dataclass
class Tree:
    storages: list[StorageSpec]
    root: Any
    """Containers as ("dict", [(key, node)]), ("odict", [...]), ("state_dict", [...]) (an OrderedDict
    with torch's _metadata), ("list", [...]), ("tuple", [...]),
    ("tensor", index into tensors), ("again", node) for a node built once and used twice; any
    other value is a plain leaf, the same object in both builds."""
    tensors: list[TensorSpec] = field(default_factory=list)


def _build(tree: Tree, side: str) -> Any:
    """The object tree of ``side`` ("torch" or "pt")."""
    storages: list[Any] = []
    for spec in tree.storages:
        if side == "pt":
            storages.append(PtStorage(spec.dtype, spec.numel, spec.data))
        else:
            import torch

            raw = torch.frombuffer(bytearray(spec.data), dtype=torch.uint8) if spec.data else torch.zeros(0, dtype=torch.uint8)
            storages.append(raw.view(getattr(torch, spec.dtype)))
    tensors: dict[int, Any] = {}
    built: dict[int, Any] = {}

    def tensor(index: int) -> Any:
        if index not in tensors:
            spec = tree.tensors[index]
            if side == "pt":
                tensors[index] = PtTensor(
                    storages[spec.storage], spec.shape, spec.stride, spec.offset, spec.requires_grad
                )
            else:
                import torch

                base = storages[spec.storage]
                # torch's own contiguous strides where none are given: the writer's are checked against them
                stride = spec.stride if spec.stride is not None else base.new_empty(spec.shape).stride()
                view = torch.as_strided(base, spec.shape, stride, spec.offset)
                tensors[index] = view.detach().requires_grad_() if spec.requires_grad else view
        return tensors[index]

    def node(value: Any) -> Any:
        if not isinstance(value, tuple) or not value or value[0] not in _KINDS:
            return value
        kind, content = value
        if kind == "tensor":
            return tensor(content)
        if kind == "again":
            key = id(content)
            if key not in built:
                built[key] = node(content)
            return built[key]
        if kind in ("dict", "odict", "state_dict"):
            pairs = [(k, node(v)) for k, v in content]
            if kind == "dict":
                return dict(pairs)
            mapping = OrderedDict(pairs)
            if kind == "state_dict":  # as torch's state_dict(): its per-module versions in _metadata
                mapping._metadata = OrderedDict([("", {"version": 1}), ("fc", {"version": 2})])  # type: ignore[attr-defined]
            return mapping
        items = [node(v) for v in content]
        return items if kind == "list" else tuple(items)

    return node(tree.root)


_KINDS = frozenset({"dict", "odict", "state_dict", "list", "tuple", "tensor", "again"})


def _contiguous(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides: list[int] = []
    step = 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


# -- hypothesis -------------------------------------------------------------------------------

_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([0, 255, 256, 65535, 65536, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63, -(2**64)]),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=6),
)
_KEYS = st.one_of(st.text(max_size=6), st.integers(min_value=-1000, max_value=1000))


@st.composite
def trees(draw: st.DrawFn, *, dtypes: list[str] | None = None, max_elements: int = 64) -> Tree:
    storages = [
        StorageSpec(
            draw(st.sampled_from(dtypes or sorted(DTYPES))),
            draw(st.one_of(st.integers(0, max_elements), st.just(300_000))),  # now and then a large one
        )
        for _ in range(draw(st.integers(1, 4)))
    ]
    tensors: list[TensorSpec] = []

    @st.composite
    def tensor(draw: st.DrawFn) -> Any:
        if tensors and draw(st.integers(0, 5)) == 0:  # the same tensor object again
            return ("tensor", draw(st.integers(0, len(tensors) - 1)))
        index = draw(st.integers(0, len(storages) - 1))
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
        stride = None if draw(st.booleans()) else tuple(draw(st.integers(0, 5)) for _ in shape)
        offset = draw(st.integers(0, 8))
        storage = storages[index]
        if math.prod(shape):
            steps = stride if stride is not None else _contiguous(shape)
            storage.numel = max(storage.numel, offset + sum((n - 1) * s for n, s in zip(shape, steps)) + 1)
        else:
            storage.numel = max(storage.numel, offset)
        grad = storage.dtype in ("float32", "float64", "bfloat16", "float16", "complex64", "complex128") and draw(
            st.integers(0, 4)
        ) == 0
        tensors.append(TensorSpec(index, shape, stride, offset, grad))
        return ("tensor", len(tensors) - 1)

    def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(
            st.tuples(st.just("dict"), st.lists(st.tuples(_KEYS, children), max_size=4, unique_by=lambda p: p[0])),
            st.tuples(
                st.sampled_from(["odict", "state_dict"]),
                st.lists(st.tuples(_KEYS, children), max_size=3, unique_by=lambda p: p[0]),
            ),
            st.tuples(st.just("list"), st.lists(children, max_size=4)),
            st.tuples(st.just("tuple"), st.lists(children, max_size=5)),
        )

    body = draw(st.recursive(st.one_of(_LEAVES, tensor()), extend, max_leaves=12))
    shared = ("again", ("list", [body]))
    root = ("dict", [("model", body), ("a", shared), ("b", shared), ("t", draw(tensor()))])
    for spec in storages:
        size = spec.numel * DTYPE_ITEMSIZE[spec.dtype]
        rng = random.Random(draw(st.integers(0, 2**32)))
        data = rng.randbytes(size)
        if spec.dtype == "bool":
            data = bytes(b & 1 for b in data)
        spec.data = data
    return Tree(storages, root, tensors)


def _copy(storage: PtStorage, stream: Any) -> None:
    stream.write(storage.source)


def _write(obj: Any, archive: str = "archive") -> bytes:
    out = io.BytesIO()
    write_pt(out, obj, archive=archive, write_storage=_copy)
    return out.getvalue()


# -- torch-free: sizes, our reader, refusals ----------------------------------------------------


@SETTINGS
@given(trees())
def test_size_is_exact_and_reader_reads_back(tmp_path_factory: pytest.TempPathFactory, tree: Tree) -> None:
    obj = _build(tree, "pt")
    data = _write(obj, "fp32")
    assert pt_size(obj, archive="fp32") == len(data)
    path = tmp_path_factory.mktemp("pt") / "fp32.pt"
    path.write_bytes(data)
    checkpoint = ckptkeys.read(path)
    with zipfile.ZipFile(path) as archive:  # Python's zipfile checks every CRC-32 too
        assert archive.testzip() is None
        records = {name: archive.read(name) for name in archive.namelist()}
    storages: dict[int, str] = {}
    _same(obj, checkpoint.data, records, storages)
    assert len(storages) == len(checkpoint.storages)


def _same(mine: Any, read: Any, records: dict[str, bytes], storages: dict[int, str]) -> None:
    if isinstance(mine, PtTensor):
        assert isinstance(read, TensorInfo)
        assert read.storage is not None
        assert (read.dtype, read.shape, read.storage_offset, read.requires_grad) == (
            mine.storage.dtype,
            mine.shape,
            mine.offset,
            mine.requires_grad,
        )
        assert read.stride == (mine.stride if mine.stride is not None else _contiguous(mine.shape))
        assert storages.setdefault(id(mine.storage), read.storage.key) == read.storage.key
        assert read.storage.nbytes == mine.storage.nbytes  # a v3 dtype: an untyped (byte) storage
        assert records[f"fp32/data/{read.storage.key}"] == mine.storage.source
        return
    if mine == b"":  # bytes() at protocol 2: a call the reader leaves unevaluated
        assert isinstance(read, Opaque) and read.qualname == "builtins.bytes" and read.args == ()
        return
    assert type(read) is type(mine)
    if isinstance(mine, dict):
        assert list(read) == list(mine)
        assert vars(read) == vars(mine) if isinstance(mine, OrderedDict) else True  # _metadata
        for key in mine:
            _same(mine[key], read[key], records, storages)
    elif isinstance(mine, (list, tuple)):
        assert len(read) == len(mine)
        for a, b in zip(mine, read):
            _same(a, b, records, storages)
    else:
        assert read == mine


def test_records_in_torch_order_and_aligned() -> None:
    storage = PtStorage("float32", 3, b"\x00" * 12)
    empty = PtStorage("int64", 0, b"")
    data = _write({"w": PtTensor(storage, (3,)), "e": PtTensor(empty, (0,))}, "exp_avg")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
    names = [info.filename.removeprefix("exp_avg/") for info in infos]
    assert names == [
        "data.pkl",
        ".format_version",
        ".storage_alignment",
        "byteorder",
        "data/0",
        "data/1",
        "version",
        ".data/serialization_id",
    ]
    for info in infos:
        start = info.header_offset + 30 + len(info.filename) + int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little")
        assert start % 64 == 0
        assert info.compress_type == zipfile.ZIP_STORED
        assert info.flag_bits == (0x0808 if info.file_size else 0x0800)
    ident = data[data.index(b"exp_avg/.data/serialization_id") :]
    assert b"PK\x06\x06" in data and b"PK\x06\x07" in data
    assert len(ident) > 40


class _Short:
    def __init__(self, delta: int) -> None:
        self.delta = delta

    def __call__(self, storage: PtStorage, stream: Any) -> None:
        stream.write(storage.source[: len(storage.source) + self.delta] + b"\x00" * max(self.delta, 0))


@pytest.mark.parametrize("delta", [-1, 1, -4])
def test_wrong_byte_count_refused_naming_the_storage(delta: int) -> None:
    @dataclass(frozen=True)
    class Source:
        name: str
        data: bytes

    first = PtStorage("float32", 2, b"\x00" * 8)
    second = PtStorage("float32", 2, b"\x00" * 8)

    def write(storage: PtStorage, stream: Any) -> None:
        data = storage.source.data if isinstance(storage.source, Source) else storage.source
        if storage is second:
            data = data[: len(data) + delta] if delta < 0 else data + b"\x01" * delta
        stream.write(data)

    obj = {"a": PtTensor(first, (2,)), "b": PtTensor(PtStorage("float32", 2, Source("fc.weight", b"\x00" * 8)), (2,))}
    second = obj["b"].storage
    with pytest.raises(OSError, match=r"fp32: storage data/1 \(fc\.weight\) of 2 float32: write_storage wrote"):
        write_pt(io.BytesIO(), obj, archive="fp32", write_storage=write)


class _Unknown:
    pass


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"x": {1, 2}}, r"\['x'\]: a set has no place"),
        ({"x": [_Unknown()]}, r"\['x'\]\[0\]: a _Unknown has no place"),
        ({"x": GlobalRef("os.path", "a.b")}, "no top-level name"),
        ({"x": Opaque(GlobalRef("m", "C"), ())}, "made by no pickle opcode"),
        ({"x": Opaque(GlobalRef("m", "C"), (), opcode="INST")}, "made by INST"),
        ({"x": Opaque(GlobalRef("m", "C"), (), {"k": 1}, opcode="REDUCE")}, "keyword arguments"),
        ({"x": Opaque(GlobalRef("m", "C"), (), opcode="NEWOBJ", builds=2)}, "BUILD applied 2 times"),
        ({"x": PtTensor(PtStorage("float32", 3, b""), (4,))}, "reaches element 3 of a storage of 3"),
        ({"x": PtTensor(PtStorage("float32", 8, b""), (2, 2), (1, 7))}, "reaches element 8 of a storage of 8"),
        ({"x": PtTensor(PtStorage("int64", 1, b""), (1,), requires_grad=True)}, "int64 tensor that requires grad"),
        ({"x": PtTensor(PtStorage("float8_e5m2", 1, b""), (1,), requires_grad=True)}, "does not load back"),
        ({"x": PtTensor(PtStorage("qint8", 1, b""), (1,))}, "dtype 'qint8'"),
        ({"x": PtTensor(PtStorage("float32", 1, b""), (1,), (1, 1))}, "does not match shape"),
        ({"x": PtTensor(PtStorage("float32", 1, b""), (-1,))}, "no tuple of counts"),
    ],
)
def test_unwritable_refused_naming_where(obj: Any, message: str) -> None:
    written: list[PtStorage] = []
    out = io.BytesIO()
    with pytest.raises(ValueError, match=message):
        write_pt(out, obj, archive="fp32", write_storage=lambda s, o: written.append(s))
    with pytest.raises(ValueError, match=message):
        pt_size(obj, archive="fp32")
    assert out.getvalue() == b"" and not written  # refused before any byte


def test_storage_stream_has_no_descriptor() -> None:
    """A copy in the kernel would go around the CRC: the stream offers no file descriptor."""
    seen: list[Any] = []

    def write(storage: PtStorage, stream: Any) -> None:
        with pytest.raises(OSError):
            stream.fileno()
        seen.append(stream)
        stream.write(storage.source)

    write_pt(io.BytesIO(), PtTensor(PtStorage("uint8", 2, b"ab"), (2,)), archive="a", write_storage=write)
    assert len(seen) == 1


def test_export_tensor_writer_streams_through(tmp_path: pathlib.Path) -> None:
    """tensor_entry(...).write, which copies file ranges in the kernel where it can, writes a storage."""
    from ckptkeys._export._spans import FileSpan
    from ckptkeys._export._tensor_bytes import tensor_entry
    from ckptkeys._export._types import ExportTensor

    source = tmp_path / "source.bin"
    payload = bytes(range(256)) * 64
    source.write_bytes(b"junk" + payload)
    span = FileSpan(str(source), 4, len(payload))
    tensor = ExportTensor("w", (len(payload) // 4,), "float32", "float32", (span,), "trainable")
    storage = PtStorage("float32", len(payload) // 4, tensor)
    target = tmp_path / "w.pt"
    with open(target, "wb") as out:
        write_pt(out, {"w": PtTensor(storage, (storage.numel,))}, archive="w",
                 write_storage=lambda s, o: tensor_entry(s.source, lambda n: None).write(o))
    with zipfile.ZipFile(target) as archive:
        assert archive.testzip() is None
        assert archive.read("w/data/0") == payload
    assert target.stat().st_size == pt_size({"w": PtTensor(storage, (storage.numel,))}, archive="w")


# -- against torch ---------------------------------------------------------------------------


def _torch() -> Any:
    return pytest.importorskip("torch")


@SETTINGS
@given(trees())
def test_bytes_equal_torch_save(tmp_path_factory: pytest.TempPathFactory, tree: Tree) -> None:
    torch = _torch()
    folder = tmp_path_factory.mktemp("save")
    torch.save(_build(tree, "torch"), folder / "exp_avg.pt")
    assert _write(_build(tree, "pt"), "exp_avg") == (folder / "exp_avg.pt").read_bytes()


@SETTINGS
@given(trees(), st.sampled_from([(True, False), (False, False), (True, True)]))
def test_torch_load_gives_the_values(
    tmp_path_factory: pytest.TempPathFactory, tree: Tree, mode: tuple[bool, bool]
) -> None:
    torch = _torch()
    weights_only, mmap = mode
    path = tmp_path_factory.mktemp("load") / "fp32.pt"
    obj = _build(tree, "pt")
    path.write_bytes(_write(obj, "fp32"))
    if weights_only and _holds_empty_bytes(obj):
        # protocol 2 pickles b"" as bytes(), a call torch's weights-only unpickler refuses (in
        # torch.save's own files too)
        with pytest.raises(Exception, match="Weights only load failed"):
            torch.load(path, weights_only=True, mmap=mmap)
        return
    loaded = torch.load(path, weights_only=weights_only, mmap=mmap)
    pointers: dict[int, int] = {}
    _same_loaded(obj, loaded, pointers)


def _holds_empty_bytes(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_holds_empty_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_empty_bytes(v) for v in value)
    return bool(value == b"")


def _same_loaded(mine: Any, loaded: Any, pointers: dict[int, int]) -> None:
    torch = _torch()
    if isinstance(mine, PtTensor):
        assert isinstance(loaded, torch.Tensor)
        assert str(loaded.dtype) == f"torch.{mine.storage.dtype}"
        assert tuple(loaded.shape) == mine.shape
        assert loaded.stride() == (mine.stride if mine.stride is not None else _contiguous(mine.shape))
        assert loaded.storage_offset() == mine.offset
        assert loaded.requires_grad == mine.requires_grad
        storage = loaded.untyped_storage()
        raw = torch.empty(0, dtype=torch.uint8).set_(storage)  # the storage's bytes, as a uint8 view
        assert raw.numpy().tobytes() == mine.storage.source
        # one storage per PtStorage: tensors over one share it, others do not
        assert pointers.setdefault(id(mine.storage), storage.data_ptr()) == storage.data_ptr()
        assert list(pointers.values()).count(storage.data_ptr()) == 1 or not mine.storage.source
        return
    assert type(loaded) is type(mine)
    if isinstance(mine, dict):
        assert list(loaded) == list(mine)
        assert getattr(loaded, "_metadata", None) == getattr(mine, "_metadata", None)
        for key in mine:
            _same_loaded(mine[key], loaded[key], pointers)
    elif isinstance(mine, (list, tuple)):
        assert len(loaded) == len(mine)
        for a, b in zip(mine, loaded):
            _same_loaded(a, b, pointers)
    else:
        assert loaded == mine


def test_shared_storage_loads_shared(tmp_path: pathlib.Path) -> None:
    torch = _torch()
    storage = PtStorage("float32", 6, struct_floats(range(6)))
    obj = {"a": PtTensor(storage, (2, 3)), "b": PtTensor(storage, (3,), (2,), 1), "c": PtTensor(PtStorage("float32", 6, struct_floats(range(6))), (6,))}
    (tmp_path / "s.pt").write_bytes(_write(obj, "s"))
    for weights_only, mmap in ((True, False), (False, False), (True, True)):
        loaded = torch.load(tmp_path / "s.pt", weights_only=weights_only, mmap=mmap)
        a, b, c = loaded["a"], loaded["b"], loaded["c"]
        assert a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
        assert a.untyped_storage().data_ptr() != c.untyped_storage().data_ptr()
        assert b.tolist() == [1.0, 3.0, 5.0]
        a[0, 1] = 7.0  # one storage: the write shows through the other view
        assert b[0].item() == 7.0


def struct_floats(values: Any) -> bytes:
    return b"".join(struct.pack("<f", v) for v in values)


@pytest.mark.parametrize("count", [0, 1, 2, 999, 1000, 1001, 2000, 2001])
def test_batches_equal_torch_save(tmp_path: pathlib.Path, count: int) -> None:
    """APPENDS/SETITEMS batches of 1000 (C pickle's BATCHSIZE), exact containers and OrderedDict alike."""
    torch = _torch()
    keys = [f"k{i}" for i in range(count)]
    obj = {"d": {k: i for i, k in enumerate(keys)}, "l": list(range(count)), "o": OrderedDict((k, 1) for k in keys)}
    torch.save(obj, tmp_path / "b.pt")
    assert _write(obj, "b") == (tmp_path / "b.pt").read_bytes()


@pytest.mark.parametrize("count", [1, 12, 13, 14, 28, 29, 30, 58, 59, 60, 126, 127, 128, 300, 600, 1200, 2400])
def test_serialization_id_equals_torch_for_many_records(tmp_path: pathlib.Path, count: int) -> None:
    """torch's serialization id hashes the record names in libstdc++'s unordered_set order: every rehash."""
    torch = _torch()
    values = [torch.full((1,), float(i)) for i in range(count)]
    torch.save(values, tmp_path / "many.pt")
    storages = [PtStorage("float32", 1, struct_floats([float(i)])) for i in range(count)]
    assert _write([PtTensor(s, (1,)) for s in storages], "many") == (tmp_path / "many.pt").read_bytes()


def test_all_dtypes_equal_torch_save(tmp_path: pathlib.Path) -> None:
    torch = _torch()
    theirs: dict[str, Any] = {}
    mine: dict[str, Any] = {}
    for dtype in sorted(DTYPES):
        size = 3 * DTYPE_ITEMSIZE[dtype]
        data = bytes(range(1, size + 1)) if dtype != "bool" else b"\x01\x00\x01"
        theirs[dtype] = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(getattr(torch, dtype))
        mine[dtype] = PtTensor(PtStorage(dtype, 3, data), (3,))
    torch.save(theirs, tmp_path / "d.pt")
    assert _write(mine, "d") == (tmp_path / "d.pt").read_bytes()


def test_tensor_attributes_equal_torch_save(tmp_path: pathlib.Path) -> None:
    """A tensor with Python attributes (ZeRO-3's flat groups carry ds_id) goes through _rebuild_from_type_v2."""
    torch = _torch()
    data = struct_floats([1.0, 2.0])
    flat = torch.frombuffer(bytearray(data), dtype=torch.float32).requires_grad_()
    flat.ds_id = "0_4"
    plain = torch.frombuffer(bytearray(data), dtype=torch.float32)
    torch.save({"groups": [flat], "plain": plain}, tmp_path / "o.pt")
    storage = PtStorage("float32", 2, data)
    mine = {
        "groups": [PtTensor(storage, (2,), requires_grad=True, state={"ds_id": "0_4"})],
        "plain": PtTensor(PtStorage("float32", 2, data), (2,), state={}),
    }
    assert _write(mine, "o") == (tmp_path / "o.pt").read_bytes()
    loaded = torch.load(tmp_path / "o.pt", weights_only=False)
    assert loaded["groups"][0].ds_id == "0_4" and loaded["groups"][0].requires_grad


# -- files DeepSpeed wrote, read and written back ---------------------------------------------

DATA = pathlib.Path(__file__).parent / "data"
UNIVERSAL_FILES = sorted(
    path
    for folder in (
        DATA / "fixtures" / "uc_z2_bf16_ws2" / "global_step3_universal" / "zero",
        DATA / "universal_z3" / "global_step3_universal" / "zero",
    )
    for path in folder.rglob("*.pt")
)


def _from_read(path: pathlib.Path) -> tuple[Any, str]:
    """``read(path)``'s tree with PtTensor leaves whose sources are their record names."""
    checkpoint = ckptkeys.read(path)
    with zipfile.ZipFile(path) as archive:
        folder = archive.namelist()[0].split("/")[0]
    return from_read(checkpoint.data, lambda record, dtype: f"{folder}/data/{record.key}"), folder


def _rewrite(path: pathlib.Path) -> bytes:
    obj, folder = _from_read(path)
    out = io.BytesIO()
    with zipfile.ZipFile(path) as archive:

        def copy(storage: PtStorage, stream: Any) -> None:
            stream.write(archive.read(storage.source))

        write_pt(out, obj, archive=folder, write_storage=copy)
    return out.getvalue()


@pytest.mark.parametrize("path", UNIVERSAL_FILES, ids=lambda p: str(p.relative_to(DATA)))
def test_universal_files_ds_to_universal_wrote_come_back_byte_for_byte(path: pathlib.Path) -> None:
    """What ds_to_universal wrote (torch.save): read, then written from the read tree, is the same file."""
    assert _rewrite(path) == path.read_bytes()


def test_universal_files_found() -> None:
    names = {p.name for p in UNIVERSAL_FILES}
    assert {"fp32.pt", "exp_avg.pt", "exp_avg_sq.pt", "step.pt", "optimizer_state.pt"} <= names
    assert len(UNIVERSAL_FILES) > 30


@pytest.mark.deepspeed
def test_deepspeed_objects_load_as_deepspeed_wrote_them(tmp_path: pathlib.Path) -> None:
    """LossScaler (NEWOBJ + BUILD), ZeroStageEnum (REDUCE), SubparamShape (a dataclass) come back as torch.load gives them."""
    torch = _torch()
    pytest.importorskip("deepspeed")
    from deepspeed.checkpoint.universal_checkpoint import SubparamShape
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    original = DATA / "fixtures" / "uc_z2_bf16_ws2" / "global_step3_universal" / "zero" / "optimizer_state.pt"
    # a file holding a SubparamShape, pickled as ds_to_universal pickles it (_save_checkpoint: torch.save)
    shaped = tmp_path / "fp32.pt"
    shape = SubparamShape(patterns=["qkv"], shape=((4, 4, 4), 8), partition_dim=0)
    torch.save({"param": torch.ones(12, 8), "cat_dim": 0, "sub_param_shape": shape}, shaped)
    for path in (original, shaped):
        rewritten = tmp_path / "again" / path.name
        rewritten.parent.mkdir(exist_ok=True)
        rewritten.write_bytes(_rewrite(path))
        theirs = torch.load(path, weights_only=False)
        mine = torch.load(rewritten, weights_only=False)
        assert list(mine) == list(theirs)
        for key, value in theirs.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(mine[key], value) and mine[key].dtype == value.dtype
            elif isinstance(value, LossScaler):
                assert type(mine[key]) is LossScaler and vars(mine[key]) == vars(value)
            else:
                assert type(mine[key]) is type(value) and mine[key] == value
        if path == original:
            assert mine["zero_stage"] is ZeroStageEnum.gradients
            assert isinstance(mine["loss_scaler"], LossScaler)
        else:
            assert mine["sub_param_shape"] == shape
        assert rewritten.read_bytes() == path.read_bytes()


# -- ZIP64: past 4 GiB --------------------------------------------------------------------------

_ZEROS = bytes(64 << 20)


class _SparseFile:
    """A file that skips the writes of ``_ZEROS`` (a hole): 4 GiB of storage at the cost of a seek."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def write(self, data: Any) -> int:
        view = memoryview(data)
        if view.obj is _ZEROS:
            self.raw.seek(view.nbytes, os.SEEK_CUR)
            return view.nbytes
        return int(self.raw.write(data))

    def flush(self) -> None:
        self.raw.flush()


def _zeros(storage: PtStorage, stream: Any) -> None:
    if storage.source != "zeros":
        stream.write(storage.source)
        return
    left = storage.nbytes
    while left:
        step = min(left, len(_ZEROS))
        stream.write(memoryview(_ZEROS)[:step])
        left -= step


def test_zip64_past_4_gib(tmp_path: pathlib.Path) -> None:
    """A storage of 4 GiB and more, and records past 4 GiB: miniz's ZIP64 extras and descriptors
    (measured on torch.save of the same object: the files are equal byte for byte)."""
    size = (1 << 32) + 100
    small = struct_floats([1.0, 2.0, 3.0])
    obj = {
        "big": PtTensor(PtStorage("uint8", size, "zeros"), (size,)),
        "e": PtTensor(PtStorage("float32", 0, b""), (0,)),
        "small": PtTensor(PtStorage("float32", 3, small), (3,)),
    }
    path = tmp_path / "big.pt"
    with open(path, "wb") as raw:
        write_pt(_SparseFile(raw), obj, archive="big", write_storage=_zeros)  # type: ignore[arg-type]
    assert path.stat().st_size == pt_size(obj, archive="big")
    checkpoint = ckptkeys.read(path)
    assert [t.shape for t in checkpoint.data.values()] == [(size,), (0,), (3,)]
    with zipfile.ZipFile(path) as archive:
        infos = {info.filename: info for info in archive.infolist()}
        assert infos["big/data/0"].file_size == size
        assert infos["big/data/2"].header_offset > 1 << 32
        assert archive.read("big/data/2") == small  # past 4 GiB, its CRC-32 checked
        assert archive.read("big/.data/serialization_id").isdigit()
    with open(path, "rb") as raw:  # the big record's data starts aligned, after its ZIP64 extra
        raw.seek(infos["big/data/0"].header_offset + 26)
        name_size, extra_size = struct.unpack("<HH", raw.read(4))
        assert (infos["big/data/0"].header_offset + 30 + name_size + extra_size) % 64 == 0
        assert raw.read(name_size + 4)[-4:] == b"\x01\x00\x10\x00"  # the ZIP64 field: both sizes
    if importlib.util.find_spec("torch") is not None:
        import torch

        loaded = torch.load(path, mmap=True)
        assert loaded["small"].tolist() == [1.0, 2.0, 3.0] and loaded["big"].shape == (size,)


def test_every_torch_zip_file_in_tests_data_written_back_byte_for_byte() -> None:
    """Every zip checkpoint under tests/data that read() reads (torch.save's files: DeepSpeed's,
    the clients', torch's own samples) comes back equal byte for byte from from_read + write_pt.

    Not compared: files holding a torch.Size (read() gives it as a tuple, as torch.load's
    values compare: model-states files, which a universal tag copies whole) and files with a
    Parameter or a meta tensor (from_read refuses them, said here).
    """
    compared = sized = refused = 0
    for path in sorted(DATA.rglob("*")):
        if not path.is_file() or "malicious" in path.parts or "fuzz_regressions" in path.parts:
            continue
        with open(path, "rb") as raw:
            if raw.read(4) != b"PK\x03\x04":
                continue
        try:
            checkpoint = ckptkeys.read(path)
        except ckptkeys.ReadError:
            continue  # a broken or hostile file: not torch.save's
        with zipfile.ZipFile(path) as archive:
            folder = archive.namelist()[0].split("/")[0]
            if b"torch\nSize\n" in archive.read(f"{folder}/data.pkl"):
                sized += 1
                continue
            try:
                obj = from_read(checkpoint.data, lambda record, dtype: f"{folder}/data/{record.key}")
            except ValueError as error:
                assert "a Parameter" in str(error) or "meta device" in str(error)
                refused += 1
                continue

            def copy(storage: PtStorage, stream: Any) -> None:
                stream.write(archive.read(storage.source))

            out = io.BytesIO()
            write_pt(out, obj, archive=folder, write_storage=copy)
        assert out.getvalue() == path.read_bytes(), path
        compared += 1
    assert compared >= 100 and sized and refused


def test_from_read_shares_storages_and_refuses_what_is_no_plain_tensor() -> None:
    from ckptkeys._read._torch import StorageInfo

    gpu = StorageInfo("0", "float32", 4, "cuda:0", "0")
    first = TensorInfo("float32", (2,), (1,), 0, gpu)
    second = TensorInfo("float32", (2,), (1,), 2, gpu)
    sources: list[tuple[str, str]] = []

    def source(record: StorageInfo, dtype: str) -> str:
        sources.append((record.key, dtype))
        return record.key

    tree = from_read({"a": [first, second, first], "o": (1, "x")}, source)
    a, b, again = tree["a"]
    assert a.storage is b.storage and again is a and sources == [("0", "float32")]
    assert a.storage.location == "cpu" and a.storage.numel == 4  # written from the CPU, as DTU writes it
    assert tree["o"] == (1, "x")
    for bad, message in [
        (TensorInfo("float32", (2,), (1,), 0, None), "meta device"),
        (TensorInfo("float32", (2,), (1,), 0, gpu, is_parameter=True), "a Parameter"),
        (TensorInfo("float32", (2,), (1,), 0, gpu, altered_by="its rebuild metadata sets neg"), "sets neg"),
        ([first, TensorInfo("int32", (2,), (1,), 0, gpu)], "viewed as float32 and int32"),
    ]:
        with pytest.raises(ValueError, match=message):
            from_read({"x": bad}, lambda r, d: None)


def test_state_dict_metadata_equals_torch_save(tmp_path: pathlib.Path) -> None:
    """A module's state_dict: an OrderedDict whose _metadata attribute torch pickles as BUILD state."""
    torch = _torch()
    module = torch.nn.Linear(3, 2)
    theirs = module.state_dict()
    torch.save(theirs, tmp_path / "model.pt")
    mine: OrderedDict[str, Any] = OrderedDict()
    for name, value in theirs.items():
        data = value.numpy().tobytes()
        mine[name] = PtTensor(PtStorage("float32", value.numel(), data), tuple(value.shape))
    mine._metadata = theirs._metadata  # type: ignore[attr-defined]
    written = _write(mine, "model")
    assert written == (tmp_path / "model.pt").read_bytes()
    (tmp_path / "mine.pt").write_bytes(written)
    assert torch.load(tmp_path / "mine.pt")._metadata == theirs._metadata
