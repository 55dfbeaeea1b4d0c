"""``read_safetensors``: the header as the format defines it, every rule of the crate's reader, against the
``safetensors`` package (3.11) on the same files, and hypothesis on the parser."""

from __future__ import annotations

import importlib.util
import io
import json
import pathlib
import re
import struct
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ckptkeys
from ckptkeys import ReadError, SafetensorsHeaderError, read_safetensors
from ckptkeys._cli._main import main
from ckptkeys._read._safetensors import DTYPE_BITS, MAX_HEADER_SIZE, is_safetensors, looks_like_safetensors

from .conftest import DATA

TRAINER_WEIGHTS = DATA / "clients" / "hf_trainer_z2_bf16" / "model.safetensors"


def _bytes(header: Any, data: bytes = b"", *, raw: bytes | None = None, pad: bool = True) -> bytes:
    """A safetensors file: ``header`` as JSON (or ``raw`` as the header's bytes), then ``data``."""
    text = raw if raw is not None else json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % 8)  # as the writers align the data
    return struct.pack("<Q", len(text)) + text + data


def _write(tmp_path: pathlib.Path, content: bytes, name: str = "model.safetensors") -> pathlib.Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


GOOD: dict[str, Any] = {
    "__metadata__": {"format": "pt"},
    "b": {"dtype": "BF16", "shape": [2], "data_offsets": [48, 52]},
    "a": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]},
    "e": {"dtype": "I64", "shape": [0], "data_offsets": [52, 52]},
}


def test_a_good_header_is_read_as_typed_data(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, _bytes(GOOD, bytes(52)))
    file = read_safetensors(path)
    assert [t.name for t in file.tensors] == ["b", "a", "e"]  # the header's order
    assert file.tensor("a") == ckptkeys.SafetensorsTensor("a", "F32", (3, 4), (0, 48))
    assert (file.tensor("a").numel, file.tensor("a").nbytes) == (12, 48)
    assert file.metadata == {"format": "pt"}
    assert file.size == path.stat().st_size
    assert file.data_start == 8 + file.header_size == path.stat().st_size - 52
    with pytest.raises(KeyError):
        file.tensor("nope")


def test_sub_byte_dtypes_in_whole_bytes(tmp_path: pathlib.Path) -> None:
    header = {"q": {"dtype": "F4", "shape": [2, 3], "data_offsets": [0, 3]}}
    assert read_safetensors(_write(tmp_path, _bytes(header, bytes(3)))).tensor("q").nbytes == 3
    odd = {"q": {"dtype": "F6_E2M3", "shape": [3], "data_offsets": [0, 2]}}  # 18 bits
    with pytest.raises(SafetensorsHeaderError, match="whole number of bytes") as caught:
        read_safetensors(_write(tmp_path, _bytes(odd, bytes(2))))
    assert caught.value.tensor == "q"


def _with_unknown(value: bytes) -> bytes:
    """A header of one tensor ``a`` (F32[2]) with a field the format does not know, set to ``value``."""
    return b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":' + value + b"}}"


# Headers the crate's reader takes though they are odd, with what ckptkeys reads from them: the
# tensors (name, dtype, shape) and the metadata.
ODD_BUT_READ: dict[str, tuple[bytes, dict[str, tuple[str, list[int]]], dict[str, str] | None]] = {
    "tensor-as-array": (b'{"a":["F32",[2],[0,8]]}', {"a": ("F32", [2])}, None),
    "leading-whitespace": (b' \t\r\n{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', {"a": ("F32", [2])}, None),
    "metadata-key-twice": (
        b'{"__metadata__":{"k":"1","k":"2"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
        {"a": ("F32", [2])},
        {"k": "2"},
    ),
    "unknown-key-twice": (_with_unknown(b'{"y":1,"y":2}'), {"a": ("F32", [2])}, None),
    "deep-125": (_with_unknown(b"[" * 125 + b"]" * 125), {"a": ("F32", [2])}, None),
    "large-float": (_with_unknown(b"-1e308"), {"a": ("F32", [2])}, None),
    "tiny-float": (_with_unknown(b"1e-400"), {"a": ("F32", [2])}, None),
    "negative-zero-unknown": (_with_unknown(b"-0"), {"a": ("F32", [2])}, None),
}


@pytest.mark.parametrize("case", sorted(ODD_BUT_READ))
def test_odd_headers_the_crate_reads_are_read(tmp_path: pathlib.Path, case: str) -> None:
    raw, tensors, metadata = ODD_BUT_READ[case]
    path = _write(tmp_path, _bytes(None, raw=raw, pad=False) + bytes(8))
    file = read_safetensors(path)
    assert ({t.name: (t.dtype, list(t.shape)) for t in file.tensors}, file.metadata) == (tensors, metadata)
    assert is_safetensors(str(path))  # the content sniff takes what the reader takes
    assert isinstance(ckptkeys.validate_path(path), ckptkeys.SafetensorsReport)
    if importlib.util.find_spec("safetensors") is not None:  # the package is on 3.11
        assert _package_view(path) == (tensors, metadata)


def _broken(name: str) -> tuple[bytes, str, str | None]:
    """Each way a header breaks the format's rules: the file, what the error says, the tensor named."""
    a = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    cases: dict[str, tuple[bytes, str, str | None]] = {
        "too-short": (b"\x10\x00\x00", "too short", None),
        "header-too-large": (struct.pack("<Q", MAX_HEADER_SIZE + 1) + b"{}", "at most 100000000", None),
        "header-past-end": (struct.pack("<Q", 64) + b"{}", "64-byte header, but the file ends", None),
        "not-utf8": (_bytes(None, raw=b'{"\xff":1}'), "not UTF-8", None),
        "not-json": (_bytes(None, raw=b"{nope}"), "not JSON", None),
        "nan": (_bytes(None, raw=b'{"a":{"dtype":"F32","shape":[NaN],"data_offsets":[0,0]}}'), "not JSON", None),
        "not-object": (_bytes([1, 2]), "a JSON list, not an object", None),
        "lone-surrogate": (_bytes(None, raw=b'{"__metadata__":{"k":"\\ud800"}}'), "surrogate pair", None),
        "duplicate": (
            _bytes(None, raw=b'{"a":' + json.dumps(a).encode() + b',"a":' + json.dumps(a).encode() + b"}", pad=True)
            + bytes(8),
            "named twice",
            "a",
        ),
        "entry-not-object": (_bytes({"a": 1}), "not a tensor's object", "a"),
        "array-of-4": (_bytes({"a": ["F32", [2], [0, 8], 1]}, bytes(8)), "not [dtype, shape, data_offsets]", "a"),
        # serde_json's recursion limit: 128 levels, counting the header's object and the tensor's.
        "too-deep": (_bytes(None, raw=_with_unknown(b"[" * 126 + b"]" * 126)) + bytes(8), "nests more than 127", None),
        "out-of-range": (_bytes(None, raw=_with_unknown(b"1e400")) + bytes(8), "out of range", None),
        "big-integer": (_bytes(None, raw=_with_unknown(b"9" * 310)) + bytes(8), "out of range", None),
        "negative-zero-shape": (
            _bytes(None, raw=b'{"a":{"dtype":"F32","shape":[-0],"data_offsets":[0,0]}}'),
            "unsigned",
            "a",
        ),
        "negative-zero-offset": (
            _bytes(None, raw=b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[-0,8]}}') + bytes(8),
            "two unsigned",
            "a",
        ),
        "metadata-twice": (
            _bytes(None, raw=b'{"__metadata__":{},"a":' + json.dumps(a).encode() + b',"__metadata__":{}}') + bytes(8),
            "__metadata__ twice",
            None,
        ),
        "field-twice": (
            _bytes(None, raw=b'{"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}}') + bytes(8),
            "gives 'dtype' twice",
            "a",
        ),
        "no-dtype": (_bytes({"a": {"shape": [2], "data_offsets": [0, 8]}}, bytes(8)), "has no 'dtype'", "a"),
        "unknown-dtype": (_bytes({"a": {**a, "dtype": "F128"}}, bytes(8)), "dtype 'F128'", "a"),
        "negative-shape": (_bytes({"a": {**a, "shape": [-2]}}, bytes(8)), "unsigned", "a"),
        "float-shape": (_bytes({"a": {**a, "shape": [2.0]}}, bytes(8)), "unsigned", "a"),
        "bool-shape": (_bytes({"a": {**a, "shape": [True]}}, bytes(8)), "unsigned", "a"),
        "three-offsets": (_bytes({"a": {**a, "data_offsets": [0, 4, 8]}}, bytes(8)), "two unsigned", "a"),
        "metadata-not-strings": (_bytes({"__metadata__": {"n": 1}, "a": a}, bytes(8)), "strings to strings", None),
        "gap": (_bytes({"a": {**a, "data_offsets": [4, 12]}}, bytes(12)), "leaves a gap", "a"),
        "overlap": (
            _bytes({"a": a, "b": {**a, "data_offsets": [4, 12]}}, bytes(12)),
            "overlaps the one before",
            "b",
        ),
        "backwards": (
            _bytes({"a": {**a, "data_offsets": [0, 0]}, "b": {**a, "data_offsets": [0, 8]}}, bytes(8)),
            "span 0",
            "a",
        ),
        "wrong-size": (
            _bytes({"a": {**a, "shape": [3]}}, bytes(8)),
            "(12 bytes), but its data_offsets [0, 8] span 8",
            "a",
        ),
        "overflow": (_bytes({"a": {**a, "shape": [2**40, 2**40]}}, bytes(8)), "too large", "a"),
        "cut-short": (_bytes({"a": a}, bytes(6)), "cut short", None),
        "trailing-bytes": (_bytes({"a": a}, bytes(10)), "covered by no tensor", None),
    }
    return cases[name]


BROKEN = [
    "too-short", "header-too-large", "header-past-end", "not-utf8", "not-json", "nan", "not-object", "lone-surrogate",
    "duplicate",
    "entry-not-object", "array-of-4", "too-deep", "out-of-range", "big-integer", "negative-zero-shape",
    "negative-zero-offset", "metadata-twice", "field-twice", "no-dtype", "unknown-dtype", "negative-shape",
    "float-shape", "bool-shape", "three-offsets",
    "metadata-not-strings", "gap", "overlap", "backwards", "wrong-size", "overflow", "cut-short", "trailing-bytes",
]  # fmt: skip


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_header_is_a_read_error_naming_file_and_tensor(tmp_path: pathlib.Path, case: str) -> None:
    content, message, tensor = _broken(case)
    path = _write(tmp_path, content)
    with pytest.raises(SafetensorsHeaderError, match=re.escape(message)) as caught:
        read_safetensors(path)
    assert isinstance(caught.value, ReadError)
    assert caught.value.path == str(path) and str(caught.value).startswith(f"{path}: ")
    assert caught.value.tensor == tensor
    if tensor is not None:
        assert f"tensor {tensor!r}" in str(caught.value)


@pytest.mark.parametrize("case", BROKEN)
def test_the_command_exits_2_on_a_broken_header(tmp_path: pathlib.Path, case: str) -> None:
    path = _write(tmp_path, _broken(case)[0])
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(["validate", str(path)])
    assert status == 2
    assert err.getvalue().startswith(f"ckptkeys validate: {path}: ")


def test_the_safetensors_package_refuses_the_same_headers(tmp_path: pathlib.Path) -> None:
    safetensors = pytest.importorskip("safetensors")
    agree = []
    for case in BROKEN:
        path = _write(tmp_path, _broken(case)[0], f"{case}.safetensors")
        try:
            with safetensors.safe_open(str(path), "numpy"):
                refused = False
        except Exception:  # SafetensorError, and others for an unreadable file
            refused = True
        agree.append((case, refused))
    # The crate keeps the last of two equal names; ckptkeys refuses them (two JSON readers may differ).
    assert [case for case, refused in agree if not refused] == ["duplicate"]


def test_content_decides_not_the_name(tmp_path: pathlib.Path) -> None:
    content = _bytes(GOOD, bytes(52))
    renamed = _write(tmp_path, content, "weights.bin")
    assert is_safetensors(str(renamed))
    report = ckptkeys.validate_path(renamed)
    assert isinstance(report, ckptkeys.SafetensorsReport)
    torch_file = DATA / "plain" / "state_dict.pt"
    assert not is_safetensors(str(torch_file))
    assert not is_safetensors(str(DATA / "plain" / "state_dict_legacy.pt"))
    assert not looks_like_safetensors(b"{}", 10)


def test_validate_and_inspect_say_what_it_is(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, _bytes(GOOD, bytes(52)))
    (problem,) = ckptkeys.validate(path)
    assert (problem.code, problem.severity) == ("not-deepspeed", "info")
    assert problem.message == "not a DeepSpeed checkpoint: a safetensors file of 3 tensors (BF16 1, F32 1, I64 1)"
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["inspect", str(path)]) == 0
    text = out.getvalue()
    for line in ("__metadata__: format='pt'", "a: F32[3, 4]", "b: BF16[2]", "e: I64[0]", "total: 3 tensors"):
        assert line in text
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["inspect", "--json", str(path)]) == 0
    (entry,) = json.loads(out.getvalue())["files"]
    assert entry["format"] == "safetensors"
    assert entry["safetensors"]["metadata"] == {"format": "pt"}
    assert entry["safetensors"]["tensors"][1] == {"name": "a", "dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]}
    assert entry["tensors"]["F32"] == {"count": 1, "numel": 12, "bytes": 48}


def test_a_real_transformers_file() -> None:
    file = read_safetensors(TRAINER_WEIGHTS)
    assert len(file.tensors) == 29
    assert {t.dtype for t in file.tensors} == {"BF16"}
    assert file.metadata == {"format": "pt"}


# -- against the safetensors package (3.11) -------------------------------------------------------


def _package_view(path: pathlib.Path) -> tuple[dict[str, tuple[str, list[int]]], dict[str, str] | None]:
    safetensors = pytest.importorskip("safetensors")
    with safetensors.safe_open(str(path), "numpy") as handle:
        tensors = {}
        for name in handle.keys():  # noqa: SIM118 (a handle, not a dict)
            part = handle.get_slice(name)
            tensors[name] = (part.get_dtype(), list(part.get_shape()))
        return tensors, handle.metadata()


def test_same_names_dtypes_shapes_metadata_as_the_package(tmp_path: pathlib.Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    tensors = {
        "f32": torch.zeros(3, 4),
        "bf16": torch.ones(5, dtype=torch.bfloat16),
        "fp8": torch.zeros(4, dtype=torch.float8_e4m3fn),
        "bool": torch.zeros(2, 2, dtype=torch.bool),
        "u16": torch.zeros(3, dtype=torch.uint16),
        "c64": torch.zeros(2, dtype=torch.complex64),
        "scalar": torch.tensor(7),
        "empty": torch.zeros(0, 3),
    }
    path = tmp_path / "all.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt", "note": "ünïcode"})
    file = read_safetensors(path)
    ours = {t.name: (t.dtype, list(t.shape)) for t in file.tensors}
    assert (ours, file.metadata) == _package_view(path)
    for real in (TRAINER_WEIGHTS, DATA / "clients" / "hf_trainer_z2_bf16" / "checkpoint-2" / "model.safetensors"):
        file = read_safetensors(real)
        assert ({t.name: (t.dtype, list(t.shape)) for t in file.tensors}, file.metadata) == _package_view(real)


# -- hypothesis ----------------------------------------------------------------------------------

_NAMES = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12).filter(
    lambda n: n != "__metadata__"
)
_ENTRIES = st.dictionaries(
    _NAMES,
    st.tuples(st.sampled_from(sorted(DTYPE_BITS)), st.lists(st.integers(0, 5), max_size=3)),
    max_size=6,
)


def _layout(entries: dict[str, tuple[str, list[int]]]) -> tuple[dict[str, Any], int]:
    header: dict[str, Any] = {}
    offset = 0
    for name, (dtype, shape) in entries.items():
        bits = DTYPE_BITS[dtype]
        numel = 1
        for n in shape:
            numel *= n
        if numel * bits % 8:
            shape = [*shape, 8]  # a whole number of bytes
            numel *= 8
        size = numel * bits // 8
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    return header, offset


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=_ENTRIES, metadata=st.none() | st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3))
def test_any_valid_header_is_read_back(
    tmp_path: pathlib.Path, entries: dict[str, tuple[str, list[int]]], metadata: dict[str, str] | None
) -> None:
    header, size = _layout(entries)
    if metadata is not None:
        header["__metadata__"] = metadata
    path = _write(tmp_path, _bytes(header, bytes(size)))
    file = read_safetensors(path)
    assert file.metadata == metadata
    assert {t.name: (t.dtype, list(t.shape), list(t.data_offsets)) for t in file.tensors} == {
        name: (e["dtype"], e["shape"], e["data_offsets"]) for name, e in header.items() if name != "__metadata__"
    }


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=_ENTRIES, flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=3),
       cut=st.integers(0, 10**6))  # fmt: skip
def test_any_damage_is_read_or_a_header_error(
    tmp_path: pathlib.Path, entries: dict[str, tuple[str, list[int]]], flips: list[tuple[int, int]], cut: int
) -> None:
    header, size = _layout(entries)
    content = bytearray(_bytes(header, bytes(size)))
    for where, value in flips:
        content[where % len(content)] = value
    content = content[: max(1, len(content) - cut % 4)] if cut % 3 == 0 else content
    path = _write(tmp_path, bytes(content))
    try:
        file = read_safetensors(path)
    except SafetensorsHeaderError:
        accepted = False
    else:
        accepted = True
        assert sum(t.nbytes for t in file.tensors) == file.size - file.data_start
    if importlib.util.find_spec("safetensors") is None:  # the package is on 3.11 only
        return
    import safetensors

    try:
        with safetensors.safe_open(str(path), "numpy") as handle:
            names = set(handle.keys())
    except Exception:  # the package's SafetensorError, or a header its JSON reader refuses
        package = False
    else:
        package = True
        if accepted:
            assert names == {t.name for t in file.tensors}
    if accepted != package:  # the one difference: a name given twice
        assert not accepted and b'"' in content
        raw = bytes(content[8 : 8 + struct.unpack("<Q", bytes(content[:8]))[0]])
        duplicated: list[bool] = []

        def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
            duplicated.append(len({k for k, _ in items}) != len(items))
            return dict(items)

        json.loads(raw, object_pairs_hook=pairs)
        assert any(duplicated)


def test_read_of_a_safetensors_file_says_what_it_is() -> None:
    with pytest.raises(ckptkeys.NotACheckpointError, match="is a safetensors file, not a torch checkpoint"):
        ckptkeys.read(TRAINER_WEIGHTS)


def test_reprs_are_one_line() -> None:
    file = read_safetensors(TRAINER_WEIGHTS)
    assert (
        repr(file) == f"<SafetensorsFile {str(TRAINER_WEIGHTS)!r}: 29 tensors, BF16, 64,768 bytes, metadata ['format']>"
    )
    report = ckptkeys.validate_path(TRAINER_WEIGHTS)
    assert repr(report) == f"<SafetensorsReport {str(TRAINER_WEIGHTS)!r}: 29 tensors, 1 info>"


def test_a_file_torch_would_unpickle_too_is_refused_as_ambiguous(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A safetensors/pickle polyglot would hide what the pickle names: refused with the globals.

    No such file is known (the length prefix is no pickle: torch.load and ckptkeys' reader both
    stop at once, naming nothing, as the first test shows); the decision is tested by making the
    torch reader see a pickle that names a global, or a whole checkpoint.
    """
    from ckptkeys._check import _safetensors_files
    from ckptkeys._read._globalref import GlobalRef

    path = _write(tmp_path, _bytes(GOOD, bytes(52)), "model.pt")
    with pytest.raises(ckptkeys.NotACheckpointError, match="is a safetensors file"):
        ckptkeys.read(path)  # what really happens: no pickle, no global
    assert isinstance(ckptkeys.validate_path(path), ckptkeys.SafetensorsReport)

    named = ckptkeys.CorruptCheckpointError(str(path), "truncated pickle")
    named.globals = (GlobalRef("os", "system"),)

    def fails(_: str) -> Any:
        raise named

    monkeypatch.setattr(_safetensors_files, "read", fails)
    with pytest.raises(ckptkeys.AmbiguousFileError, match=r"torch\.load and safetensors read it differently") as caught:
        ckptkeys.validate_path(path)
    assert caught.value.globals == named.globals
    status, _, err = _run_cli("validate", str(path))
    assert status == 2 and "os.system" in err

    monkeypatch.setattr(_safetensors_files, "read", lambda _: ckptkeys.read(DATA / "plain" / "state_dict.pt"))
    whole = r"reads it as a torch checkpoint \(zip\), and its pickles name collections\.OrderedDict"
    with pytest.raises(ckptkeys.AmbiguousFileError, match=whole) as caught:
        ckptkeys.validate_path(path)
    assert caught.value.globals == ckptkeys.read(DATA / "plain" / "state_dict.pt").globals  # every one torch names


def _run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


# JSON the crate's serde_json reads differently from Python's json, for a field the format does not
# know or for a tensor's fields: numbers at and past f64's range, -0, floats, deep nesting, keys given
# twice, a tensor as an array, whitespace before the header.
_ODD_VALUES = st.recursive(
    st.sampled_from(
        [b"-0", b"0", b"1e308", b"1e309", b"-1e400", b"1e-400", b"1.0", b"9" * 309, b"9" * 310, b'"s"', b"null"]
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=2).map(lambda items: b"[" + b",".join(items) + b"]"),
        st.lists(inner, max_size=2).map(lambda items: b"{" + b",".join(b'"k":' + i for i in items) + b"}"),
        st.integers(120, 130).map(lambda depth: b"[" * depth + b"]" * depth),
    ),
    max_leaves=4,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    extra=_ODD_VALUES,
    shape=st.sampled_from([b"2", b"-0", b"2.0", b"2e0"]),
    as_array=st.booleans(),
    lead=st.sampled_from([b"", b" ", b"\n\t "]),
)
def test_odd_json_is_read_as_the_package_reads_it(
    tmp_path: pathlib.Path, extra: bytes, shape: bytes, as_array: bool, lead: bytes
) -> None:
    if as_array:
        tensor = b'["F32",[' + shape + b'],[0,8]]'
    else:
        tensor = b'{"dtype":"F32","shape":[' + shape + b'],"data_offsets":[0,8],"x":' + extra + b"}"
    empty = b'"b":{"dtype":"U8","shape":[0],"data_offsets":[8,8],"y":' + extra + b"}"
    raw = lead + b'{"a":' + tensor + b',"__metadata__":null,' + empty + b"}"
    path = _write(tmp_path, _bytes(None, raw=raw, pad=False) + bytes(8))
    try:
        file = read_safetensors(path)
    except SafetensorsHeaderError:
        ours = None
    else:
        ours = {t.name: (t.dtype, list(t.shape)) for t in file.tensors}
        assert is_safetensors(str(path))
    if importlib.util.find_spec("safetensors") is None:  # the package is on 3.11 only
        return
    try:
        theirs: dict[str, tuple[str, list[int]]] | None = _package_view(path)[0]
    except Exception:  # the package's SafetensorError
        theirs = None
    assert ours == theirs


def test_depth_counts_a_value_a_repeated_key_drops(tmp_path: pathlib.Path) -> None:
    # Found by the hypothesis comparison below: {"k": <125 deep>, "k": -0} keeps only -0 once parsed,
    # but serde_json counts the dropped value's depth too (1 header + 1 tensor + 1 object + 125 = 128).
    deep = b"[" * 125 + b"]" * 125
    empty = b'"b":{"dtype":"U8","shape":[0],"data_offsets":[8,8],"y":{"k":' + deep + b',"k":-0}}'
    raw = b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},' + empty + b"}"
    path = _write(tmp_path, _bytes(None, raw=raw, pad=False) + bytes(8))
    with pytest.raises(SafetensorsHeaderError, match="nests more than 127 deep"):
        read_safetensors(path)
    shallower = raw.replace(deep, b"[" * 124 + b"]" * 124)
    path.write_bytes(_bytes(None, raw=shallower, pad=False) + bytes(8))
    assert [t.name for t in read_safetensors(path).tensors] == ["a", "b"]
