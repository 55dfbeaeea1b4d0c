"""ckptkeys.validate(): every fixture is valid; every break is reported with its own code."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
from typing import Any

import pytest

import ckptkeys
from ckptkeys import OptimizerKeys, Problem, Severity, schema
from ckptkeys._keys._registry import GROUPS

from .conftest import DATA, FIXTURES

FOLDERS = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())
BROKEN = DATA / "broken"


def _errors(problems: list[Problem]) -> list[tuple[str, str | None]]:
    return sorted((p.code, os.path.basename(p.file or "")) for p in problems if p.severity is Severity.ERROR)


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_fixture_validates_without_error(folder: str) -> None:
    problems = ckptkeys.validate(FIXTURES / folder)
    assert _errors(problems) == []
    # Only converter verdicts and client_state keys remain, and on ds_to_universal's output what
    # DeepSpeed's loader does not restore (tests/test_validate_universal.py).
    universal = {"universal-frozen-not-restored", "universal-buffers-not-restored", "universal-engines"}
    allowed = {"zero-to-fp32-not-ready", "ds-to-universal-not-ready", "client-state-key"}
    assert {p.code for p in problems} <= allowed | (universal if folder == "uc_z2_bf16_ws2" else set())


@pytest.mark.parametrize(
    ("case", "code", "key_path"),
    [
        ("no_zero_stage", "missing-key", "optimizer_state_dict/zero_stage"),
        ("partition_count", "partition-count-mismatch", "optimizer_state_dict/partition_count"),
        ("stage_mismatch", "stage-mismatch", None),
        ("dp_world_size", "dp-world-size-mismatch", "dp_world_size"),
        ("mp_world_size", "mp-world-size-mismatch", "mp_world_size"),
        ("param_shapes", "param-shapes-mismatch", "param_shapes[0]"),
        ("wrong_type", "wrong-type", "ds_version"),
    ],
)
def test_pickled_breaks(case: str, code: str, key_path: str | None) -> None:
    problems = [p for p in ckptkeys.validate(BROKEN / case) if p.severity is Severity.ERROR]
    assert {p.code for p in problems} == {code}, problems
    assert all(p.key_path == key_path and type(p.key_path) in (str, type(None)) for p in problems)
    assert all(p.message for p in problems)


def test_dropped_zero_stage_is_also_a_converter_warning() -> None:
    report = ckptkeys.validate_folder(BROKEN / "no_zero_stage")
    verdict = report.tags[0].converters["zero_to_fp32"]
    assert not verdict.ready and verdict.code == "no-zero-stage"


def _copy(tmp_path: pathlib.Path, folder: str) -> pathlib.Path:
    shutil.copytree(FIXTURES / folder, tmp_path / folder)
    return tmp_path / folder


def test_deleted_rank(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "z2_bf16_ws2")
    (root / "global_step3" / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()
    # The last rank: its name cannot be missed from names, but dp_world_size and partition_count say 2.
    assert _errors(ckptkeys.validate(root)) == [("missing-rank", "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt")]
    (root / "global_step3" / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt").unlink()
    # No shard at all: a ZeRO-0 layout by names, but ds_config says ZeRO-2.
    assert _errors(ckptkeys.validate(root)) == [
        ("missing-optimizer-shards", "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt"),
        ("missing-optimizer-shards", "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt"),
    ]


def test_truncated_file_is_reported_and_the_rest_validated(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "z2_bf16_ws2")
    shard = root / "global_step3" / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt"
    shard.write_bytes(shard.read_bytes()[:1000])
    problems = ckptkeys.validate(root)
    assert ("unreadable-file", shard.name) in _errors(problems)
    report = ckptkeys.validate_folder(root)
    assert set(report.tags[0].layout.checkpoints) == {
        "mp_rank_00_model_states.pt",
        "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt",
    }


def test_mixed_bf16_and_fp32_shards(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "z2_bf16_ws2")
    tag = root / "global_step3"
    (tag / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt").rename(tag / "zero_pp_rank_1_mp_rank_00_optim_states.pt")
    codes = {c for c, _ in _errors(ckptkeys.validate(root))}
    assert {"mixed-precision", "precision-mismatch"} <= codes


def test_latest_pointing_at_nothing(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "z1_bf16_ws1")
    (root / "latest").write_text("global_step42")
    assert ("latest-missing-tag", "latest") in _errors(ckptkeys.validate(root))


def test_one_file_and_one_dict() -> None:
    shard = FIXTURES / "z2_bf16_ws2" / "global_step3" / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt"
    assert _errors(ckptkeys.validate(shard)) == []
    state = ckptkeys.read(shard).data
    assert ckptkeys.validate(state) == []
    inner = dict(state["optimizer_state_dict"])
    del inner["zero_stage"]
    problems = ckptkeys.validate(inner, kind="ZeRO-1/2 optimizer state")
    assert [(p.code, p.key_path) for p in problems] == [("missing-key", "zero_stage")]


def test_path_that_is_no_checkpoint_raises(tmp_path: pathlib.Path) -> None:
    """PATH itself unreadable, or holding no checkpoint: ReadError, where the command exits with 2."""
    bad = tmp_path / "mp_rank_00_model_states.pt"
    bad.write_bytes(b"junk")
    with pytest.raises(ckptkeys.NotACheckpointError, match="mp_rank_00_model_states.pt"):
        ckptkeys.validate(bad)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ckptkeys.NotACheckpointError, match="holds no DeepSpeed checkpoint"):
        ckptkeys.validate(empty)
    with pytest.raises(ckptkeys.ReadError, match="does not exist"):
        ckptkeys.validate(tmp_path / "nope")


def test_versions_decide_what_is_required() -> None:
    old: dict[str, Any] = {
        "module": {},
        "buffer_names": [],
        "optimizer": None,
        "param_shapes": None,
        "lr_scheduler": None,
        "sparse_tensor_module_names": [],
        "skipped_steps": 0,
        "global_steps": 1,
        "dp_world_size": 1,
        "mp_world_size": 1,
        "ds_config": {},
        "ds_version": "0.14.4",
        "frozen_param_shapes": None,
        "frozen_param_fragments": None,
    }
    assert ckptkeys.validate(old, kind="model states") == []  # no checkpoint_parallel_dimensions needed
    new = dict(old, ds_version="0.19.8")
    codes = [(p.code, p.key_path) for p in ckptkeys.validate(new, kind="model states")]
    assert codes == [("missing-key", "checkpoint_parallel_dimensions")]
    shard: dict[str, Any] = {
        "loss_scaler": None,
        "dynamic_loss_scale": False,
        "overflow": False,
        "clip_grad": 1.0,
        "base_optimizer_state": {},
        "single_partition_of_fp32_groups": [],
        "zero_stage": 2,
        "group_paddings": [0],
        "partition_count": [1],
        "ds_version": "0.14.4",
        "param_slice_mappings": [],
    }
    assert ckptkeys.validate(shard, kind="ZeRO-1/2 optimizer state") == []  # no param_alignment_paddings in 0.14
    assert [
        p.key_path for p in ckptkeys.validate(dict(shard, ds_version="0.19.8"), kind="ZeRO-1/2 optimizer state")
    ] == ["param_alignment_paddings"]


def test_schema_keys_are_registry_values() -> None:
    values = {m.value for group in GROUPS for m in group}
    for kind in schema.SPECS:
        keys = {spec.key.value for spec in kind.keys}
        assert keys <= values
        assert keys == set(kind.typed_dict.__annotations__), kind.name
        for spec in kind.keys:
            assert isinstance(spec.key, ckptkeys.KeyGroup)


def test_iterating_a_group_checks_membership() -> None:
    state = ckptkeys.read(
        FIXTURES / "z2_bf16_ws2" / "global_step3" / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt"
    ).data
    assert set(state["optimizer_state_dict"]) <= set(OptimizerKeys)


def test_moe_info_and_a_missing_last_expert(tmp_path: pathlib.Path) -> None:
    report = ckptkeys.validate_folder(FIXTURES / "moe_z2_fp32_ep2")
    from ckptkeys._check._validate import moe_info

    assert moe_info(report.tags[0].layout) == {
        "num_experts": 2,
        "num_experts_per_layer": [2],
        "ep_size": 2,
        "expert_files": 2,
    }
    assert moe_info(ckptkeys.validate_folder(FIXTURES / "z2_bf16_ws2").tags[0].layout) is None
    root = _copy(tmp_path, "moe_z2_fp32_ep2")
    (root / "global_step3" / "layer_0_expert_1_mp_rank_00_model_states.pt").unlink()
    assert _errors(ckptkeys.validate(root)) == [("missing-expert", "layer_0_expert_1_mp_rank_00_model_states.pt")]


def test_tensor_parallel_missing_rank(tmp_path: pathlib.Path) -> None:
    root = _copy(tmp_path, "tp2_z1_bf16")
    tag = root / "global_step3"
    (tag / "mp_rank_01_model_states.pt").unlink()
    (tag / "bf16_zero_pp_rank_0_mp_rank_01_optim_states.pt").unlink()
    # Names alone now say one mp rank; the model states' mp_world_size says two, and which files.
    assert _errors(ckptkeys.validate(root)) == [
        ("missing-model-states", "mp_rank_01_model_states.pt"),
        ("missing-rank", "bf16_zero_pp_rank_0_mp_rank_01_optim_states.pt"),
    ]
    result = subprocess.run(
        [sys.executable, "-m", "ckptkeys", "validate", str(root)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1 and "mp_rank_01_model_states.pt is missing" in result.stdout


def test_zero3_universal_output_warns_only_of_what_the_loader_does_not_restore() -> None:
    """ds_to_universal on ZeRO-3 keeps optimizer_state_dict and fp32_flat_groups in zero/optimizer_state.pt."""
    report = ckptkeys.validate_folder(DATA / "universal_z3")
    (tag,) = report.tags
    assert tag.layout.universal and report.layout.latest_universal == tag.layout.name
    state = ckptkeys.read(DATA / "universal_z3" / tag.layout.name / "zero" / "optimizer_state.pt").data
    assert {"optimizer_state_dict", "fp32_flat_groups", "param_groups"} <= set(state)
    warned = [p.code for p in report.all_problems if p.severity is not Severity.INFO]
    assert warned == ["universal-frozen-not-restored", "universal-buffers-not-restored"]


# -- converter verdicts as users meet them -----------------------------------------------------------

CLIENT_SAVES = [
    DATA / "clients" / "hf_trainer_z2_bf16" / "checkpoint-2",
    DATA / "clients" / "hf_trainer_z2_bf16" / "checkpoint-4",
    DATA / "clients" / "lightning_z2" / "epoch=0-step=2.ckpt",
    DATA / "clients" / "lightning_z2" / "epoch=0-step=4.ckpt",
]


@pytest.mark.parametrize("save", CLIENT_SAVES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_framework_saves_tied_weights_and_inject_missing_state(save: pathlib.Path) -> None:
    report = ckptkeys.validate_folder(save)
    assert report.layout.framework in ("transformers", "lightning")
    (tag,) = report.tags
    zero_to_fp32 = tag.converters["zero_to_fp32"]
    assert zero_to_fp32.ready
    safe = zero_to_fp32.safe_serialization
    assert safe is not None and not safe.ready and safe.code == "tied-weights"
    assert "lm_head.weight" in (safe.reason or "") and "without --safe_serialization" in (safe.reason or "")
    universal = tag.converters["ds_to_universal"]
    assert universal.code == "no-universal-info"
    assert (universal.reason or "").startswith("run ds_to_universal with --inject_missing_state")
    assert [p for p in report.all_problems if p.severity is Severity.WARNING] == []
    codes = sorted(p.code for p in report.all_problems if p.code in CONVERTER_CODES)
    assert codes == ["ds-to-universal-not-ready", "zero-to-fp32-safetensors-not-ready"]  # information, once each


def test_deepspeed_own_saves_keep_the_client_state_way_out() -> None:
    (tag,) = ckptkeys.validate_folder(FIXTURES / "z2_bf16_ws2").tags
    reason = tag.converters["ds_to_universal"].reason or ""
    assert reason.startswith("no universal_checkpoint_info") and "--inject_missing_state" in reason
    safe = tag.converters["zero_to_fp32"].safe_serialization
    assert safe is not None and safe.ready  # no tied weights in this model


def test_a_universal_tag_is_not_applicable_and_warns_only_of_what_the_loader_does_not_restore() -> None:
    report = ckptkeys.validate_folder(FIXTURES / "uc_z2_bf16_ws2")
    universal = next(t for t in report.tags if t.layout.universal)
    for verdict in universal.converters.values():
        assert not verdict.ready and not verdict.applicable and verdict.code == "universal" and verdict.reason
    warned = [p.code for p in universal.problems if p.severity is not Severity.INFO]
    assert warned == ["universal-frozen-not-restored", "universal-buffers-not-restored"]


# Every folder DeepSpeed (directly or through a framework) wrote: no warning; converter verdicts are
# information. tests/test_converters_deepspeed.py proves each verdict against DeepSpeed's converters.
DEEPSPEED_WRITTEN = (
    [FIXTURES / f for f in FOLDERS]
    + CLIENT_SAVES
    + [DATA / n for n in ("moe_z0_fp32_ep2", "universal_z3", "pp2_z0_fp32")]
)
CONVERTER_CODES = {"zero-to-fp32-not-ready", "ds-to-universal-not-ready", "zero-to-fp32-safetensors-not-ready"}


@pytest.mark.parametrize("folder", DEEPSPEED_WRITTEN, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_deepspeed_output_has_no_warning_and_converter_verdicts_are_information(folder: pathlib.Path) -> None:
    """But on a universal tag, the warnings about resuming from it (tests/test_validate_universal.py)."""
    problems = ckptkeys.validate(folder)
    resuming = {"universal-frozen-not-restored", "universal-buffers-not-restored"}
    assert [p for p in problems if p.severity is not Severity.INFO and p.code not in resuming] == []
    assert {p.severity for p in problems if p.code in CONVERTER_CODES} <= {Severity.INFO}


def test_client_state_keys_once_per_tag() -> None:
    """ZeRO-3 writes the client state into every rank's model states: one problem per key, not per file."""
    problems = ckptkeys.validate(FIXTURES / "z3_bf16_ws2")
    assert [(p.code, p.key_path) for p in problems] == [("client-state-key", "my_note")]


# -- MoE without ZeRO ----------------------------------------------------------------------------------

MOE_Z0 = DATA / "moe_z0_fp32_ep2"


def test_moe_without_zero_ep_size_from_the_param_group() -> None:
    from ckptkeys._check._validate import moe_info

    (tag,) = ckptkeys.validate_folder(MOE_Z0).tags
    assert tag.layout.zero_stage == 0
    assert moe_info(tag.layout) == {"num_experts": 2, "num_experts_per_layer": [2], "ep_size": 2, "expert_files": 2}
    result = subprocess.run(
        [sys.executable, "-m", "ckptkeys", "inspect", str(MOE_Z0)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and "ep_size=2, 2 expert files" in result.stdout
    verdicts = tag.converters
    assert "the weights are already whole" in (verdicts["zero_to_fp32"].reason or "")
    assert verdicts["ds_to_universal"].code == "no-optimizer-state"


@pytest.mark.parametrize("rank", [0, 1])
def test_moe_without_zero_missing_expert_optimizer_file(tmp_path: pathlib.Path, rank: int) -> None:
    root = tmp_path / "moe"
    shutil.copytree(MOE_Z0, root)
    name = f"expp_rank_{rank}_mp_rank_00_optim_states.pt"
    (root / "global_step3" / name).unlink()
    assert _errors(ckptkeys.validate(root)) == [("missing-expert-optim", name)]
    result = subprocess.run(
        [sys.executable, "-m", "ckptkeys", "validate", str(root)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1 and f"missing-expert-optim: {root / 'global_step3' / name}" in result.stdout


# -- one path: the library and the command ---------------------------------------------------------


def _cli_problems(path: pathlib.Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, "-m", "ckptkeys", "validate", "--json", str(path)], capture_output=True, text=True, check=False
    )
    document = json.loads(result.stdout)
    reports = [s["report"] for s in document["saves"] if s["report"]] if document["kind"] == "run" else [document]
    return [p for r in reports for p in r["problems"] + [p for t in r["tags"] for p in t["problems"]]]


def _as_json(problems: list[Problem]) -> list[dict[str, Any]]:
    return [
        {"severity": str(p.severity), "code": p.code, "file": p.file, "key_path": p.key_path, "message": p.message}
        for p in problems
    ]


def test_library_and_command_agree(tmp_path: pathlib.Path) -> None:
    renamed = tmp_path / "model.pt"  # model states under a name DeepSpeed does not write
    shutil.copy(FIXTURES / "z1_fp16_ws2" / "global_step3" / "mp_rank_00_model_states.pt", renamed)
    paths = [
        renamed,
        FIXTURES / "z1_fp16_ws2" / "global_step3" / "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        FIXTURES / "z1_fp16_ws2" / "global_step3",
        FIXTURES / "uc_z2_bf16_ws2",
        DATA / "broken" / "partition_count",
        DATA / "clients" / "lightning_z2",
    ]
    for path in paths:
        assert _cli_problems(path) == _as_json(ckptkeys.validate(path)), path
    assert [p.code for p in ckptkeys.validate(renamed)] == ["client-state-key"]


def test_every_problem_code_is_documented() -> None:
    """Every code the sources can give (problems, the files a layout expects, converter verdicts) is
    documented; docs/validation.md's code table is the list ``_check._codes.CODES`` holds, severities
    included, in its order: the one list --select and --ignore check codes against."""
    import re

    from ckptkeys._check._codes import CODES
    from ckptkeys._check._converters import NOT_READY, SAFETENSORS_NOT_READY

    source = "\n".join(p.read_text(encoding="utf-8") for p in (DATA.parent.parent / "src" / "ckptkeys").rglob("*.py"))
    problem_codes = set(re.findall(r'Problem\(\s*(?:E|W|INFO|Severity\.\w+),\s*"([a-z0-9-]+)"', source))
    problem_codes |= set(re.findall(r'\("(missing-[a-z-]+)", ', source))
    problem_codes |= {*NOT_READY.values(), SAFETENSORS_NOT_READY}
    verdict_codes = set(re.findall(r'Verdict\(\s*False,\s*"([a-z0-9-]+)"', source))
    assert {"missing-expert-optim", "framework-client-state"} <= problem_codes
    assert {"tied-weights", "no-universal-info"} <= verdict_codes
    assert sorted(problem_codes - set(CODES)) == []
    text = (DATA.parent.parent / "docs" / "validation.md").read_text(encoding="utf-8")
    table = re.findall(r"^\| `([a-z0-9-]+)` \| ([a-z]+) \|", text, flags=re.MULTILINE)
    assert table == [(code, str(severity)) for code, severity in CODES.items()]
    assert sorted(code for code in verdict_codes if f"`{code}`" not in text) == []
