"""Completeness: every file whose loss or damage changes the model or the optimizer state is an error.

The deletion/truncation matrix: every checkpoint under tests/data, each file deleted in turn and
truncated at a few offsets (0, 1 byte, half, size - 1, just before the zip end record).
``validate`` reports an ERROR naming that file and ``export`` refuses naming it, leaving no file
under a final name in OUT_DIR. The files whose loss changes nothing are listed, with the reason.
"""

from __future__ import annotations

import io
import os
import pathlib
import shutil
import zipfile
from contextlib import redirect_stderr, redirect_stdout

import pytest

import ckptkeys
from ckptkeys import ExportError, ReadError, Severity
from ckptkeys._cli._main import main

from .conftest import DATA, FIXTURES

CHECKPOINTS = [
    *(f"fixtures/{p.name}" for p in sorted(FIXTURES.iterdir()) if p.is_dir()),
    "moe_z0_fp32_ep2",
    "universal_z3",
    "pp2_z0_fp32",
    "clients/hf_trainer_z2_bf16/checkpoint-2",
    "clients/lightning_z2/epoch=0-step=2.ckpt",
]

# Files whose loss or damage changes neither the model nor the optimizer state, and why.
TRAINER_SIDE_FILE = (
    "written by the Hugging Face Trainer beside the DeepSpeed save (trainer state, RNG state, arguments, "
    "config, its own safetensors copy); no DeepSpeed file needs it and export reads the DeepSpeed save"
)
UNCHANGED = {  # deleted or cut: no DeepSpeed file needs it
    "clients/hf_trainer_z2_bf16/checkpoint-2": {
        name: TRAINER_SIDE_FILE
        for name in (
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "rng_state.pth",
            "trainer_state.json",
            "training_args.bin",
        )
    },
}
UNCHANGED_WHEN_DELETED = {  # deleted: nothing lost; cut, a damaged checkpoint file like any other
    "fixtures/uc_z2_bf16_ws2": {
        "global_step3_universal/zero/scale/fp32.pt": (
            "the model's only buffer: ds_to_universal writes it, but the model states' module holds the buffer "
            "too, and export and DeepSpeed's universal load both take it from there"
        ),
    },
}
POINTERS = ("latest", "latest_universal")
"""Deleting a pointer leaves every tag intact (validate reports no error: a missing ``latest`` is the
``no-latest`` warning); export without a tag then needs ``latest`` and refuses naming it. Truncated,
a pointer names a tag that is not there."""


def _tag_of(relpath: str) -> str | None:
    parts = relpath.split("/")
    return parts[0] if len(parts) > 1 else None


def _files(checkpoint: str) -> list[str]:
    root = DATA / checkpoint
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _end_record(data: bytes) -> int | None:
    at = data.rfind(b"PK\x05\x06")
    return at if data.startswith(b"PK\x03\x04") and at > 0 else None


def _cuts(path: pathlib.Path) -> list[int]:
    data = path.read_bytes()
    size = len(data)
    cuts = {0, 1, size // 2, size - 1}
    end = _end_record(data)
    if end is not None:
        cuts.add(end)
    return sorted(c for c in cuts if 0 <= c < size)


def _error_files(problems: list[ckptkeys.Problem]) -> set[str]:
    return {os.path.normpath(p.file) for p in problems if p.severity is Severity.ERROR and p.file}


def _check_case(copy: pathlib.Path, relpath: str, out: pathlib.Path) -> None:
    target = os.path.normpath(copy / relpath)
    problems = ckptkeys.validate(copy)
    assert target in _error_files(problems), (relpath, [str(p) for p in problems])
    with pytest.raises((ExportError, ReadError)) as refused:
        ckptkeys.export(copy, out, tag=_tag_of(relpath))
    assert target in str(refused.value) or f"{copy}: has no 'latest'" in str(refused.value), str(refused.value)
    assert not (out.exists() and any(p.name.startswith("model") for p in out.iterdir()))


CASES = [
    (checkpoint, relpath, how)
    for checkpoint in CHECKPOINTS
    for relpath in _files(checkpoint)
    for how in ("delete", "truncate")
]


@pytest.mark.parametrize(("checkpoint", "relpath", "how"), CASES, ids=[f"{c}:{r}:{h}" for c, r, h in CASES])
def test_every_lost_or_cut_file_is_an_error_and_refuses_export(
    tmp_path: pathlib.Path, checkpoint: str, relpath: str, how: str
) -> None:
    copy = tmp_path / "save"
    shutil.copytree(DATA / checkpoint, copy)
    target = copy / relpath
    deleted_only = UNCHANGED_WHEN_DELETED.get(checkpoint, {})
    if relpath in UNCHANGED.get(checkpoint, {}) or (how == "delete" and relpath in deleted_only):
        # Nothing changes: the export of its tag is the export of the intact checkpoint.
        target.unlink() if how == "delete" else target.write_bytes(b"")
        assert not _error_files(ckptkeys.validate(copy)) & {os.path.normpath(target)}
        return
    if how == "delete":
        target.unlink()
        if relpath in POINTERS:
            problems = ckptkeys.validate(copy)
            assert os.path.normpath(target) not in _error_files(problems)
            if relpath == "latest" and not (copy / "latest_universal").exists():
                assert [p.severity for p in problems if p.code == "no-latest"] == ["warning"]
            if relpath == "latest":
                with pytest.raises(ExportError, match="has no 'latest' file"):
                    ckptkeys.export(copy, tmp_path / "out")
            return
        if relpath.count("/") == 1 and not any(p.is_file() for p in target.parent.rglob("*")):
            # The tag's only file: the folder is no tag any more, and `latest` names it.
            problems = ckptkeys.validate(copy)
            assert [(p.code, os.path.basename(p.file or "")) for p in problems] == [("latest-missing-tag", "latest")]
            assert "whose folder holds no checkpoint file" in problems[0].message
            return
        _check_case(copy, relpath, tmp_path / "out")
        return
    original = target.read_bytes()
    for cut in _cuts(target):
        target.write_bytes(original[:cut])
        if relpath in POINTERS:
            problems = ckptkeys.validate(copy)
            assert os.path.normpath(target) in _error_files(problems), (cut, [str(p) for p in problems])
        else:
            _check_case(copy, relpath, tmp_path / f"out{cut}")
    target.write_bytes(original)


def test_a_zero_to_fp32_copy_changes_nothing(tmp_path: pathlib.Path) -> None:
    """DeepSpeed copies its zero_to_fp32.py beside a save (the fixtures had it removed): a script,
    no checkpoint file needs it; deleted or cut, validate and export see the same checkpoint."""
    copy = tmp_path / "save"
    shutil.copytree(FIXTURES / "z2_bf16_ws2", copy)
    script = copy / "zero_to_fp32.py"
    script.write_text("# zero_to_fp32.py, as DeepSpeed copies it beside the save\n" * 20)
    intact = [(t.name, t.shape, t.dtype) for t in ckptkeys.plan_export(FIXTURES / "z2_bf16_ws2").tensors]
    for cut in (None, 100, 0):
        if cut is not None:
            script.write_bytes(script.read_bytes()[:cut])
        assert not _error_files(ckptkeys.validate(copy))
        assert [(t.name, t.shape, t.dtype) for t in ckptkeys.plan_export(copy).tensors] == intact
    script.unlink()
    assert not _error_files(ckptkeys.validate(copy))
    ckptkeys.export(copy, tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_the_exemptions_name_files_that_exist() -> None:
    for checkpoint, names in (*UNCHANGED.items(), *UNCHANGED_WHEN_DELETED.items()):
        assert set(names) <= set(_files(checkpoint)), checkpoint


# -- the repros, and what validate says -----------------------------------------------------


def _copy(tmp_path: pathlib.Path, checkpoint: str) -> pathlib.Path:
    shutil.copytree(DATA / checkpoint, tmp_path / "save")
    return tmp_path / "save"


def _errors(problems: list[ckptkeys.Problem]) -> list[tuple[str, str]]:
    return sorted((p.code, os.path.basename(p.file or "")) for p in problems if p.severity is Severity.ERROR)


def _first_error(problems: list[ckptkeys.Problem]) -> ckptkeys.Problem:
    return next(p for p in problems if p.severity is Severity.ERROR)


def test_a_pipeline_without_zero_lacking_its_last_layer_file(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "pp2_z0_fp32")
    (root / "global_step2" / "layer_03-model_states.pt").unlink()
    problems = ckptkeys.validate(root)
    assert _errors(problems) == [("missing-layer", "layer_03-model_states.pt")]
    problem = _first_error(problems)
    # What needs it: stage 1's optimizer state, a parameter of shape (4, 8).
    assert "mp_rank_01_model_states.pt's optimizer state" in problem.message
    assert "(4, 8)" in problem.message


def test_a_layer_number_far_beyond_the_files_is_one_problem(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "pp2_z0_fp32")
    layers = root / "global_step2"
    shutil.copy(layers / "layer_03-model_states.pt", layers / "layer_999999999-model_states.pt")
    problems = ckptkeys.validate(root)
    assert _errors(problems) == [("count-beyond-files", "layer_999999999-model_states.pt")]
    assert "layer 999999999 in the name says 1000000000 files" in _first_error(problems).message


def test_a_layer_gap_is_named_once(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "pp2_z0_fp32")
    (root / "global_step2" / "layer_00-model_states.pt").unlink()
    assert _errors(ckptkeys.validate(root)) == [("missing-layer", "layer_00-model_states.pt")]


def test_a_zero_pipeline_names_the_layer_its_param_shapes_need(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "fixtures/pp2_z1_bf16")
    (root / "global_step2" / "layer_03-model_states.pt").unlink()
    problems = ckptkeys.validate(root)
    assert _errors(problems) == [("missing-layer", "layer_03-model_states.pt")]
    assert "param_shapes[0] lists '3.weight'" in _first_error(problems).message


def test_a_layer_file_holding_other_shapes_is_a_mismatch(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "fixtures/pp2_z1_bf16")
    layers = root / "global_step2"
    shutil.copy(layers / "layer_03-model_states.pt", layers / "layer_02-model_states.pt")  # (4, 8) where (8, 8) is
    problems = ckptkeys.validate(root)
    assert ("layer-param-mismatch", "layer_02-model_states.pt") in _errors(problems)
    assert all(p.key_path in ("weight", "bias") for p in problems if p.code == "layer-param-mismatch")


def test_optimizer_shards_all_missing_are_named(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "fixtures/z1_fp16_ws2")
    for rank in (0, 1):
        (root / "global_step3" / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").unlink()
    assert _errors(ckptkeys.validate(root)) == [
        ("missing-optimizer-shards", "zero_pp_rank_0_mp_rank_00_optim_states.pt"),
        ("missing-optimizer-shards", "zero_pp_rank_1_mp_rank_00_optim_states.pt"),
    ]


def test_expert_files_without_model_states(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "moe_z0_fp32_ep2")
    (root / "global_step3" / "mp_rank_00_model_states.pt").unlink()
    assert ("missing-model-states", "mp_rank_00_model_states.pt") in _errors(ckptkeys.validate(root))


def test_a_frozen_fragment_missing_from_a_rank(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "universal_z3")
    (root / "global_step3_universal" / "zero_pp_rank_1_mp_rank_00_model_states.pt").unlink()
    assert _errors(ckptkeys.validate(root)) == [("missing-model-states", "zero_pp_rank_1_mp_rank_00_model_states.pt")]


def test_universal_states_missing_for_one_parameter(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "fixtures/uc_z2_bf16_ws2")
    (root / "global_step3_universal" / "zero" / "fc1.bias" / "exp_avg.pt").unlink()
    problems = ckptkeys.validate(root)
    assert _errors(problems) == [("missing-universal-param", "exp_avg.pt")]
    assert "zero/fc1.bias/exp_avg.pt is missing" in _first_error(problems).message


def _storage_past_the_end(source: pathlib.Path) -> bytes:
    """A copy of a zip checkpoint whose last storage record's local header claims an extra field
    that runs the record's bytes past the file's end, its central directory left as it was: the
    directory, the pickle and every offset stay valid, only reading the tensor's bytes would fail."""
    data = bytearray(source.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        records = [i for i in archive.infolist() if "/data/" in i.filename]
        last = max(records, key=lambda i: i.header_offset)
    extra_length_at = last.header_offset + 28
    data[extra_length_at : extra_length_at + 2] = (0xFFFF).to_bytes(2, "little")
    return bytes(data)


def test_a_record_past_the_end_is_a_truncated_file(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "fixtures/z2_bf16_ws2")
    shard = root / "global_step3" / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt"
    shard.write_bytes(_storage_past_the_end(shard))
    ckptkeys.read(shard)  # the structure reads: read() never reads tensor bytes
    problems = ckptkeys.validate(root)
    assert _errors(problems) == [("truncated-file", shard.name)]
    assert "extends past the end of the file" in _first_error(problems).message
    with pytest.raises(ExportError, match="truncated-file"):
        ckptkeys.plan_export(root)


# -- export refuses, and --weights module -------------------------------------------------------------


def test_export_refuses_a_pipeline_stage_without_its_optimizer_shard(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "fixtures/pp2_z1_bf16")
    shard = root / "global_step2" / "bf16_zero_pp_rank_0_mp_rank_01_optim_states.pt"
    shard.unlink()
    with pytest.raises(ExportError) as refused:
        ckptkeys.plan_export(root)
    assert refused.value.path == str(shard)
    assert refused.value.reason.startswith("missing-rank: ")
    plan = ckptkeys.plan_export(root, weights="module")  # asked for: the layer files' bf16 weights
    assert plan.weights == "module"
    assert plan.metadata()["weights"] == "module"
    assert {t.source_dtype for t in plan.tensors} == {"bfloat16"}
    assert {t.origin for t in plan.tensors} == {"module"}


def test_export_counts_the_other_problems(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "pp2_z0_fp32")
    (root / "global_step2" / "layer_01-model_states.pt").unlink()
    (root / "global_step2" / "layer_02-model_states.pt").unlink()
    with pytest.raises(ExportError) as refused:
        ckptkeys.plan_export(root)
    assert refused.value.path.endswith("layer_01-model_states.pt")
    assert "1 more problem(s): ckptkeys validate lists them" in refused.value.reason


def test_module_weights_still_refuse_a_missing_module_file(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "pp2_z0_fp32")
    (root / "global_step2" / "layer_03-model_states.pt").unlink()
    with pytest.raises(ExportError, match=r"layer_03-model_states\.pt"):
        ckptkeys.plan_export(root, weights="module")


def test_module_weights_of_zero2_are_the_module_as_saved(tmp_path: pathlib.Path) -> None:
    plan = ckptkeys.plan_export(FIXTURES / "z2_bf16_ws2", weights="module", dtype="auto")
    masters = ckptkeys.plan_export(FIXTURES / "z2_bf16_ws2")
    assert sorted(t.name for t in plan.tensors) == sorted(t.name for t in masters.tensors)
    # The parameters as the module saved them (bf16); the buffer keeps its saved float32 until cast.
    assert {t.name: t.source_dtype for t in plan.tensors if t.origin == "buffer"} == {"scale": "float32"}
    assert {t.source_dtype for t in plan.tensors if t.origin == "module"} == {"bfloat16"}
    assert {t.dtype for t in plan.tensors} == {"bfloat16"}
    assert masters.weights == "masters"
    assert {t.source_dtype for t in masters.tensors if t.origin == "trainable"} == {"float32"}
    with pytest.raises(ValueError, match="weights must be one of masters, module"):
        ckptkeys.plan_export(FIXTURES / "z2_bf16_ws2", weights="fp32")  # type: ignore[arg-type]  # mypy rejects it too


def test_module_weights_skip_a_cut_shard_but_not_a_hostile_one(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "fixtures/z2_bf16_ws2")
    shard = root / "global_step3" / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt"
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(ExportError, match="unreadable-file"):
        ckptkeys.plan_export(root)
    assert ckptkeys.plan_export(root, weights="module").weights == "module"
    # A pickle that calls os.system: what torch.load(weights_only=False) of the shard would run.
    shard.write_bytes(b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00echo\x85R.")
    assert "code-execution" in {p.code for p in ckptkeys.validate(root)}
    with pytest.raises(ExportError, match="code-execution"):
        ckptkeys.plan_export(root, weights="module")


def test_module_weights_of_tensor_parallel_take_one_rank() -> None:
    with pytest.raises(ExportError, match=r"the module's weights as saved are one rank's shard") as e:
        ckptkeys.plan_export(FIXTURES / "tp2_z1_bf16", weights="module")
    assert e.value.option == "tp_rank"
    plan = ckptkeys.plan_export(FIXTURES / "tp2_z1_bf16", weights="module", tp_rank=1)
    assert {t.sources[0].path for t in plan.tensors} == {
        str(FIXTURES / "tp2_z1_bf16" / "global_step3" / "mp_rank_01_model_states.pt")
    }
    with pytest.raises(ExportError, match="is pipeline and tensor parallel: not exported yet"):
        ckptkeys.plan_export(FIXTURES / "pp2_z1_bf16", weights="module", tp_rank=1)


def test_module_weights_refuse_zero3(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ExportError, match="ZeRO-3, whose model states hold no module weights"):
        ckptkeys.plan_export(FIXTURES / "z3_bf16_ws2", weights="module")


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def _model_states_of(checkpoint: str) -> str:
    """A model-states file of one of the checkpoint's tags (the last, in name order)."""
    return [r for r in _files(checkpoint) if r.endswith("model_states.pt") and "/" in r][-1]


def _alone_in_its_tag(checkpoint: str, relpath: str) -> bool:
    tag = relpath.split("/")[0] + "/"
    return len([r for r in _files(checkpoint) if r.startswith(tag)]) == 1


COMMAND_CASES = [
    (checkpoint, how)
    for checkpoint in CHECKPOINTS
    for how in ("delete", "truncate")
    # A tag's only file deleted leaves no tag: the matrix above checks that case.
    if how == "truncate" or not _alone_in_its_tag(checkpoint, _model_states_of(checkpoint))
]


@pytest.mark.parametrize(("checkpoint", "how"), COMMAND_CASES)
def test_the_commands_exit_1_naming_the_file(tmp_path: pathlib.Path, checkpoint: str, how: str) -> None:
    root = _copy(tmp_path, checkpoint)
    relpath = _model_states_of(checkpoint)
    target = root / relpath
    if how == "delete":
        target.unlink()
    else:
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    status, out, _ = _run("validate", str(root))
    assert status == 1
    assert str(target) in out
    out_dir = tmp_path / "out"
    status, _, err = _run("export", str(root), str(out_dir), "--tag", relpath.split("/")[0])
    assert status == 1
    assert str(target) in err
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_the_command_says_which_weights(tmp_path: pathlib.Path) -> None:
    status, out, _ = _run("export", "--dry-run", str(FIXTURES / "pp2_z1_bf16"), str(tmp_path / "o"))
    assert status == 0
    assert "weights     fp32 master weights" in out
    status, out, _ = _run("export", "--dry-run", "--weights", "module", str(FIXTURES / "pp2_z1_bf16"), str(tmp_path))
    assert status == 0
    assert "weights     the module's weights as saved (--weights module)" in out
    status, _, err = _run("export", "--weights", "module", str(FIXTURES / "pp2_z1_bf16"), str(tmp_path / "w"))
    assert status == 0
    assert "(the module's weights as saved (--weights module))" in err


def test_a_legacy_file_cut_in_its_storages_is_a_truncated_file(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "fixtures/z0_fp32_ws1")
    model = root / "global_step3" / "mp_rank_00_model_states.pt"
    legacy = (DATA / "torch" / "sample_legacy.pt").read_bytes()
    assert ckptkeys.read(DATA / "torch" / "sample_legacy.pt").storages_end == len(legacy)
    model.write_bytes(legacy[:-1])  # the pickles intact, the last storage one byte short
    cut = ckptkeys.read(model)
    assert (cut.format, cut.storages_end, cut.size) == ("legacy", len(legacy), len(legacy) - 1)
    truncated = [p for p in ckptkeys.validate(root) if p.code == "truncated-file"]
    assert [(os.path.basename(p.file or ""), p.severity) for p in truncated] == [(model.name, Severity.ERROR)]
    assert f"storages up to byte {len(legacy)}, the file has {len(legacy) - 1} bytes" in truncated[0].message
