"""The registry against DeepSpeed 0.19.8's constants and against keys in real checkpoints."""

from __future__ import annotations

import enum
import pathlib
import re
from collections.abc import Iterable
from typing import Any

import pytest

import ckptkeys
from ckptkeys import (
    GROUPS,
    KeyGroup,
    LossScalerKeys,
    ModuleKeys,
    NamingKeys,
    OptimFileKeys,
    OptimizerKeys,
    ParallelDimsKeys,
    ParamPatternKeys,
    UniversalKeys,
    UniversalParamKeys,
    UniversalStateKeys,
    VocabKeys,
)

from .conftest import FIXTURES, reference_constants

STRING_CONSTANTS = [c for c in reference_constants() if c["type"] == "str"]
OTHER_CONSTANTS = [c for c in reference_constants() if c["type"] != "str"]

# The groups whose member names are DeepSpeed's constant names, as the issue requires.
DS_NAMED_GROUPS = (OptimizerKeys, ModuleKeys, NamingKeys, UniversalKeys, VocabKeys, ParamPatternKeys)


def test_reference_has_96_constants() -> None:
    assert len(reference_constants()) == 96
    assert len(STRING_CONSTANTS) == 91


@pytest.mark.parametrize("constant", STRING_CONSTANTS, ids=lambda c: c["name"])
def test_every_string_constant_is_exactly_one_member(constant: dict[str, Any]) -> None:
    homes = [m for m in ckptkeys.iter_members() if m.deepspeed_name == constant["name"]]
    assert len(homes) == 1, homes
    (member,) = homes
    assert member.value == constant["value"]
    assert member.name == constant["name"]
    assert ckptkeys.member_for_constant(constant["name"]) is member


def test_no_member_claims_a_constant_deepspeed_lacks() -> None:
    names = {c["name"] for c in STRING_CONSTANTS}
    claimed = [m.deepspeed_name for m in ckptkeys.iter_members() if m.deepspeed_name is not None]
    assert sorted(claimed) == sorted(names)


@pytest.mark.parametrize("constant", OTHER_CONSTANTS, ids=lambda c: c["name"])
def test_non_string_constants_are_final_values(constant: dict[str, Any]) -> None:
    value = getattr(ckptkeys, constant["name"])
    assert type(value).__name__ == constant["type"]
    expected = tuple(constant["value"]) if constant["type"] == "tuple" else constant["value"]
    assert value == expected


def test_autoep_required_fields_are_members() -> None:
    assert all(isinstance(m, ckptkeys.AutoEPKeys) for m in ckptkeys.AUTOEP_ZERO12_REQUIRED_FIELDS)


@pytest.mark.parametrize("group", DS_NAMED_GROUPS, ids=lambda g: g.__name__)
def test_required_groups_use_deepspeed_names(group: type[KeyGroup]) -> None:
    constants = [m for m in group if m.deepspeed_name is not None]
    assert constants, f"{group.__name__} holds no DeepSpeed constant"
    for member in constants:
        assert member.name == member.deepspeed_name


def test_issue_examples() -> None:
    # Typed as str: mypy's strict equality calls an enum literal and a str literal non-overlapping.
    examples: dict[str, str] = {
        OptimizerKeys.FP32_GROUPS: "fp32_groups",
        NamingKeys.MODEL_FILE_PREFIX: "mp_rank_",
        UniversalKeys.UNIVERSAL_CHECKPOINT_INFO: "universal_checkpoint_info",
        ParamPatternKeys.VOCABULARY_PARAMETER_PATTERNS: "vocabulary_parameter_patterns",
    }
    for member, value in examples.items():
        assert member == value


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.__name__)
def test_no_group_holds_an_alias(group: type[KeyGroup]) -> None:
    # An alias would appear in __members__ but not in iteration.
    assert list(group.__members__.values()) == list(group)
    values = [m.value for m in group]
    assert len(values) == len(set(values))


def test_unique_decorator_would_reject_an_alias() -> None:
    with pytest.raises(ValueError, match="duplicate values"):

        @enum.unique
        class Broken(KeyGroup):
            A = ("ep_size", "one")
            B = ("ep_size", "two")


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.__name__)
def test_every_member_is_documented(group: type[KeyGroup]) -> None:
    assert group.__doc__ and group.__doc__.strip()
    for member in group:
        assert isinstance(member.description, str)
        assert member.description.strip() == member.description
        assert "\n" not in member.description
        assert len(member.description) > 10, member
        assert member.since is None or re.fullmatch(r"0\.\d+\.\d+", member.since), member.since


def test_since_matches_reference_where_known() -> None:
    # Spot checks from the reference's "since" column.
    assert OptimizerKeys.OPTIMIZER_STATE_DICT.since == "0.6.0"
    assert OptimizerKeys.BASE_OPTIMIZER_STATE_STEP.since == "0.11.0"
    assert NamingKeys.FP16_ZERO_FILE_PREFIX.since == "0.7.4"
    assert ParallelDimsKeys.CHECKPOINT_TP_DEGREE.since == "0.19.5"
    assert VocabKeys.VOCAB_TENSOR.since == "0.12.3"


def test_groups_tuple_lists_every_exported_group() -> None:
    exported = {
        obj
        for name in ckptkeys.__all__
        if isinstance(obj := getattr(ckptkeys, name), type) and issubclass(obj, KeyGroup)
    }
    assert exported - {KeyGroup} == set(GROUPS)


def test_members_for_spans_groups() -> None:
    assert set(ckptkeys.members_for("ds_version")) == {
        ModuleKeys.DS_VERSION,
        OptimFileKeys.DS_VERSION,
        OptimizerKeys.DS_VERSION,
    }
    assert {m.group.__name__ for m in ckptkeys.members_for("ep_size")} == {
        "AutoEPKeys",
        "AutoEPPlacementKeys",
        "FoldingKeys",
    }
    assert ckptkeys.members_for("no such key") == ()
    assert ckptkeys.members_for(3) == ()
    assert ckptkeys.members_for(OptimizerKeys.ZERO_STAGE) == (OptimizerKeys.ZERO_STAGE,)


def test_members_for_agrees_with_iteration() -> None:
    members = list(ckptkeys.iter_members())
    assert len(members) == sum(len(g) for g in GROUPS)
    for member in members:
        assert member in ckptkeys.members_for(member.value)
    for value in {m.value for m in members}:
        assert all(m.value == value for m in ckptkeys.members_for(value))


def test_member_for_constant_rejects_unknown_names() -> None:
    with pytest.raises(ckptkeys.UnknownKeyError, match="closest: FP32_GROUPS"):
        ckptkeys.member_for_constant("FP32_GROUP")
    with pytest.raises(ValueError, match="not a string constant"):
        ckptkeys.member_for_constant("UNIVERSAL_CHECKPOINT_VERSION_VALUE")  # a float, not a key
    with pytest.raises(ValueError):
        ckptkeys.member_for_constant(None)


# --- Keys DeepSpeed writes as literals, as they appear in real checkpoints --------------------


def _load(path: pathlib.Path) -> Any:
    return ckptkeys.read(path).data


def _files(pattern: str) -> list[pathlib.Path]:
    files = sorted(FIXTURES.glob(pattern))
    assert files, pattern
    return files


def _keys(mapping: Any) -> set[str]:
    assert isinstance(mapping, dict), type(mapping)
    return set(mapping)


def _assert_covered(found: Iterable[str], *groups: type[KeyGroup], ignore: Iterable[str] = ()) -> None:
    missing = set(found) - set(ignore) - {m.value for g in groups for m in g}
    assert not missing, f"keys found in fixtures but in none of {[g.__name__ for g in groups]}: {missing}"


CLIENT_STATE = {"my_note"}  # what the fixture writers passed as client_state


def test_model_states_top_level_keys() -> None:
    for path in _files("*/*/*model_states.pt"):
        if "expert" in path.name or path.name.startswith("layer_"):
            continue  # flat state dicts of expert weights / pipeline layers
        state = _load(path)
        _assert_covered(_keys(state), ModuleKeys, ignore=CLIENT_STATE)
        _assert_covered(_keys(state[ModuleKeys.CHECKPOINT_PARALLEL_DIMS]), ParallelDimsKeys)
        info = state.get(ModuleKeys.UNIVERSAL_CHECKPOINT_INFO)
        if info is not None:
            _assert_covered(_keys(info), UniversalKeys, ParamPatternKeys, VocabKeys)
        optimizer = state[ModuleKeys.OPTIMIZER]
        if isinstance(optimizer, dict) and OptimizerKeys.CUR_SCALE in optimizer:  # fp16 wrapper
            _assert_covered(_keys(optimizer), OptimizerKeys)


def test_optim_states_keys() -> None:
    for path in _files("*/*/*optim_states.pt"):
        state = _load(path)
        _assert_covered(_keys(state), OptimFileKeys)
        inner = state[OptimFileKeys.OPTIMIZER_STATE_DICT]
        _assert_covered(_keys(inner), OptimizerKeys)
        scaler = inner.get(OptimizerKeys.LOSS_SCALER)
        if scaler is not None:
            _assert_covered(_keys(scaler.state), LossScalerKeys)


def test_universal_files() -> None:
    universal = FIXTURES / "uc_z2_bf16_ws2" / "global_step3_universal"
    assert (universal / NamingKeys.UNIVERSAL_ZERO_FOLDER / NamingKeys.UNIVERSAL_OPTIMIZER_STATE_FILE).is_file()
    _assert_covered(_keys(_load(universal / "zero" / "optimizer_state.pt")), OptimizerKeys)
    for path in _files("uc_z2_bf16_ws2/global_step3_universal/zero/*/*.pt"):
        assert path.stem in UniversalStateKeys, path
        state = _load(path)
        if isinstance(state, dict):
            _assert_covered(_keys(state), UniversalParamKeys)
    for tag_file in (NamingKeys.LATEST, NamingKeys.LATEST_UNIVERSAL):
        assert (FIXTURES / "uc_z2_bf16_ws2" / tag_file).is_file()


def test_schema_versions_come_from_the_registry() -> None:
    # A version a key is required from is either "every version", "optional", the registry's
    # `since` for the key, or (only for keys the registry does not date) a version of its own.
    from ckptkeys import schema

    derived = set()
    for kind in schema.SPECS:
        for spec in kind.keys:
            assert spec.required_from in ("0.0.0", None, spec.key.since) or spec.key.since is None, (kind.name, spec)
            if spec.required_from not in ("0.0.0", None) and spec.required_from == spec.key.since:
                derived.add(f"{kind.name}: {spec.key.name}")
    assert "model states: CHECKPOINT_PARALLEL_DIMS" in derived  # checkpoint_parallel_dimensions, since 0.19.5
    assert "ZeRO-1/2 optimizer state: PARAM_SLICE_MAPPINGS" in derived


def test_a_dated_key_cannot_restate_its_version() -> None:
    from ckptkeys import schema

    with pytest.raises(ValueError, match=r"ModuleKeys\.FROZEN_PARAM_SHAPES is dated 0\.9\.1 in the registry"):
        schema._k(ModuleKeys.FROZEN_PARAM_SHAPES, dict, required_from="0.9.1")
    with pytest.raises(ValueError, match=r"ModuleKeys\.DS_CONFIG has no since"):
        schema._added(ModuleKeys.DS_CONFIG)
    assert schema._added(ModuleKeys.FROZEN_PARAM_SHAPES, dict).required_from == ModuleKeys.FROZEN_PARAM_SHAPES.since
