"""ckptkeys.scan(): the layout of every fixture folder, and the problems of broken copies."""

from __future__ import annotations

import os
import pathlib
import shutil
from dataclasses import dataclass

import pytest

import ckptkeys
from ckptkeys import Layout, NotACheckpointError, ReadError, Severity
from ckptkeys.naming import FileKind

from .conftest import FIXTURES


@dataclass(frozen=True)
class Expected:
    """What DeepSpeed wrote (fixtures/README.md), and what the names alone can tell."""

    tag: str
    stage: int
    precision: str
    dp: int
    mp: int
    pp: int
    tp: int
    stage_from_names: int | None
    precision_from_names: str | None


EXPECTED = {
    "z0_fp32_ws1": Expected("global_step3", 0, "fp32", 1, 1, 1, 1, 0, None),
    "z0_fp16_ws1": Expected("global_step3", 0, "fp16", 1, 1, 1, 1, 0, None),
    "z1_bf16_ws1": Expected("global_step3", 1, "bf16", 1, 1, 1, 1, None, "bf16"),
    "z1_fp16_ws2": Expected("global_step3", 1, "fp16", 2, 1, 1, 1, None, None),
    "z2_bf16_ws2": Expected("global_step3", 2, "bf16", 2, 1, 1, 1, None, "bf16"),
    "z3_bf16_ws2": Expected("global_step3", 3, "bf16", 2, 1, 1, 1, 3, "bf16"),
    "pp2_z1_bf16": Expected("global_step2", 1, "bf16", 1, 2, 2, 1, None, "bf16"),
    "tp2_z1_bf16": Expected("global_step3", 1, "bf16", 1, 2, 1, 2, None, "bf16"),
    "moe_z2_fp32_ep2": Expected("global_step3", 2, "fp32", 2, 1, 1, 1, None, None),
    "uc_z2_bf16_ws2": Expected("global_step3", 2, "bf16", 2, 1, 1, 1, None, "bf16"),
}


def test_every_fixture_is_listed() -> None:
    assert sorted(EXPECTED) == sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())


@pytest.mark.parametrize("folder", sorted(EXPECTED))
def test_save_folder_from_names(folder: str) -> None:
    expected = EXPECTED[folder]
    layout = ckptkeys.scan(FIXTURES / folder)
    assert layout.kind == "save"
    assert layout.latest == expected.tag
    assert not layout.all_problems, layout.all_problems
    tag = layout.tag(expected.tag)
    assert tag.zero_stage == expected.stage_from_names
    assert tag.precision == expected.precision_from_names
    assert tag.mp_world_size == expected.mp
    assert tag.checkpoints == {}  # nothing read


@pytest.mark.parametrize("folder", sorted(EXPECTED))
def test_save_folder_from_files(folder: str) -> None:
    expected = EXPECTED[folder]
    layout = ckptkeys.scan(FIXTURES / folder, read=True)
    assert not layout.all_problems, layout.all_problems
    tag = layout.tag(expected.tag)
    got = (tag.zero_stage, tag.precision, tag.dp_world_size, tag.mp_world_size, tag.pp_world_size, tag.tp_world_size)
    assert got == (expected.stage, expected.precision, expected.dp, expected.mp, expected.pp, expected.tp)
    assert set(tag.checkpoints) == {f.relpath for f in tag.files}


def test_tag_folder_given_directly() -> None:
    layout = ckptkeys.scan(FIXTURES / "z2_bf16_ws2" / "global_step3")
    assert layout.kind == "tag" and layout.latest is None
    (tag,) = layout.tags
    assert tag.name == "global_step3"
    shards = tag.of_kind(FileKind.OPTIM_STATES)
    assert [(f.name.dp_rank, f.name.mp_rank, f.name.precision) for f in shards] == [(0, 0, "bf16"), (1, 0, "bf16")]
    assert tag.dp_world_size == 2
    assert all(f.size == os.path.getsize(f.path) for f in tag.files)


def test_universal_folder() -> None:
    layout = ckptkeys.scan(FIXTURES / "uc_z2_bf16_ws2")
    assert layout.latest_universal == "global_step3_universal"
    universal = layout.tag("global_step3_universal")
    assert universal.universal and universal.zero_stage is None
    states = universal.of_kind(FileKind.UNIVERSAL_PARAM_STATE)
    assert {f.name.param for f in states} == {
        "emb.weight",
        "fc1.weight",
        "fc1.bias",
        "fc2.weight",
        "fc2.bias",
        "frozen.weight",
        "frozen.bias",
        "scale",
    }
    assert universal.of_kind(FileKind.UNIVERSAL_OPTIMIZER_STATE)[0].relpath == "zero/optimizer_state.pt"
    assert not layout.tag("global_step3").universal


def test_pipeline_and_expert_files() -> None:
    tag = ckptkeys.scan(FIXTURES / "pp2_z1_bf16").tag("global_step2")
    assert [f.name.layer for f in tag.of_kind(FileKind.LAYER_MODEL_STATES)] == [0, 1, 2, 3]
    assert tag.pp_world_size is None  # layer files: the names do not tell the stages
    moe = ckptkeys.scan(FIXTURES / "moe_z2_fp32_ep2").tag("global_step3")
    assert [(f.name.layer, f.name.expert) for f in moe.of_kind(FileKind.EXPERT_MODEL_STATES)] == [(0, 0), (0, 1)]


# -- broken copies -------------------------------------------------------------------------------


def _copy(tmp_path: pathlib.Path, folder: str) -> pathlib.Path:
    target = tmp_path / folder
    shutil.copytree(FIXTURES / folder, target)
    return target


def _codes(layout: Layout) -> list[tuple[str, str, str]]:
    return sorted((p.severity.value, p.code, os.path.basename(p.file or "")) for p in layout.all_problems)


def test_missing_rank(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "z2_bf16_ws2")
    (root / "global_step3" / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt").unlink()
    assert _codes(ckptkeys.scan(root)) == [("error", "missing-rank", "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt")]


def test_missing_tensor_parallel_rank(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "tp2_z1_bf16")
    (root / "global_step3" / "mp_rank_01_model_states.pt").unlink()
    assert _codes(ckptkeys.scan(root)) == [("error", "missing-model-states", "mp_rank_01_model_states.pt")]


def test_missing_zero3_model_states(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "z3_bf16_ws2")
    (root / "global_step3" / "zero_pp_rank_1_mp_rank_00_model_states.pt").unlink()
    assert _codes(ckptkeys.scan(root)) == [
        ("error", "missing-model-states", "zero_pp_rank_1_mp_rank_00_model_states.pt")
    ]


def test_missing_expert(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "moe_z2_fp32_ep2")
    (root / "global_step3" / "layer_0_expert_0_mp_rank_00_model_states.pt").unlink()
    assert _codes(ckptkeys.scan(root)) == [("error", "missing-expert", "layer_0_expert_0_mp_rank_00_model_states.pt")]


def test_mixed_precision_prefixes(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "z2_bf16_ws2")
    tag = root / "global_step3"
    (tag / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt").rename(tag / "zero_pp_rank_1_mp_rank_00_optim_states.pt")
    layout = ckptkeys.scan(root)
    assert ("error", "mixed-precision", "global_step3") in _codes(layout)
    assert layout.tag("global_step3").precision is None


def test_latest_names_an_absent_tag(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "z1_bf16_ws1")
    (root / "latest").write_text("global_step99")
    assert _codes(ckptkeys.scan(root)) == [("error", "latest-missing-tag", "latest")]


def test_model_states_without_optimizer_shards(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "z1_bf16_ws1")
    (root / "global_step3" / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt").unlink()
    assert _codes(ckptkeys.scan(root)) == []  # from names alone it looks like ZeRO-0
    assert _codes(ckptkeys.scan(root, read=True)) == [
        ("error", "missing-optimizer-shards", "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt")
    ]


def test_optimizer_shards_without_model_states(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "z2_bf16_ws2")
    (root / "global_step3" / "mp_rank_00_model_states.pt").unlink()
    assert _codes(ckptkeys.scan(root)) == [("error", "missing-model-states", "mp_rank_00_model_states.pt")]


def test_unreadable_files_are_one_problem_each(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "z2_bf16_ws2")
    tag = root / "global_step3"
    (tag / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt").write_bytes(b"garbage")
    raw = (tag / "mp_rank_00_model_states.pt").read_bytes()
    (tag / "mp_rank_00_model_states.pt").write_bytes(raw[: len(raw) // 2])
    layout = ckptkeys.scan(root, read=True)
    assert _codes(layout) == [
        ("error", "unreadable-file", "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt"),
        ("error", "unreadable-file", "mp_rank_00_model_states.pt"),
    ]
    scanned = layout.tag("global_step3")
    assert list(scanned.checkpoints) == ["bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt"]
    assert scanned.zero_stage == 2  # the good shard still says so


def test_symlink_out_of_the_folder_is_not_followed(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "z1_bf16_ws1")
    outside = tmp_path / "outside"
    shutil.copytree(FIXTURES / "z2_bf16_ws2" / "global_step3", outside)
    (root / "global_step9").symlink_to(outside, target_is_directory=True)
    (root / "global_step3" / "stray.pt").symlink_to(outside / "mp_rank_00_model_states.pt")
    layout = ckptkeys.scan(root, read=True)
    assert [t.name for t in layout.tags] == ["global_step3"]
    assert _codes(layout) == [
        ("warning", "symlink-outside", "global_step9"),
        ("warning", "symlink-outside", "stray.pt"),
    ]


def test_symlink_inside_the_folder_is_followed(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "z1_bf16_ws1")
    (root / "best").symlink_to(root / "global_step3", target_is_directory=True)
    assert sorted(t.name for t in ckptkeys.scan(root).tags) == ["best", "global_step3"]


def test_unknown_files_are_listed(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "z1_bf16_ws1")
    (root / "global_step3" / "notes.txt").write_text("hi")
    (root / "zero_to_fp32.py").write_text("# script")
    layout = ckptkeys.scan(root)
    assert layout.tag("global_step3").other_files == ("notes.txt",)
    assert not layout.all_problems


def test_empty_and_unrelated_folders(tmp_path: pathlib.Path) -> None:
    with pytest.raises(NotACheckpointError, match="holds no DeepSpeed checkpoint"):
        ckptkeys.scan(tmp_path)
    (tmp_path / "data.csv").write_text("a,b\n")
    (tmp_path / "sub").mkdir()
    with pytest.raises(NotACheckpointError):
        ckptkeys.scan(tmp_path)


def test_missing_path_and_file(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ReadError, match="does not exist"):
        ckptkeys.scan(tmp_path / "nope")
    with pytest.raises(ReadError, match="is a file"):
        ckptkeys.scan(FIXTURES / "z1_bf16_ws1" / "latest")


def test_problem_text() -> None:
    problem = ckptkeys.Problem(Severity.ERROR, "missing-rank", "x is missing", "/a/x")
    assert str(problem) == "error: missing-rank: /a/x: x is missing"
