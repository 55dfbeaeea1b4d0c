"""Export writes the values torch.load gives, or refuses naming the tensor: files built pickle by pickle.

Each file is a ZeRO-0 tag folder made by tests/export_values.py without torch; the expected bytes
are worked out here from what torch's loader does (tests/test_export_values_torch.py checks the
same files, and random ones, against torch.load itself).
"""

from __future__ import annotations

import pathlib
import struct
import sys

import pytest

import ckptkeys
from ckptkeys._export._tensor_bytes import _swap
from tests.export_values import FILE, Case, Storage, Tensor, safetensors_file, swapped

VALUES = struct.pack("<4f", 1.5, -2.0, 3.25, 1e-3)


def _export(
    case: Case, tmp_path: pathlib.Path, dtype: ckptkeys.Dtype = "auto"
) -> dict[str, tuple[str, list[int], bytes]]:
    tag = tmp_path / "ckpt" / "global_step1"
    case.write(tag)
    ckptkeys.export(tag, tmp_path / "out", dtype=dtype, fsync=False)
    return safetensors_file(tmp_path / "out" / "model.safetensors")


def _refusal(case: Case, tmp_path: pathlib.Path) -> str:
    tag = tmp_path / "ckpt" / "global_step1"
    case.write(tag)
    with pytest.raises(ckptkeys.ExportError) as caught:
        ckptkeys.plan_export(tag)
    assert caught.value.path == str(tag / FILE)
    return caught.value.reason


def _plain(dtype: str, data: bytes, *, byteorder: bytes | None = b"little", numel: int | None = None) -> Case:
    from tests.export_values import DTYPES

    count = len(data) // DTYPES[dtype][1] if numel is None else numel
    return Case([Storage("0", dtype, count)], {"w": Tensor(0, 0, (count,), (1,))}, {"0": data}, byteorder)


def test_a_little_endian_file_is_copied_as_it_is(tmp_path: pathlib.Path) -> None:
    assert _export(_plain("float32", VALUES), tmp_path)["w"] == ("F32", [4], VALUES)


@pytest.mark.parametrize(
    ("dtype", "unit", "label"),
    [("float32", 4, "F32"), ("int64", 8, "I64"), ("float16", 2, "F16"), ("complex64", 4, "C64"),
     ("uint8", 1, "U8"), ("bool", 1, "BOOL")],
)  # fmt: skip
def test_a_big_endian_file_is_swapped_as_torch_swaps_it(
    dtype: str, unit: int, label: str, tmp_path: pathlib.Path
) -> None:
    # torch.load swaps each storage in units of its element size, each half of a complex alone,
    # and leaves one-byte dtypes as they are.
    data = bytes(range(64))
    written = _export(_plain(dtype, data, byteorder=b"big"), tmp_path)["w"]
    assert written[0] == label
    assert written[2] == (swapped(data, unit) if sys.byteorder == "little" else data)


def test_a_big_endian_file_is_swapped_before_a_cast(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("numpy")
    big = struct.pack(">4e", 1.5, -2.0, 3.25, 65504.0)
    written = _export(_plain("float16", big, byteorder=b"big"), tmp_path, dtype="fp32")["w"]
    assert written == ("F32", [4], struct.pack("<4f", 1.5, -2.0, 3.25, 65504.0))


def test_a_big_endian_tensor_larger_than_a_copy_step_is_swapped_across_steps(tmp_path: pathlib.Path) -> None:
    values = list(range(200_000))  # 800 KB: several 256 KiB steps of the swapping copy
    written = _export(_plain("int32", struct.pack(f">{len(values)}i", *values), byteorder=b"big"), tmp_path)["w"]
    assert written[2] == struct.pack(f"<{len(values)}i", *values)


def test_a_file_without_a_byteorder_record_is_little_endian(tmp_path: pathlib.Path) -> None:
    assert _export(_plain("float32", VALUES, byteorder=None), tmp_path)["w"][2] == VALUES


@pytest.mark.parametrize(
    ("unit", "length", "expected"),
    [(2, 4, b"abdcfegh"), (4, 4, b"abfedcgh"), (8, 8, b"abcdefgh"[::-1]), (3, 3, b"abedcfgh")],
)
def test_swap_reverses_every_unit_in_place(unit: int, length: int, expected: bytes) -> None:
    data = bytearray(b"abcdefgh")
    view = memoryview(data)
    start = 0 if length == 8 else 2
    _swap(view[start : start + length], unit)
    assert bytes(data) == expected


def test_keys_2_and_str_2_are_two_storages_of_one_record(tmp_path: pathlib.Path) -> None:
    # torch.load's loaded_storages is a dict by the pickled key: 2 and '2' are two entries, each
    # reading record data/2 with its own dtype (ckptkeys merged them: int64 written as float32).
    data = struct.pack("<2q", 7, -1)
    case = Case(
        [Storage(2, "float32", 4), Storage("2", "int64", 2)],
        {"f": Tensor(0, 0, (4,), (1,)), "i": Tensor(1, 0, (2,), (1,))},
        {"2": data},
    )
    tag = tmp_path / "ckpt" / "global_step1"
    case.write(tag)
    checkpoint = ckptkeys.read(tag / FILE)
    assert {k: (s.key, s.dtype) for k, s in checkpoint.storages.items()} == {2: ("2", "float32"), "2": ("2", "int64")}
    written = _export(case, tmp_path)
    assert written["f"] == ("F32", [4], data)
    assert written["i"] == ("I64", [2], data)


def test_a_key_seen_twice_is_the_first_storage_as_in_torch(tmp_path: pathlib.Path) -> None:
    # The second persistent id of key '0' names int32, but torch hands back the float32 storage.
    case = Case(
        [Storage("0", "float32", 4), Storage("0", "int32", 4)],
        {"a": Tensor(0, 0, (4,), (1,)), "b": Tensor(1, 0, (2,), (1,))},
        {"0": VALUES},
    )
    written = _export(case, tmp_path)
    assert written["b"] == ("F32", [2], VALUES[:8])


@pytest.mark.parametrize(
    ("key", "record"),
    [(0, "0"), ("0\x00anything", "0"), (b"0", "b'0'"), (1.0, "1.0")],
)
def test_storage_keys_name_records_as_torch_formats_them(key: object, record: str, tmp_path: pathlib.Path) -> None:
    case = Case([Storage(key, "float32", 4)], {"w": Tensor(0, 0, (4,), (1,))}, {record: VALUES})
    assert _export(case, tmp_path)["w"][2] == VALUES


def test_bytes_type_name_and_location_are_decoded_as_torch_does(tmp_path: pathlib.Path) -> None:
    storage = Storage("0", "float32", 4, typename=b"storage", location=b"cpu")
    case = Case([storage], {"w": Tensor(0, 0, (4,), (1,))}, {"0": VALUES})
    assert _export(case, tmp_path)["w"][2] == VALUES


@pytest.mark.parametrize("extra", [-4, 4])
def test_a_record_of_another_size_than_the_pickle_says_is_refused(extra: int, tmp_path: pathlib.Path) -> None:
    case = _plain("float32", VALUES + bytes(max(extra, 0)), numel=4)
    if extra < 0:
        case.records["0"] = VALUES[:extra]
    case.tensors["w"] = Tensor(0, 0, (1,), (1,))
    tag = tmp_path / "ckpt" / "global_step1"
    case.write(tag)
    with pytest.raises(ckptkeys.CorruptCheckpointError, match=r"archive/data/0 holds \d+ bytes, the pickle says 16"):
        ckptkeys.read(tag / FILE)


@pytest.mark.parametrize(("metadata", "named"), [({"neg": True}, "neg"), ({"conj": True}, "conj"), ([1], "list")])
def test_negation_and_conjugation_metadata_are_refused(metadata: object, named: str, tmp_path: pathlib.Path) -> None:
    case = _plain("float32", VALUES)
    case.tensors["w"].metadata = metadata
    reason = _refusal(case, tmp_path)
    assert "module['w']" in reason
    assert named in reason


@pytest.mark.parametrize("metadata", [{}, {"other": True}])
def test_metadata_torch_ignores_changes_nothing(metadata: object, tmp_path: pathlib.Path) -> None:
    case = _plain("float32", VALUES)
    case.tensors["w"].metadata = metadata
    assert _export(case, tmp_path)["w"][2] == VALUES


@pytest.mark.parametrize("wrap", ["parameter_state", "from_type"])
def test_a_state_that_replaces_data_is_refused(wrap: str, tmp_path: pathlib.Path) -> None:
    case = Case(
        [Storage("0", "float32", 4), Storage("1", "float32", 4)],
        {"w": Tensor(0, 0, (4,), (1,), wrap=wrap, state={"data": "@other"}), "other": Tensor(1, 0, (4,), (1,))},
        {"0": VALUES, "1": bytes(16)},
    )
    reason = _refusal(case, tmp_path)
    assert "module['w']" in reason
    assert "'data'" in reason


@pytest.mark.parametrize(
    ("state", "named"),
    [(({"x": 1}, {"y": 2}, None), "tuple of 3"), ([("data", 1)], "list"), ({3: 1}, "3"),
     ((None, {"grad": 1}), "'grad'")],
)  # fmt: skip
def test_states_torch_cannot_apply_or_that_set_tensor_attributes_are_refused(
    state: object, named: str, tmp_path: pathlib.Path
) -> None:
    case = _plain("float32", VALUES)
    case.tensors["w"].wrap, case.tensors["w"].state = "parameter_state", state
    reason = _refusal(case, tmp_path)
    assert "module['w']" in reason
    assert named in reason


@pytest.mark.parametrize("state", [None, {}, {"note": "kept"}, ({"note": 1}, {"_slot": 2})])
def test_plain_attributes_in_a_state_change_nothing(state: object, tmp_path: pathlib.Path) -> None:
    case = _plain("float32", VALUES)
    case.tensors["w"].wrap, case.tensors["w"].state = "parameter_state", state
    assert _export(case, tmp_path)["w"][2] == VALUES


def test_a_subclass_is_refused_naming_it(tmp_path: pathlib.Path) -> None:
    case = _plain("float32", VALUES)
    case.tensors["w"].wrap, case.tensors["w"].state = "subclass", {}
    reason = _refusal(case, tmp_path)
    assert "module['w']" in reason
    assert "tests.value_tensor.ValueTensor" in reason


def test_a_swap_unit_that_splits_the_elements_is_refused(tmp_path: pathlib.Path) -> None:
    # A float32 storage read as uint16 (_rebuild_tensor_v3): torch swaps four bytes at a time.
    case = Case([Storage("0", "float32", 4)], {"w": Tensor(0, 1, (2,), (1,), dtype="uint16")}, {"0": VALUES}, b"big")
    if sys.byteorder != "little":
        pytest.skip("a big-endian machine swaps little-endian files")
    reason = _refusal(case, tmp_path)
    assert "module['w']" in reason
    assert "units of 4 bytes" in reason


@pytest.mark.parametrize(
    ("shape", "stride", "offset"),
    [((2, 2), (1, 2), 0), ((2, 2), (0, 1), 0), ((3,), (2,), 0)],
)
def test_views_that_are_not_one_run_are_refused(
    shape: tuple[int, ...], stride: tuple[int, ...], offset: int, tmp_path: pathlib.Path
) -> None:
    case = Case([Storage("0", "float32", 8)], {"w": Tensor(0, offset, shape, stride)}, {"0": VALUES * 2})
    reason = _refusal(case, tmp_path)
    assert "module['w']" in reason
    assert "not contiguous" in reason


@pytest.mark.parametrize(
    ("shape", "stride", "offset", "elements"),
    [((2,), (1,), 2, slice(2, 4)), ((1, 3), (7, 1), 1, slice(1, 4)), ((2, 1), (1, 5), 0, slice(0, 2)),
     ((), (), 3, slice(3, 4))],
)  # fmt: skip
def test_offsets_and_strides_of_size_one_dimensions_are_exported(
    shape: tuple[int, ...], stride: tuple[int, ...], offset: int, elements: slice, tmp_path: pathlib.Path
) -> None:
    # torch's .contiguous() of these is the run of elements they start at (a size-1 dimension's
    # stride is never used).
    case = Case([Storage("0", "float32", 4)], {"w": Tensor(0, offset, shape, stride)}, {"0": VALUES})
    expected = VALUES[elements.start * 4 : elements.stop * 4]
    assert _export(case, tmp_path)["w"] == ("F32", list(shape), expected)


def test_the_plan_says_which_sources_are_swapped(tmp_path: pathlib.Path) -> None:
    documents = {}
    for order in (b"big", b"little"):
        tag = tmp_path / order.decode() / "global_step1"
        _plain("float32", VALUES, byteorder=order).write(tag)
        documents[order] = ckptkeys.plan_export(tag).as_dict()["tensors"][0]["sources"][0]["swap"]
    little = sys.byteorder == "little"
    assert documents == {b"big": 4 if little else 1, b"little": 1 if little else 4}


@pytest.mark.parametrize(
    ("storage", "tensor"),
    [(Storage("0", "int32", 4), Tensor(0, 0, (4,), (1,), requires_grad=True)),  # only floats and complex
     (Storage("0", "uint8", 16, untyped=True), Tensor(0, 0, (4,), (1,), dtype="float32", requires_grad=True))],
)  # fmt: skip
def test_a_rebuild_torch_load_fails_on_is_refused(storage: Storage, tensor: Tensor, tmp_path: pathlib.Path) -> None:
    # _rebuild_tensor_v3 makes torch.empty(..., requires_grad=True) and then set_()s it in place,
    # which torch refuses for a leaf that requires grad: torch 2.13 cannot load such a file.
    tag = tmp_path / "ckpt" / "global_step1"
    Case([storage], {"w": tensor}, {"0": VALUES}).write(tag)
    with pytest.raises(ckptkeys.CorruptCheckpointError, match="requires_grad"):
        ckptkeys.read(tag / FILE)


def test_a_float_tensor_that_requires_grad_is_exported(tmp_path: pathlib.Path) -> None:
    case = Case([Storage("0", "float32", 4)], {"w": Tensor(0, 0, (4,), (1,), requires_grad=True)}, {"0": VALUES})
    assert _export(case, tmp_path)["w"][2] == VALUES


def test_an_empty_storage_is_read_again_with_each_mentions_dtype(tmp_path: pathlib.Path) -> None:
    # torch keeps no empty storage in loaded_storages: a key mentioned again is loaded again, with
    # the dtype that mention names (found by fuzz/fuzz_export_values.py: int32 was written as F32).
    case = Case(
        [Storage("0", "float32", 0), Storage("0", "int32", 0)],
        {"a": Tensor(0, 0, (0,), (1,)), "b": Tensor(1, 0, (0,), (1,))},
        {"0": b""},
    )
    written = _export(case, tmp_path)
    assert (written["a"][0], written["b"][0]) == ("F32", "I32")
