"""ckptkeys.read(): real checkpoints, both torch formats, and bad input."""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import pickle
import shutil
import struct
import zipfile
from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ckptkeys
from ckptkeys import (
    Checkpoint,
    CorruptCheckpointError,
    GlobalRef,
    LimitError,
    Limits,
    ModuleKeys,
    NotACheckpointError,
    Opaque,
    OptimFileKeys,
    OptimizerKeys,
    ReadError,
    TensorInfo,
)

from .conftest import DATA, FIXTURES

CHECKPOINT_FILES = sorted(FIXTURES.glob("**/*.pt"))
TORCH_FILES = sorted((DATA / "torch").glob("*.pt"))


def test_fixtures_are_present() -> None:
    assert len(CHECKPOINT_FILES) == 59
    assert len(TORCH_FILES) == 3


@pytest.mark.parametrize("path", CHECKPOINT_FILES + TORCH_FILES, ids=lambda p: str(p.relative_to(DATA)))
def test_every_file_reads(path: pathlib.Path) -> None:
    checkpoint = ckptkeys.read(path)
    assert isinstance(checkpoint, Checkpoint)
    assert checkpoint.path == str(path)
    assert checkpoint.size == path.stat().st_size
    assert checkpoint.byteorder == "little"
    for tensor in _tensors(checkpoint.data):
        if tensor.storage is not None:
            assert checkpoint.storages[tensor.storage.key] is tensor.storage


def _tensors(value: Any) -> list[TensorInfo]:
    found: list[TensorInfo] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, TensorInfo):
            found.append(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        elif isinstance(item, Opaque):
            stack.extend([item.args, item.state, item.items, item.dict_items])
    return found


def test_zero2_optimizer_shard() -> None:
    path = FIXTURES / "z1_fp16_ws2" / "global_step3" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    checkpoint = ckptkeys.read(path)
    assert checkpoint.format == "zip"
    state = checkpoint.data[OptimFileKeys.OPTIMIZER_STATE_DICT]
    stage = state[OptimizerKeys.ZERO_STAGE]
    assert isinstance(stage, Opaque)
    assert stage.cls == GlobalRef("deepspeed.runtime.zero.config", "ZeroStageEnum")
    assert stage.args == (1,)
    scaler = state[OptimizerKeys.LOSS_SCALER]
    assert scaler.qualname == "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler"
    assert scaler.state["cur_scale"] == 256 and scaler.state["dynamic"] is True
    assert scaler.state["dtype"] == GlobalRef("torch", "float16")
    (flat,) = state[OptimizerKeys.SINGLE_PARTITION_OF_FP32_GROUPS]
    assert flat.dtype == "float32" and flat.shape == (144,) and flat.numel == 144 and flat.nbytes == 576
    mapping = state[OptimizerKeys.PARAM_SLICE_MAPPINGS][0]
    assert type(mapping) is OrderedDict
    assert mapping["emb.weight"].state == {"numel": 128, "start": 0}
    names = {ref.qualname for ref in checkpoint.globals}
    assert {
        "deepspeed.runtime.zero.config.ZeroStageEnum",
        "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
        "deepspeed.utils.tensor_fragment.fragment_address",
        "torch._utils._rebuild_tensor_v2",
        "torch.FloatStorage",
        "collections.OrderedDict",
    } <= names


def test_model_states_and_torch_size() -> None:
    checkpoint = ckptkeys.read(FIXTURES / "z2_bf16_ws2" / "global_step3" / "mp_rank_00_model_states.pt")
    state = checkpoint.data
    assert type(state[ModuleKeys.MODULE]) is OrderedDict
    weight = state[ModuleKeys.MODULE]["emb.weight"]
    assert weight.dtype == "bfloat16" and weight.shape == (16, 8) and weight.stride == (8, 1)
    shapes = state[ModuleKeys.PARAM_SHAPES][0]
    assert shapes["emb.weight"] == (16, 8) and type(shapes["emb.weight"]) is tuple
    assert state[ModuleKeys.DS_VERSION] == "0.19.8"
    # torch's state_dict metadata survives, as torch.load keeps it.
    assert vars(state[ModuleKeys.MODULE])["_metadata"][""] == {"version": 1}


def test_zero3_flat_groups_are_parameters_or_tensors() -> None:
    path = FIXTURES / "z3_bf16_ws2" / "global_step3" / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt"
    state = ckptkeys.read(path).data[OptimFileKeys.OPTIMIZER_STATE_DICT]
    (flat,) = state[OptimizerKeys.FP32_FLAT_GROUPS]
    assert isinstance(flat, TensorInfo) and flat.dtype == "float32"
    assert state[OptimizerKeys.ZERO_STAGE].args == (3,)


def test_views_parameters_and_dtypes() -> None:
    data = ckptkeys.read(DATA / "torch" / "sample_zip.pt").data
    tensors = data["tensors"]
    base, view, transposed = tensors["base"], tensors["view"], tensors["transposed"]
    assert view.storage_key == base.storage_key
    assert view.shape == (2, 2) and view.stride == (4, 1) and view.storage_offset == 6
    assert transposed.stride == (1, 4)
    assert base.storage is not None and base.storage.nbytes == 48 and view.nbytes == 16
    assert tensors["scalar"].shape == () and tensors["scalar"].numel == 1
    assert tensors["empty"].numel == 0
    assert data["param"].is_parameter and data["param"].requires_grad
    assert data["frozen"].is_parameter and not data["frozen"].requires_grad
    assert not base.is_parameter
    assert data["size"] == (4, 5)
    assert data["nested"] == [1, 2.5, "three", b"four", None, True, (5, (6, 7)), {8, 9}, frozenset({10})]
    assert data["big_int"] == 2**100
    assert data["dtype"] == GlobalRef("torch", "bfloat16")


def test_legacy_format_reads_the_same_structure() -> None:
    legacy = ckptkeys.read(DATA / "torch" / "sample_legacy.pt")
    modern = ckptkeys.read(DATA / "torch" / "sample_zip.pt")
    assert legacy.format == "legacy"
    assert _shape_of(legacy.data) == _shape_of(modern.data)


def _shape_of(value: Any) -> Any:
    """The structure with tensors reduced to what both formats agree on."""
    if isinstance(value, TensorInfo):
        return (value.dtype, value.shape, value.stride, value.storage_offset, value.is_parameter, value.requires_grad)
    if isinstance(value, dict):
        return (type(value).__name__, [(k, _shape_of(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_shape_of(v) for v in value])
    return value


def test_modern_dtypes_and_meta_tensors() -> None:
    data = ckptkeys.read(DATA / "torch" / "modern_dtypes.pt").data
    assert data["float8"].dtype == "float8_e4m3fn" and data["float8"].nbytes == 4
    assert data["uint16"].dtype == "uint16" and data["uint16"].itemsize == 2
    assert data["meta"].device == "meta" and data["meta"].storage is None and data["meta"].shape == (2, 3)


# -- bad input ---------------------------------------------------------------------------------

GOOD = FIXTURES / "z1_fp16_ws2" / "global_step3" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"


def test_missing_file(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(ReadError, match=r"nope\.pt: cannot be read: No such file"):
        ckptkeys.read(missing)


def test_directory(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ReadError, match="is a directory"):
        ckptkeys.read(tmp_path)


def test_empty_and_unrelated_files(tmp_path: pathlib.Path) -> None:
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(NotACheckpointError, match=r"empty\.pt: is empty"):
        ckptkeys.read(empty)
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    with pytest.raises(NotACheckpointError, match="neither a zip archive nor torch's legacy format"):
        ckptkeys.read(text)


def test_plain_pickle_is_not_a_checkpoint(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(NotACheckpointError, match="no torch magic number"):
        ckptkeys.read(path)


def test_zip_without_data_pkl(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/readme.txt", "hi")
    with pytest.raises(NotACheckpointError, match=r"without archive/data\.pkl"):
        ckptkeys.read(path)


def _rewrite(
    source: pathlib.Path, target: pathlib.Path, drop: str = "", replace: dict[str, bytes] | None = None
) -> None:
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            if drop and info.filename.endswith(drop):
                continue
            data = (replace or {}).get(info.filename.split("/", 1)[1], old.read(info))
            new.writestr(info, data)


def test_missing_storage_record(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "broken.pt"
    _rewrite(GOOD, path, drop="/data/1")
    with pytest.raises(
        CorruptCheckpointError, match=r"broken\.pt: storage record .*data/1 is missing from the archive"
    ):
        ckptkeys.read(path)


def test_short_storage_record(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "short.pt"
    _rewrite(GOOD, path, replace={"data/3": b"\0" * 8})
    with pytest.raises(CorruptCheckpointError, match="holds 8 bytes, the pickle says 576"):
        ckptkeys.read(path)


def test_second_folder_is_refused_as_torch_does(tmp_path: pathlib.Path) -> None:
    # torch.load refuses a member outside the first member's folder ("not in a subdirectory").
    path = tmp_path / "two.pt"
    shutil.copy(GOOD, path)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("other/data.pkl", pickle.dumps(1))
    with pytest.raises(CorruptCheckpointError, match=r"'other/data\.pkl' is outside the archive's folder"):
        ckptkeys.read(path)


@pytest.mark.parametrize("keep", [10, 100, 1000, 2000, 3000])
def test_truncated_files(tmp_path: pathlib.Path, keep: int) -> None:
    path = tmp_path / "cut.pt"
    path.write_bytes(GOOD.read_bytes()[:keep])
    with pytest.raises(ReadError, match=r"cut\.pt: "):
        ckptkeys.read(path)


def test_truncated_legacy_file(tmp_path: pathlib.Path) -> None:
    raw = (DATA / "torch" / "sample_legacy.pt").read_bytes()
    for keep in (3, 40, 200, 600):
        path = tmp_path / "cut.pt"
        path.write_bytes(raw[:keep])
        with pytest.raises(ReadError):
            ckptkeys.read(path)


def _with_pickle(tmp_path: pathlib.Path, payload: bytes) -> pathlib.Path:
    path = tmp_path / "evil.pt"
    _rewrite(GOOD, path, replace={"data.pkl": payload})
    return path


def test_code_execution_is_only_recorded(tmp_path: pathlib.Path) -> None:
    canary = tmp_path / "canary"
    payload = b"\x80\x02cos\nsystem\nX" + struct.pack("<I", len(f"touch {canary}")) + f"touch {canary}".encode()
    payload += b"\x85R."
    checkpoint = ckptkeys.read(_with_pickle(tmp_path, payload))
    assert isinstance(checkpoint.data, Opaque)
    assert checkpoint.data.cls == GlobalRef("os", "system")
    assert checkpoint.data.args == (f"touch {canary}",)
    assert checkpoint.globals == (GlobalRef("os", "system"),)
    assert not canary.exists()


def test_corrupt_pickle_bytes(tmp_path: pathlib.Path) -> None:
    with pytest.raises(CorruptCheckpointError, match="unknown opcode 0xff"):
        ckptkeys.read(_with_pickle(tmp_path, b"\x80\x02\xff."))
    with pytest.raises(CorruptCheckpointError, match="no STOP"):
        ckptkeys.read(_with_pickle(tmp_path, b"\x80\x02K\x01"))
    with pytest.raises(CorruptCheckpointError, match="stack underflow"):
        ckptkeys.read(_with_pickle(tmp_path, b"\x80\x02R."))


def test_absurd_sizes(tmp_path: pathlib.Path) -> None:
    # A string that claims 4 GiB: refused before any allocation.
    with pytest.raises(LimitError, match="max_string_bytes"):
        ckptkeys.read(_with_pickle(tmp_path, b"\x80\x02X\xff\xff\xff\xff."))
    with pytest.raises(CorruptCheckpointError, match="truncated"):
        ckptkeys.read(_with_pickle(tmp_path, b"\x80\x02X\xff\xff\x00\x00abc."))


def test_deep_nesting(tmp_path: pathlib.Path) -> None:
    with pytest.raises(LimitError, match=r"max_depth \(200\)"):
        ckptkeys.read(_with_pickle(tmp_path, b"\x80\x02" + b"(" * 5000 + b"."))
    # Lists nested after the fact, without MARKs: measured when the pickle ends.
    depth = 50_000
    lists = _with_pickle(tmp_path, b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b".")
    with pytest.raises(LimitError, match="max_depth"):
        ckptkeys.read(lists)
    nested = ckptkeys.read(lists, limits=Limits(max_depth=depth)).data
    for _ in range(depth - 1):
        assert len(nested) == 1
        nested = nested[0]
    assert nested == []


def test_deep_tuples_are_refused_before_they_are_hashed(tmp_path: pathlib.Path) -> None:
    # Hashing a million-deep tuple (as a dict key) crashes CPython: it must never get that far.
    payload = b"\x80\x02}" + b")" + b"\x85" * 1_000_000 + b"K\x01s."
    with pytest.raises(LimitError, match="max_depth"):
        ckptkeys.read(_with_pickle(tmp_path, payload))


def test_cycles_are_read_and_measured(tmp_path: pathlib.Path) -> None:
    # l = []; l.append(l): a list that contains itself (memoized, then fetched).
    data = ckptkeys.read(_with_pickle(tmp_path, b"\x80\x02]q\x00h\x00a.")).data
    assert data[0] is data


def test_limits_are_keyword_overridable(tmp_path: pathlib.Path) -> None:
    with pytest.raises(LimitError, match=r"max_objects \(5\)") as info:
        ckptkeys.read(GOOD, limits=Limits(max_objects=5))
    assert info.value.limit == "max_objects" and info.value.path == str(GOOD)
    with pytest.raises(LimitError, match="max_pickle_bytes"):
        ckptkeys.read(GOOD, limits=Limits(max_pickle_bytes=100))
    with pytest.raises(LimitError, match="max_zip_members"):
        ckptkeys.read(GOOD, limits=Limits(max_zip_members=2))
    with pytest.raises(ValueError, match="non-negative int"):
        Limits(max_depth=-1)


def test_errors_share_one_documented_base() -> None:
    for kind in (NotACheckpointError, CorruptCheckpointError, LimitError):
        assert issubclass(kind, ReadError)
    assert issubclass(ReadError, ckptkeys.CkptKeysError)
    error = CorruptCheckpointError("x.pt", "broken")
    assert str(error) == "x.pt: broken" and error.path == "x.pt" and error.reason == "broken"
    assert str(pickle.loads(pickle.dumps(error))) == "x.pt: broken"
    limit = pickle.loads(pickle.dumps(LimitError("x.pt", "max_depth", 3)))
    assert limit.limit == "max_depth" and limit.value == 3


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_checkpoints_give_a_result_or_a_read_error(tmp_path: pathlib.Path, data: st.DataObject) -> None:
    raw = bytearray(GOOD.read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    path = tmp_path / "mutated.pt"
    path.write_bytes(bytes(raw))
    try:
        ckptkeys.read(path)
    except ReadError as error:
        assert str(path) in str(error)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_pickles_give_a_result_or_a_read_error(payload: bytes) -> None:
    from ckptkeys._read._pickle import unpickle

    with contextlib.suppress(ReadError):
        unpickle(b"\x80\x02" + payload)


def test_read_accepts_pathlike_and_str() -> None:
    assert ckptkeys.read(str(GOOD)).data.keys() == ckptkeys.read(GOOD).data.keys()
    assert ckptkeys.read(os.fspath(GOOD)).path == str(GOOD)


def test_read_of_bytes_like_io_is_rejected() -> None:
    with pytest.raises(TypeError):
        ckptkeys.read(io.BytesIO(GOOD.read_bytes()))  # type: ignore[arg-type]
