"""plan_universal: the files ds_to_universal 0.19.8 writes for ZeRO-1/2, planned from the pickles alone.

Every expectation is DeepSpeed's own output: `tests/data/fixtures/uc_z2_bf16_ws2/global_step3_universal`
(read here torch-free, every tensor byte compared), and `tests/data/universal_expected.json` for the
other saves (each file of ds_to_universal's output summarised; its `_made_by` says how). Torch-free,
on every Python.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import shutil
import tempfile

import pytest

from ckptkeys import ExportError, NotRestored, UniversalPlan, plan_universal, read
from ckptkeys._check._layout import scan
from ckptkeys._export._plan import Source
from ckptkeys._export._pt import PtTensor
from ckptkeys._export._spans import record_spans
from ckptkeys._export._tensor_bytes import tensor_entry
from ckptkeys._read._pickle import Opaque
from ckptkeys._read._torch import TensorInfo
from ckptkeys._universal._zero12 import plan_zero12

from .conftest import ROOT

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

DATA = ROOT / "tests" / "data"
EXPECTED: dict[str, Any] = json.loads((DATA / "universal_expected.json").read_text(encoding="utf-8"))
UC = DATA / "fixtures" / "uc_z2_bf16_ws2"
UC_OUT = UC / "global_step3_universal"
INFO = "universal_checkpoint_info"


def _contiguous(shape: list[int]) -> list[int]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return strides[::-1]


def describe(value: Any) -> Any:
    """A planned file's object in the summary's form: tensors by dtype, shape, stride, offset and
    storage size, dicts as [key, value] pairs in order, DeepSpeed objects by class."""
    if isinstance(value, PtTensor):
        shape = list(value.shape)
        stride = list(value.stride) if value.stride is not None else _contiguous(shape)
        return {"tensor": value.storage.dtype, "shape": shape, "stride": stride, "offset": value.offset,
                "storage_numel": value.storage.numel}  # fmt: skip
    return _plain(value, describe)


def describe_read(value: Any) -> Any:
    """The same of an object as ckptkeys' reader gives it (ds_to_universal's files, read torch-free)."""
    if isinstance(value, TensorInfo):
        assert value.storage is not None
        return {"tensor": value.dtype, "shape": list(value.shape), "stride": list(value.stride),
                "offset": value.storage_offset, "storage_numel": value.storage.numel}  # fmt: skip
    return _plain(value, describe_read)


def _plain(value: Any, again: Any) -> Any:
    if isinstance(value, dict):
        return {"dict": [[key, again(item)] for key, item in value.items()]}
    if isinstance(value, (list, tuple)):
        return {type(value).__name__: [again(item) for item in value]}
    if isinstance(value, Opaque):
        return {"object": value.qualname}
    assert type(value) in (int, float, str, bool, type(None)), value
    return value


def _zero(files: dict[str, Any]) -> dict[str, Any]:
    return {name: found for name, found in files.items() if name.startswith("zero/")}


def _tensors(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every tensor (planned or read) of an object, by where it is."""
    if isinstance(value, (PtTensor, TensorInfo)):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _tensors(item, f"{path}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _tensors(item, f"{path}[{index}]")


@pytest.mark.parametrize("save", sorted(EXPECTED["saves"]))
def test_the_files_are_ds_to_universals(save: str) -> None:
    """Each save ds_to_universal converts (with --inject_missing_state): the same files, each holding
    the same keys in the same order, every tensor of the same dtype, shape, stride, offset and
    storage size; the model-states files copied; the output beside the tag."""
    expected = EXPECTED["saves"][save]
    plan = plan_universal(DATA / save, inject_missing_state=True)
    assert isinstance(plan, UniversalPlan) and plan.inject_missing_state and plan.strict
    assert plan.output == os.path.join(os.path.dirname(plan.checkpoint), expected["output"])
    assert plan.latest == os.path.join(os.path.dirname(plan.checkpoint), "latest_universal")
    assert [f.name for f in plan.files] != [] and {f.name for f in plan.files} == set(expected["files"])
    assert len(plan.files) == len(expected["files"])
    for file in plan.files:
        if file.copy_of is None:
            assert describe(file.content) == expected["files"][file.name], file.name
        else:
            assert os.path.basename(file.copy_of) == file.name and os.path.dirname(file.copy_of) == plan.checkpoint
            assert file.nbytes == os.path.getsize(file.copy_of) == expected["files"][file.name]["bytes"]
            assert file.content is None and file.param is None
        if file.name.startswith("zero/") and file.name != "zero/optimizer_state.pt":
            assert file.param == file.name.split("/")[1]
    json.dumps(plan.as_dict())  # the dry run's JSON


@pytest.mark.parametrize("inject", [False, True])
def test_uc_z2_is_its_ds_to_universal_output(inject: bool) -> None:
    """The fixture ds_to_universal converted: its output read torch-free, file for file."""
    plan = plan_universal(UC, inject_missing_state=inject)
    assert plan.output == str(UC_OUT) and plan.latest == str(UC / "latest_universal")
    assert (plan.layout, plan.zero_stage, plan.tag) == ("zero-1/2", 2, "global_step3")
    on_disk = sorted(str(p.relative_to(UC_OUT)).replace(os.sep, "/") for p in UC_OUT.rglob("*") if p.is_file())
    assert sorted(f.name for f in plan.files) == on_disk
    for file in plan.files:
        theirs = UC_OUT / file.name
        if file.copy_of is not None:
            assert pathlib.Path(file.copy_of).read_bytes() == theirs.read_bytes()
            continue
        assert describe(file.content) == describe_read(read(theirs).data), file.name


def test_uc_z2_tensor_bytes_are_ds_to_universals() -> None:
    """Every storage of the plan, as export's tensor_entry streams it (copied, cut, cast from bf16),
    is byte for byte the storage record ds_to_universal wrote."""
    plan = plan_universal(UC)
    compared = 0
    for file in plan.files:
        if file.copy_of is not None:
            continue
        checkpoint = read(UC_OUT / file.name)
        spans = record_spans(checkpoint)
        theirs = dict(_tensors(checkpoint.data))
        mine = dict(_tensors(file.content))
        assert set(mine) == set(theirs), file.name
        for where, tensor in mine.items():
            assert isinstance(tensor, PtTensor) and tensor.storage.dtype == tensor.storage.source.dtype
            assert tensor.storage.numel == tensor.storage.source.numel
            record = spans[theirs[where].storage.key]
            with open(record.path, "rb") as stream:
                stream.seek(record.offset)
                expected = stream.read(record.length)
            with tempfile.TemporaryFile() as out:
                tensor_entry(tensor.storage.source, lambda _n: None).write(out)
                out.seek(0)
                assert out.read() == expected, (file.name, where)
            compared += 1
    assert compared == 23  # 5 parameters x 4 files, 2 frozen parameters, 1 buffer


def test_frozen_parameters_and_buffers_are_named_not_restored() -> None:
    plan = plan_universal(UC)
    assert plan.not_restored == (
        NotRestored("scale", "buffer", "zero/scale/fp32.pt"),
        NotRestored("frozen.weight", "frozen", "zero/frozen.weight/fp32.pt"),
        NotRestored("frozen.bias", "frozen", "zero/frozen.bias/fp32.pt"),
    )
    assert plan.params[:5] == ("emb.weight", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")
    # A tied alias (Hugging Face's lm_head.weight) gets its fp32.pt but is restored with its owner.
    hf = plan_universal(DATA / "clients" / "hf_trainer_z2_bf16", inject_missing_state=True)
    assert hf.not_restored == () and "lm_head.weight" in hf.params


@pytest.mark.parametrize(
    ("save", "layout", "stage"),
    [("fixtures/z1_bf16_ws1", "zero-1/2", 1), ("fixtures/z2_bf16_ws2", "zero-1/2", 2),
     ("fixtures/tp2_z1_bf16", "zero-1/2 tp", 1), ("fixtures/pp2_z1_bf16", "pipeline", 1)],
)  # fmt: skip
def test_layout_and_stage(save: str, layout: str, stage: int) -> None:
    plan = plan_universal(DATA / save, inject_missing_state=True)
    assert (plan.layout, plan.zero_stage) == (layout, stage)


def test_output_folder_and_its_latest(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "elsewhere" / "converted"
    plan = plan_universal(UC, output_folder=out, tag="global_step3")
    assert plan.output == str(out) and plan.latest == str(tmp_path / "elsewhere" / "latest_universal")


def _layout_with_info(save: str, info: dict[str, Any]) -> Source:
    """A tag read as plan_universal reads it, every model-states file saying ``info``."""
    return _tag_changed(save, **{INFO: dict(info)})


def test_tensor_parallel_merge_patterns_as_ds_to_universal_merges() -> None:
    """Averaged, two sub-parameters, row parallel and a vocabulary cut to original_vocab_size (a
    view of the whole merged storage), on two tensor-parallel ranks: as ds_to_universal wrote them."""
    expected = EXPECTED["patterns"]
    kind, files, _ = plan_zero12(_layout_with_info(expected["save"], expected["info"]),
                                 inject_missing_state=False, strict=True)  # fmt: skip
    assert kind == "zero-1/2 tp"
    written = {f.name: describe(f.content) for f in files if f.copy_of is None}
    assert written == _zero(expected["files"])
    averaged = next(f for f in files if f.name == "zero/fc1.bias/fp32.pt").content["param"]
    assert len(averaged.storage.source.mean_of) == 2 and averaged.storage.source.sources == ()


def test_unused_pattern_refused_unless_not_strict() -> None:
    info = {"universal_checkpoint_version": 0.4, "tp_replicated_parameter_patterns": [r"nothing\.here"]}
    with pytest.raises(ExportError, match=r"Unused patterns=\['nothing\\\\.here'\] while merging tp slices") as error:
        plan_zero12(_layout_with_info("fixtures/tp2_z1_bf16", info), inject_missing_state=False, strict=True)
    assert error.value.option == "strict" and error.value.path.endswith("mp_rank_00_model_states.pt")
    _, files, _ = plan_zero12(_layout_with_info("fixtures/tp2_z1_bf16", info), inject_missing_state=False, strict=False)
    written = {f.name: describe(f.content) for f in files if f.copy_of is None}
    assert written == _zero(EXPECTED["saves"]["fixtures/tp2_z1_bf16"]["files"])


@pytest.mark.parametrize(
    ("info", "reason"),
    [
        ({"autotp_unsupported_parameter_patterns": {"fc1": "fused"}},
         "AutoTP universal checkpoint conversion is not supported for fc1: fused"),
        ({"affine_map": {"version": 2}}, "affine map format version 2"),
        ({"affine_map": {"params": {r"fc1\.weight": {}}}}, r"\['affine_map'\] covers 'fc1.weight'"),
        ({"parameter_with_sub_params": [{"patterns": [r"fc1\.weight"], "shape": [2, -1], "partition_dim": 0}]},
         r"\['parameter_with_sub_params'\] covers 'fc1.weight'"),
        ({"tp_replicated_parameter_patterns": [r"fc1\..*", r"fc1\.b.*"]}, "more than one matching patterns"),
        ({"vocabulary_parameter_patterns": [r"emb\.weight"]}, "original_vocab_size is None"),
        ({"parameter_with_row_parallelism_patterns": [r"fc1\.bias"]}, "cannot be concatenated on dim 1"),
    ],
)  # fmt: skip
def test_what_ds_to_universal_refuses_or_fails_on_is_refused(info: dict[str, Any], reason: str) -> None:
    with pytest.raises(ExportError, match=reason):
        plan_zero12(_layout_with_info("fixtures/tp2_z1_bf16", info), inject_missing_state=False, strict=True)


@pytest.mark.parametrize("save", sorted(EXPECTED["saves"]))
def test_missing_universal_checkpoint_info_refused_without_inject(save: str) -> None:
    with pytest.raises(ExportError, match="Required universal_checkpoint_info state is missing") as error:
        plan_universal(DATA / save)
    assert error.value.option == "inject_missing_state"
    assert error.value.path.endswith("mp_rank_00_model_states.pt")


@pytest.mark.parametrize("inject", [False, True])
def test_zero0_has_no_optimizer_shards_to_convert(inject: bool) -> None:
    tag = DATA / "fixtures" / "z0_fp32_ws1" / "global_step3"
    with pytest.raises(ExportError, match=r"has no \*_optim_states.pt files") as error:
        plan_universal(tag.parent, inject_missing_state=inject)
    assert error.value.path == str(tag)


def test_moe_fails_as_ds_to_universal_fails() -> None:
    """ds_to_universal joins every rank's expert partitions into one tensor and fails to shape it
    (RuntimeError: shape '[8]' is invalid for input of size 16, on whichever parameter it merges first):
    refused, saying so, on the first expert parameter."""
    with pytest.raises(ExportError, match=r"shape '\[8, 8\]' is invalid for input of size 128: .*experts\.0\.weight"):
        plan_universal(DATA / "fixtures" / "moe_z2_fp32_ep2", inject_missing_state=True)


def test_a_universal_tag_is_not_converted_again() -> None:
    with pytest.raises(ExportError, match="is a universal checkpoint already"):
        plan_universal(UC_OUT)


def test_an_incomplete_tag_is_refused_as_export_refuses_it(tmp_path: pathlib.Path) -> None:
    save = tmp_path / "save"
    shutil.copytree(DATA / "fixtures" / "z2_bf16_ws2", save)
    missing = save / "global_step3" / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt"
    missing.unlink()
    with pytest.raises(ExportError, match=r"missing-rank: .* is missing .*incomplete") as error:
        plan_universal(save, inject_missing_state=True)
    assert error.value.path == str(missing)
    truncated = save / "global_step3" / "mp_rank_00_model_states.pt"
    shutil.copy(DATA / "fixtures" / "z2_bf16_ws2" / "global_step3" / missing.name, missing)
    truncated.write_bytes(truncated.read_bytes()[:-100])
    with pytest.raises(ExportError) as error:
        plan_universal(save, inject_missing_state=True)
    assert error.value.path == str(truncated)


def test_bad_options_are_named() -> None:
    with pytest.raises(ExportError) as error:
        plan_universal(UC, tag="global_step9")
    assert error.value.option == "tag" and "global_step9" in error.value.reason
    with pytest.raises(ExportError) as error:
        plan_universal(UC, inject_missing_state="yes")  # type: ignore[arg-type]
    assert error.value.option == "inject_missing_state"
    with pytest.raises(ExportError, match="is remote"):
        plan_universal("s3://bucket/run")


def test_nbytes_count_each_storage_once() -> None:
    plan = plan_universal(UC)
    by_name = {f.name: f for f in plan.files}
    assert by_name["zero/emb.weight/fp32.pt"].nbytes == 16 * 8 * 4
    assert by_name["zero/emb.weight/step.pt"].nbytes == 4
    assert by_name["zero/optimizer_state.pt"].nbytes == 0
    assert plan.total_size == sum(f.nbytes for f in plan.files)
    assert math.prod(by_name["zero/frozen.weight/fp32.pt"].content["param"].shape) == 16


def _uc_with_optimizer_state(**changes: Any) -> Source:
    """uc_z2_bf16_ws2's tag as read, rank 0's optimizer_state_dict changed."""
    layout = scan(UC / "global_step3", read=True).tags[0]
    layout.checkpoints["bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt"].data["optimizer_state_dict"].update(changes)
    return Source(layout)


def test_optimizer_state_as_ds_to_universal_loads_it() -> None:
    """get_state_for_rank sets partition_count to the data-parallel degree of the folder and the
    group paddings to zeros (it strips them); the rest of rank 0's state is kept as it was read."""
    source = _uc_with_optimizer_state(partition_count=[7], clip_grad=0.5)
    _, files, _ = plan_zero12(source, inject_missing_state=False, strict=True)
    state = next(f for f in files if f.name == "zero/optimizer_state.pt").content
    assert state["partition_count"] == [2] and state["clip_grad"] == 0.5 and state["group_paddings"] == [0]
    assert list(state)[-1] == "param_groups" and "base_optimizer_state" not in state
    assert isinstance(state["loss_scaler"], Opaque) and state["loss_scaler"].qualname.endswith("LossScaler")


def test_a_fragment_past_the_stripped_padding_is_refused() -> None:
    """ds_to_universal narrows exp_avg by group_paddings first; a fragment reaching past it fails there."""
    with pytest.raises(ExportError, match=r"param_slice_mappings\[0\]\['fc1.weight'\] is elements 128..144, "
                       r"group 0's exp_avg has 141"):  # fmt: skip
        plan_zero12(_uc_with_optimizer_state(group_paddings=[3]), inject_missing_state=False, strict=True)


def _tag_changed(save: str, **changes: Any) -> Source:
    """A tag as read, every model-states file's keys changed (None: the key removed)."""
    tag = next(p for p in (DATA / save).iterdir() if p.is_dir())
    layout = scan(tag, read=True).tags[0]
    for name, checkpoint in layout.checkpoints.items():
        if name.startswith("mp_rank_"):
            for key, value in changes.items():
                if value is None:
                    del checkpoint.data[key]
                else:
                    checkpoint.data[key] = value
    return Source(layout)


@pytest.mark.parametrize("save", ["fixtures/pp2_z1_bf16", "fixtures/tp2_z1_bf16"])
def test_degrees_from_the_file_counts_without_parallel_dimensions(save: str) -> None:
    """Before DeepSpeed 0.19.5 no checkpoint_parallel_dimensions: the degrees come from the counts of
    mp_rank files and of layer_01 files, as ds_to_universal finds them (run on such copies of both
    fixtures, it writes the same files as on the fixtures)."""
    source = _tag_changed(save, checkpoint_parallel_dimensions=None)
    _, files, _ = plan_zero12(source, inject_missing_state=True, strict=True)
    written = {f.name: describe(f.content) for f in files if f.copy_of is None}
    assert written == _zero(EXPECTED["saves"][save]["files"])


def test_pipeline_replicated_parameters_are_taken_from_the_first_stage() -> None:
    """Stages after the first skip pipeline_replicated_parameter_patterns: a parameter only a later
    stage holds then has no fragment, so no file (ds_to_universal, run on such a copy of
    pp2_z1_bf16, writes the files of the injected conversion less zero/2.weight/)."""
    info = {"universal_checkpoint_version": 0.4, "pipeline_replicated_parameter_patterns": [r"2\.weight"]}
    source = _layout_with_info("fixtures/pp2_z1_bf16", info)
    _, files, _ = plan_zero12(source, inject_missing_state=False, strict=True)
    written = {f.name: describe(f.content) for f in files if f.copy_of is None}
    expected = _zero(EXPECTED["saves"]["fixtures/pp2_z1_bf16"]["files"])
    assert written == {name: found for name, found in expected.items() if not name.startswith("zero/2.weight/")}
    assert len(written) == len(expected) - 4


@pytest.mark.parametrize("inside", ["", "converted", "..converted"])
def test_the_output_is_never_inside_the_tag_it_converts(inside: str) -> None:
    tag = UC / "global_step3"
    with pytest.raises(ExportError, match="is in the tag folder it converts") as error:
        plan_universal(UC, output_folder=tag / inside if inside else tag)
    assert error.value.option == "output_folder"
    assert plan_universal(UC, output_folder=UC / "global_step3x").output == str(UC / "global_step3x")
