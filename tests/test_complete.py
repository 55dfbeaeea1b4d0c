"""Completeness: every file whose loss or damage changes the model or the optimizer state is an error."""

from __future__ import annotations

import io
import os
import pathlib
import shutil
import zipfile

import ckptkeys
from ckptkeys import Severity

from .conftest import DATA

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
