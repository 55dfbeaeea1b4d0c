"""Member behaviour: the same on Python 3.10, 3.11, 3.12 and 3.13."""

from __future__ import annotations

import copy
import enum
import json
import pickle
import sys
import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

import ckptkeys
from ckptkeys import GROUPS, KeyGroup, ModuleKeys, NamingKeys, OptimizerKeys

ALL_MEMBERS = list(ckptkeys.iter_members())


@pytest.mark.parametrize("member", ALL_MEMBERS, ids=lambda m: f"{m.group.__name__}.{m.name}")
def test_member_is_its_value(member: KeyGroup) -> None:
    value = member.value
    assert type(value) is str
    assert isinstance(member, str)
    assert str(member) == value and type(str(member)) is str
    assert format(member) == value
    assert f"{member}" == value
    assert f"{member!s}" == value
    assert "%s" % member == value
    assert member == value and value == member
    assert not (member != value)
    assert hash(member) == hash(value)
    assert type(member)(value) is member
    assert value in type(member)
    assert member in type(member)
    assert member.group is type(member)
    assert json.dumps(member) == json.dumps(value)


def test_format_spec_applies_to_the_value() -> None:
    assert f"{OptimizerKeys.ZERO_STAGE:>12}" == "  zero_stage"
    assert f"{NamingKeys.MODEL_FILE_PREFIX}{3:02d}{NamingKeys.MODEL_FILE_SUFFIX}" == "mp_rank_03_model_states.pt"
    assert NamingKeys.LATEST + "_universal" == "latest_universal"


def test_repr_names_group_and_member() -> None:
    assert repr(OptimizerKeys.ZERO_STAGE) == "<OptimizerKeys.ZERO_STAGE: 'zero_stage'>"


def test_members_index_dicts_loaded_from_disk() -> None:
    loaded = json.loads('{"zero_stage": 2, "partition_count": [2]}')
    assert loaded[OptimizerKeys.ZERO_STAGE] == 2
    assert OptimizerKeys.PARTITION_COUNT in loaded
    built: dict[str, int] = {OptimizerKeys.ZERO_STAGE: 3}
    assert built["zero_stage"] == 3


def test_same_value_in_two_groups_is_the_same_dict_key() -> None:
    d: dict[str, str] = {ModuleKeys.DS_VERSION: "0.19.8"}
    assert d[OptimizerKeys.DS_VERSION] == "0.19.8"
    module_key: str = ModuleKeys.DS_VERSION
    optimizer_key: str = OptimizerKeys.DS_VERSION
    assert module_key == optimizer_key
    assert module_key is not optimizer_key


@given(st.one_of(st.text(), st.binary(), st.integers(), st.none(), st.floats(), st.lists(st.integers())))
def test_contains_never_raises_or_warns(value: object) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for group in GROUPS:
            expected = isinstance(value, str) and any(value == m.value for m in group)
            assert (value in group) is expected


def test_contains_unhashable_and_foreign_members() -> None:
    assert [] not in OptimizerKeys
    assert {} not in OptimizerKeys
    assert b"zero_stage" not in OptimizerKeys
    assert ModuleKeys.DS_VERSION in OptimizerKeys  # equal strings, different group
    assert NamingKeys.LATEST not in OptimizerKeys

    class Other(enum.Enum):
        ZERO = "zero_stage"

    assert Other.ZERO not in OptimizerKeys


def test_unknown_value_names_group_and_closest_values() -> None:
    with pytest.raises(ValueError) as info:
        OptimizerKeys("fp32_group")
    message = str(info.value)
    assert "OptimizerKeys" in message and "'fp32_group'" in message
    assert "'fp32_groups'" in message
    assert isinstance(info.value, ckptkeys.UnknownKeyError)
    assert isinstance(info.value, ckptkeys.CkptKeysError)


def test_unknown_value_without_close_match() -> None:
    with pytest.raises(ValueError, match=r"^'qqqqqq' is not a value of ModuleKeys$"):
        ModuleKeys("qqqqqq")


def test_member_name_given_as_value_is_suggested() -> None:
    with pytest.raises(ValueError, match="closest: 'zero_stage'"):
        OptimizerKeys("ZERO_STAGE")


@pytest.mark.parametrize("bad", [3, 2.5, None, b"zero_stage", ["zero_stage"], ("zero_stage",)])
def test_wrong_type_is_a_clear_error(bad: object) -> None:
    with pytest.raises(
        ckptkeys.UnknownKeyError, match=f"OptimizerKeys values are strings; got .* of type {type(bad).__name__}"
    ):
        OptimizerKeys(bad)  # type: ignore[arg-type]


def test_lookup_by_name() -> None:
    assert OptimizerKeys["ZERO_STAGE"] is OptimizerKeys.ZERO_STAGE
    with pytest.raises(KeyError):
        OptimizerKeys["zero_stage"]


def test_iteration_order_and_len() -> None:
    assert list(OptimizerKeys)[0] is OptimizerKeys.OPTIMIZER_STATE_DICT
    assert len(OptimizerKeys) == len(list(OptimizerKeys))


def test_members_are_immutable_singletons() -> None:
    member = OptimizerKeys.ZERO_STAGE
    assert copy.copy(member) is member
    assert copy.deepcopy(member) is member
    assert pickle.loads(pickle.dumps(member)) is member
    with pytest.raises(AttributeError):
        OptimizerKeys.ZERO_STAGE = "x"  # type: ignore[misc, assignment]


def test_backport_matches_stdlib_strenum() -> None:
    if sys.version_info >= (3, 11):
        assert issubclass(KeyGroup, enum.StrEnum)
    from ckptkeys._keys._strenum import StrEnum

    class Plain(StrEnum):
        A = "a"
        B = enum.auto()

    assert str(Plain.A) == "a" and format(Plain.A) == "a" and f"{Plain.B}" == "b"
    assert hash(Plain.A) == hash("a")
    with pytest.raises(TypeError):

        class Bad(StrEnum):
            X = 1
