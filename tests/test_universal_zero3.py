"""The ZeRO-3 universal planner (``ckptkeys._universal._zero3``) against ds_to_universal's own output.

Torch-free, on every Python: the plan of ``z3_bf16_ws2`` (2 ranks, one sub-group, no padding) and
of ``universal_z3_ws3/step3`` (3 ranks, two sub-groups, every share padded; tied, frozen and
buffer) has the files ds_to_universal 0.19.8 wrote for them (``universal_z3``,
``universal_z3_ws3/step3_universal``, read by ckptkeys' reader): the same names, and in every
written file the same object tree, tensor for tensor (dtype, shape, stride, offset, storage
sharing and the storage's bytes, as the planned byte ranges stream them); the model-states files
copied whole; the frozen parameters and buffer named as not restored. What ds_to_universal
refuses, refused; what it cannot be trusted to convert, refused saying so.

With torch and DeepSpeed (3.11): the plan's objects, built into torch tensors from the planned
bytes, equal ``torch.load(weights_only=False)`` of DeepSpeed's files; and on files edited with
torch, ds_to_universal (run in-process) and the planner refuse the same checkpoints.
"""

from __future__ import annotations

import io
import os
import pathlib
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from ckptkeys._check._layout import scan
from ckptkeys._export._plan import Source
from ckptkeys._export._pt import PtStorage, PtTensor, write_pt
from ckptkeys._export._spans import record_spans, tensor_span
from ckptkeys._export._tensor_bytes import tensor_entry
from ckptkeys._export._types import ExportError
from ckptkeys._read._pickle import Opaque
from ckptkeys._read._reader import read
from ckptkeys._read._torch import TensorInfo
from ckptkeys._universal._types import NotRestored, UniversalFile
from ckptkeys._universal._zero3 import STATES, plan_zero3

from .conftest import DATA, FIXTURES

# (source tag folder, ds_to_universal's output folder for it)
CASES = {
    "z3_bf16_ws2": (FIXTURES / "z3_bf16_ws2" / "global_step3", DATA / "universal_z3" / "global_step3_universal"),
    "z3_fp32_ws3_padded": (DATA / "universal_z3_ws3" / "step3", DATA / "universal_z3_ws3" / "step3_universal"),
    "z3_bf16_tp2": (DATA / "universal_z3_tp2" / "step3", DATA / "universal_z3_tp2" / "step3_universal"),
}
BARE = ["z3_bf16_ws2", "z3_fp32_ws3_padded"]  # no tensor parallelism: bare flat tensors


def _plan(tag: pathlib.Path, strict: bool = True) -> tuple[list[UniversalFile], list[NotRestored]]:
    _, files, not_restored = plan_zero3(Source(scan(tag, read=True).tags[0]), strict=strict)
    return files, not_restored


def _files(folder: pathlib.Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def _planned_bytes(storage: PtStorage) -> bytes:
    """The storage's bytes as the writer streams them (``tensor_entry`` of its source)."""
    with tempfile.TemporaryFile() as out:  # a file: the writer copies ranges in the kernel
        tensor_entry(storage.source, lambda n: None).write(out)
        out.seek(0)
        data = out.read()
    assert len(data) == storage.numel * {"float32": 4, "bfloat16": 2}[storage.dtype]
    return data


def _record_bytes(path: pathlib.Path, tensor: TensorInfo) -> bytes:
    """The whole storage record of ``tensor`` in DeepSpeed's file."""
    checkpoint = read(path)
    storage = tensor.storage
    assert storage is not None
    whole = TensorInfo(storage.dtype, (storage.numel,), (1,), 0, storage)
    span = tensor_span(checkpoint, whole, record_spans(checkpoint))
    with open(span.path, "rb") as f:
        f.seek(span.offset)
        return f.read(span.length)


def _contiguous(shape: tuple[int, ...]) -> tuple[int, ...]:
    stride, step = [], 1
    for size in reversed(shape):
        stride.append(step)
        step *= size
    return tuple(reversed(stride))


def _same_tree(ours: Any, theirs: Any, path: pathlib.Path, pairs: dict[int, int], where: str = "") -> None:
    """Our planned object equals what the reader reads from DeepSpeed's file, storage sharing included
    (``pairs``: our storage's id -> DeepSpeed's storage record)."""
    if isinstance(theirs, TensorInfo):
        assert isinstance(ours, PtTensor), where
        assert theirs.storage is not None
        assert (ours.storage.dtype, ours.shape, ours.offset) == (theirs.dtype, theirs.shape, theirs.storage_offset)
        assert (ours.stride or _contiguous(ours.shape)) == theirs.stride, where
        assert ours.requires_grad == theirs.requires_grad, where
        assert ours.state == theirs.attributes, where  # ZeRO-3's flat partitions carry ds_id
        assert ours.storage.numel == theirs.storage.numel, where
        assert pairs.setdefault(id(ours.storage), id(theirs.storage)) == id(theirs.storage), where
        assert _planned_bytes(ours.storage) == _record_bytes(path, theirs), where
    elif isinstance(theirs, dict):
        assert type(ours) is type(theirs), where
        assert list(ours) == list(theirs), where
        for key in theirs:
            _same_tree(ours[key], theirs[key], path, pairs, f"{where}[{key!r}]")
    elif isinstance(theirs, (list, tuple)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs), where
        for index, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            _same_tree(a, b, path, pairs, f"{where}[{index}]")
    elif isinstance(theirs, Opaque):
        assert isinstance(ours, Opaque), where
        assert (ours.qualname, ours.args, ours.kwargs, ours.state) == (
            theirs.qualname,
            theirs.args,
            theirs.kwargs,
            theirs.state,
        ), where
    else:
        assert type(ours) is type(theirs) and ours == theirs, where


@pytest.mark.parametrize("case", CASES)
def test_plan_has_ds_to_universals_files_and_objects(case: str) -> None:
    tag, reference = CASES[case]
    files, _ = _plan(tag)
    names = [f.name for f in files]
    assert len(set(names)) == len(names)
    assert set(names) == _files(reference)
    pairs: dict[int, int] = {}
    for file in files:
        theirs = read(reference / file.name)
        if file.copy_of is not None:
            assert file.content is None and file.param is None
            assert pathlib.Path(file.copy_of).read_bytes() == (reference / file.name).read_bytes()
            assert file.nbytes == os.path.getsize(file.copy_of)
            continue
        pairs.clear()
        _same_tree(file.content, theirs.data, reference / file.name, pairs, file.name)
        assert len(set(pairs.values())) == len(pairs) == len(theirs.storages)  # one storage each, as there
        assert file.nbytes == sum(s.nbytes for s in theirs.storages.values())


@pytest.mark.parametrize("case", BARE)
def test_parameter_files_are_bare_flat_tensors_in_param_shapes_order(case: str) -> None:
    tag, _ = CASES[case]
    files, _ = _plan(tag)
    model = read(sorted(tag.glob("zero_pp_rank_0_*model_states.pt"))[0]).data
    order = [name for group in model["param_shapes"] for name in group]
    params = [f for f in files if f.param is not None]
    assert [(f.param, f.name.rsplit("/", 1)[1]) for f in params] == [(n, f"{s}.pt") for n in order for s in STATES]
    for file in params:
        shape = next(group[file.param] for group in model["param_shapes"] if file.param in group)
        numel = 1
        for size in shape:
            numel *= size
        assert isinstance(file.content, PtTensor)
        assert file.content.shape == (numel,) and file.content.storage.numel == numel
        assert file.name == f"zero/{file.param}/{file.name.rsplit('/', 1)[1]}"
    # Then the optimizer state, then the copies: the writer's order.
    rest = [f.name for f in files[len(params) :]]
    assert rest[0] == "zero/optimizer_state.pt"
    assert rest[1:] == sorted(p.name for p in tag.glob("*model_states.pt"))


def test_a_tensors_pickled_attributes_are_read_and_kept() -> None:
    """ZeRO-3's flat partitions carry DeepSpeed's ``ds_id`` (torch pickles them through
    ``_rebuild_from_type_v2``): read as ``TensorInfo.attributes``, which equality leaves out, and
    planned onto the copied tensor as ``PtTensor.state``."""
    tag, _ = CASES["z3_bf16_ws2"]
    flat = read(tag / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt").data["optimizer_state_dict"]["fp32_flat_groups"]
    assert flat[0].attributes == {"ds_id": "0_4"}
    assert flat[0] == replace(flat[0], attributes=None)
    state = next(f for f in _plan(tag)[0] if f.name == "zero/optimizer_state.pt").content
    assert state["fp32_flat_groups"][0].state == {"ds_id": "0_4"}
    assert state["optimizer_state_dict"]["state"][0]["exp_avg"].state is None


def test_optimizer_state_shares_param_groups_and_copies_every_storage_once() -> None:
    tag, _ = CASES["z3_fp32_ws3_padded"]
    files, _ = _plan(tag)
    state = next(f for f in files if f.name == "zero/optimizer_state.pt").content
    assert state["param_groups"] is state["optimizer_state_dict"]["param_groups"]  # one object, as DeepSpeed's
    assert list(state)[-1] == "param_groups"
    flat = state["fp32_flat_groups"]
    assert [t.shape for t in flat] == [(57,), (4,)]  # rank 0's two sub-groups, padding included
    source = read(tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    assert {t.storage.numel for t in flat} == {57, 4}
    assert all(t.storage.source.sources[0].path == source.path for t in flat)


@pytest.mark.parametrize("case", BARE)
def test_frozen_parameters_and_buffers_are_not_restored_and_get_no_file(case: str) -> None:
    tag, reference = CASES[case]
    _, not_restored = _plan(tag)
    assert not_restored == [
        NotRestored("scale", "buffer", None),
        NotRestored("frozen.weight", "frozen", None),
        NotRestored("frozen.bias", "frozen", None),
    ]
    assert not any(name.startswith(("zero/scale/", "zero/frozen.")) for name in _files(reference))


# -- refusals, torch-free -------------------------------------------------------------------------


def _copy(tmp_path: pathlib.Path, case: str = "z3_bf16_ws2") -> pathlib.Path:
    tag = tmp_path / "tag"
    shutil.copytree(CASES[case][0], tag)
    return tag


def test_a_missing_rank_is_refused_as_ds_to_universal_refuses_it(tmp_path: pathlib.Path) -> None:
    tag = _copy(tmp_path)
    (tag / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt").unlink()
    with pytest.raises(ExportError, match=r"Missing ZeRO-3 checkpoint file for tp_rank=0, dp_rank=0"):
        _plan(tag)


def test_model_and_optimizer_grids_that_disagree_are_refused(tmp_path: pathlib.Path) -> None:
    tag = _copy(tmp_path)
    (tag / "zero_pp_rank_1_mp_rank_00_model_states.pt").unlink()
    with pytest.raises(ExportError, match=r"model=\(1,1\), optim=\(1,2\)"):
        _plan(tag)


def test_a_model_states_file_without_zero3_ranks_is_refused(tmp_path: pathlib.Path) -> None:
    tag = _copy(tmp_path)
    shutil.copy(tag / "zero_pp_rank_0_mp_rank_00_model_states.pt", tag / "mp_rank_00_model_states.pt")
    with pytest.raises(ExportError, match=r"mp_rank_00_model_states.pt: Cannot parse ZeRO rank"):
        _plan(tag)


def test_zero3_with_expert_files_is_refused_as_not_converted_yet(tmp_path: pathlib.Path) -> None:
    tag = _copy(tmp_path)
    shutil.copy(tag / "zero_pp_rank_0_mp_rank_00_model_states.pt", tag / "layer_0_expert_0_mp_rank_00_model_states.pt")
    with pytest.raises(ExportError, match=r"mixture-of-experts checkpoint: not converted yet"):
        _plan(tag)


# -- with torch and DeepSpeed ---------------------------------------------------------------------


def _torch() -> Any:
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    torch = pytest.importorskip("torch")
    pytest.importorskip("deepspeed")
    return torch


def _built(torch: Any, value: Any, storages: dict[int, Any]) -> Any:
    """The plan's object as torch objects: each tensor from its storage's planned bytes; DeepSpeed's
    objects rebuilt as their pickle builds them (REDUCE with the args, or NEWOBJ then BUILD)."""
    if isinstance(value, PtTensor):
        storage = storages.get(id(value.storage))
        if storage is None:
            data = bytearray(_planned_bytes(value.storage))
            flat = torch.frombuffer(data, dtype=getattr(torch, value.storage.dtype)) if data else None
            storage = storages[id(value.storage)] = (
                flat if flat is not None else torch.empty(0, dtype=getattr(torch, value.storage.dtype))
            )
        stride = value.stride or _contiguous(value.shape)
        built = torch.as_strided(storage, value.shape, stride, value.offset).requires_grad_(value.requires_grad)
        built.__dict__.update(value.state or {})
        return built
    if isinstance(value, dict):
        return type(value)((k, _built(torch, v, storages)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_built(torch, v, storages) for v in value)
    if isinstance(value, Opaque):
        import importlib

        module = importlib.import_module(value.cls.module)
        cls = getattr(module, value.cls.name)
        if value.state is None:
            return cls(*value.args)
        built = cls.__new__(cls, *value.args)
        built.__dict__.update(value.state)
        return built
    return value


def _equal(torch: Any, ours: Any, theirs: Any, where: str) -> None:
    if torch.is_tensor(theirs):
        assert torch.is_tensor(ours), where
        assert (ours.dtype, ours.shape, ours.stride(), ours.requires_grad) == (
            theirs.dtype,
            theirs.shape,
            theirs.stride(),
            theirs.requires_grad,
        ), where
        assert torch.equal(ours.reshape(-1).view(torch.uint8), theirs.reshape(-1).view(torch.uint8)), where
        assert vars(ours) == vars(theirs), where  # its attributes (ds_id)
    elif isinstance(theirs, dict):
        assert type(ours) is type(theirs) and list(ours) == list(theirs), where
        for key in theirs:
            _equal(torch, ours[key], theirs[key], f"{where}[{key!r}]")
    elif isinstance(theirs, (list, tuple)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs), where
        for index, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            _equal(torch, a, b, f"{where}[{index}]")
    elif hasattr(theirs, "__dict__") and not isinstance(theirs, type):
        assert type(ours) is type(theirs), where
        _equal(torch, vars(ours), vars(theirs), f"{where}.__dict__")
    else:
        assert type(ours) is type(theirs) and ours == theirs, where


@pytest.mark.deepspeed
@pytest.mark.parametrize("case", CASES)
def test_planned_objects_equal_torch_load_of_deepspeeds_files(case: str) -> None:
    torch = _torch()
    tag, reference = CASES[case]
    files, _ = _plan(tag)
    for file in files:
        if file.copy_of is None:
            theirs = torch.load(reference / file.name, map_location="cpu", weights_only=False)
            _equal(torch, _built(torch, file.content, {}), theirs, file.name)


def _dtu(torch: Any, tag: pathlib.Path, out: pathlib.Path, strict: bool = True) -> None:
    """ds_to_universal on ``tag``, in this process (its workers at 1: no subprocesses)."""
    import argparse
    import contextlib

    from deepspeed.checkpoint import ds_to_universal

    args = argparse.Namespace(
        input_folder=str(tag), output_folder=str(out), num_extract_workers=1, num_merge_workers=1,
        keep_temp_folder=False, strict=strict, inject_missing_state=False,
    )  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        ds_to_universal.main(args)


def _edit(torch: Any, path: pathlib.Path, change: Callable[[Any], None]) -> None:
    state = torch.load(path, map_location="cpu", weights_only=False)
    change(state)
    torch.save(state, path)


def _drop_moment(state: Any) -> None:
    del state["optimizer_state_dict"]["optimizer_state_dict"]["state"][0]["exp_avg_sq"]


def _cut_flat(state: Any) -> None:
    groups = state["optimizer_state_dict"]["fp32_flat_groups"]
    groups[0] = groups[0][:-10].clone()


# An AutoEP layer entry as DeepSpeed validates it (autoep_zero3_metadata.py), not partition-native.
AUTOEP_LAYER = {"moe_layer_id": 0, "module_path": "moe", "num_experts": 2, "num_local_experts": 1, "ep_size": 2,
                "expert_key_prefix": "moe.experts"}  # fmt: skip
EDITS: dict[str, tuple[str, Callable[[Any], None], type[BaseException], str]] = {
    "no exp_avg_sq (not Adam)": (
        "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt",
        _drop_moment,
        KeyError,
        r"\['state'\]\[0\] has no 'exp_avg_sq': ds_to_universal converts ZeRO-3 Adam states",
    ),
    "a flat partition cut short": (
        "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt",
        _cut_flat,
        RuntimeError,
        r"bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt: .*fp32_flat_groups'\]\[0\] is too short: 134 elements",
    ),
    "AutoEP metadata, not partition-native": (
        "zero_pp_rank_1_mp_rank_00_model_states.pt",
        lambda state: state.update(ds_autoep_layers=[AUTOEP_LAYER]),
        NotImplementedError,
        r"zero_pp_rank_1_mp_rank_00_model_states.pt: Stage 3 universal checkpoint conversion for AutoEP requires",
    ),
}


@pytest.mark.deepspeed
@pytest.mark.parametrize("edit", EDITS)
def test_what_ds_to_universal_cannot_convert_is_refused_naming_the_file(edit: str, tmp_path: pathlib.Path) -> None:
    torch = _torch()
    name, change, raised, refusal = EDITS[edit]
    tag = _copy(tmp_path)
    _edit(torch, tag / name, change)
    with pytest.raises(raised):
        _dtu(torch, tag, tmp_path / "dtu")
    with pytest.raises(ExportError, match=refusal):
        _plan(tag)


@pytest.mark.deepspeed
def test_a_parameter_name_that_is_no_folder_name_is_refused(tmp_path: pathlib.Path) -> None:
    torch = _torch()
    tag = _copy(tmp_path)
    for rank in (0, 1):

        def rename(state: Any) -> None:
            shapes = state["param_shapes"][0]
            renamed = ((k.replace("fc1.bias", "../fc1.bias"), v) for k, v in shapes.items())
            state["param_shapes"][0] = type(shapes)(renamed)

        _edit(torch, tag / f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt", rename)
    with pytest.raises(ExportError, match=r"names a parameter '\.\./fc1\.bias', which is no folder name"):
        _plan(tag)


def test_plan_universal_hands_a_zero3_tag_to_this_planner() -> None:
    from ckptkeys._universal._entry import plan_universal

    tag, _ = CASES["z3_fp32_ws3_padded"]
    plan = plan_universal(tag.parent)  # the save folder: its `latest` names step3
    files, not_restored = _plan(tag)
    assert (plan.layout, plan.zero_stage, plan.tag) == ("zero-3", 3, "step3")
    assert plan.output == os.path.join(tag.parent, "step3_universal")
    assert plan.latest == os.path.join(tag.parent, "latest_universal")
    assert [f.name for f in plan.files] == [f.name for f in files]
    assert plan.not_restored == tuple(not_restored)
    assert plan.params == ("emb.weight", "fc1.weight", "fc1.bias")
    # ds_to_universal's ZeRO-3 branch never reads --inject_missing_state: the same files.
    injected = plan_universal(tag.parent, inject_missing_state=True)
    assert [(f.name, f.nbytes) for f in injected.files] == [(f.name, f.nbytes) for f in plan.files]


@pytest.mark.parametrize("case", CASES)
def test_written_files_are_deepspeeds_record_for_record(case: str, tmp_path: pathlib.Path) -> None:
    """Through export's torch-free .pt writer, each written file holds DeepSpeed's records byte for
    byte (its pickle, its storages), all but the random ``.data/serialization_id``: the optimizer
    state's flat partition carries its ``ds_id`` attribute as torch.save pickles it."""
    tag, reference = CASES[case]
    files, _ = _plan(tag)
    if case not in BARE:
        pytest.importorskip("numpy")  # the averaged parameter's mean (export's casts)
    for file in files:
        if file.copy_of is not None:
            continue
        out = tmp_path / file.name.replace("/", "_")
        with open(out, "wb") as stream:
            write_pt(stream, file.content, archive=file.name.rsplit("/", 1)[1][: -len(".pt")], write_storage=_storage)
        ours, theirs = zipfile.ZipFile(out), zipfile.ZipFile(reference / file.name)
        assert ours.namelist() == theirs.namelist()
        for name in ours.namelist():
            if not name.endswith("/.data/serialization_id"):
                assert ours.read(name) == theirs.read(name), f"{file.name}: {name}"
        assert out.stat().st_size == (reference / file.name).stat().st_size


def _storage(storage: PtStorage, out: Any) -> None:
    tensor_entry(storage.source, lambda n: None).write(out)


@pytest.mark.deepspeed
@pytest.mark.parametrize("case", CASES)
def test_written_files_load_in_torch_equal_to_deepspeeds(case: str, tmp_path: pathlib.Path) -> None:
    torch = _torch()
    tag, reference = CASES[case]
    files, _ = _plan(tag)
    for file in files:
        if file.copy_of is not None:
            continue
        out = tmp_path / file.name.replace("/", "_")
        with open(out, "wb") as stream:
            write_pt(stream, file.content, archive=file.name.rsplit("/", 1)[1][: -len(".pt")], write_storage=_storage)
        theirs = torch.load(reference / file.name, map_location="cpu", weights_only=False)
        _equal(torch, torch.load(out, map_location="cpu", weights_only=False), theirs, file.name)
        if file.param is not None:  # a bare tensor: loads under weights_only=True too
            _equal(torch, torch.load(out, map_location="cpu", weights_only=True), theirs, file.name)



@pytest.mark.deepspeed
@pytest.mark.parametrize(("count", "same"), [(2, True), (1, False)])
def test_partition_metadata_is_read_as_ds_to_universal_reads_it(count: int, same: bool, tmp_path: pathlib.Path) -> None:
    """``ds_zero_partition_groups`` (written with AutoEP's expert groups) gives a sub-group's
    partition count and rank: where it says what the files are, the same files; where it says
    one rank holds everything, ds_to_universal cuts past the partition's end and the planner
    refuses, naming the file."""
    torch = _torch()
    tag = _copy(tmp_path)
    for rank in (0, 1):

        def say(state: Any, rank: int = rank) -> None:
            groups = [{"partition_count": count, "partition_rank": rank % count}]
            state["optimizer_state_dict"]["ds_zero_partition_groups"] = groups

        _edit(torch, tag / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt", say)
    if not same:
        with pytest.raises(RuntimeError):
            _dtu(torch, tag, tmp_path / "dtu")
        with pytest.raises(ExportError, match=r"bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt: .* is too short"):
            _plan(tag)
        return
    _dtu(torch, tag, tmp_path / "dtu")
    files, _ = _plan(tag)
    for file in files:
        if file.param is not None:
            theirs = torch.load(tmp_path / "dtu" / file.name, weights_only=False)
            _equal(torch, _built(torch, file.content, {}), theirs, file.name)


def test_tensor_parallel_zero3_is_merged_as_zero12_tensor_parallel_is() -> None:
    """tp 2: each file a dict as ds_to_universal's TP merge writes it, no step.pt (the ZeRO-3
    extraction has none); the fp32 master requires gradients as the merged partitions do."""
    from ckptkeys._universal._entry import plan_universal

    tag, reference = CASES["z3_bf16_tp2"]
    plan = plan_universal(tag)
    assert (plan.layout, plan.zero_stage) == ("zero-3 tp", 3)
    assert {f.name for f in plan.files} == _files(reference)
    for file in plan.files:
        if file.param is not None:
            assert isinstance(file.content, dict) and isinstance(file.content["param"], PtTensor)
            assert file.content["param"].requires_grad == file.name.endswith("/fp32.pt")


@pytest.mark.deepspeed
@pytest.mark.parametrize("strict", [True, False])
def test_an_unused_merge_pattern_is_refused_only_when_strict(strict: bool, tmp_path: pathlib.Path) -> None:
    torch = _torch()
    tag = tmp_path / "tag"
    shutil.copytree(CASES["z3_bf16_tp2"][0], tag)
    for rank in (0, 1):

        def unused(state: Any) -> None:
            state["universal_checkpoint_info"]["tp_replicated_parameter_patterns"].append("nothing$")

        _edit(torch, tag / f"zero_pp_rank_0_mp_rank_{rank:02d}_model_states.pt", unused)
    if strict:
        with pytest.raises(AssertionError, match="Unused patterns"):
            _dtu(torch, tag, tmp_path / "dtu")
        with pytest.raises(ExportError, match=r"Unused patterns=\['nothing\$'\]") as raised:
            _plan(tag)
        assert raised.value.option == "strict"
        return
    _dtu(torch, tag, tmp_path / "dtu", strict=False)
    files, _ = _plan(tag, strict=False)
    assert {f.name for f in files} == _files(tmp_path / "dtu")
    for file in files:
        if file.copy_of is None:
            theirs = torch.load(tmp_path / "dtu" / file.name, weights_only=False)
            _equal(torch, _built(torch, file.content, {}), theirs, file.name)
