"""Correct use of the registry and the shim: must type-check under mypy --strict."""

from __future__ import annotations

from typing import Literal, TypedDict

from ckptkeys import KeyGroup, ModuleKeys, OptimizerKeys, Severity, members_for, plain
from ckptkeys.constants import (
    AUTOEP_ZERO12_REQUIRED_FIELDS,
    PARTITION_COUNT,
    UNIVERSAL_CHECKPOINT_VERSION_VALUE,
    ZERO_STAGE,
)


class Inner(TypedDict):
    zero_stage: int
    partition_count: list[int]


def stage(state: Inner) -> int:
    # Shim names are Final literals, so they index a TypedDict.
    return state[ZERO_STAGE] + len(state[PARTITION_COUNT])


def wants_literal(key: Literal["zero_stage"]) -> str:
    return key


def use() -> None:
    key: OptimizerKeys = OptimizerKeys.FP32_GROUPS
    text: str = key  # a member is a str
    description: str = key.description
    since: str | None = key.since
    constant: str | None = key.deepspeed_name
    group: type[KeyGroup] = key.group
    state: dict[str, object] = {ModuleKeys.DS_VERSION: "0.19.8"}
    saved: dict[str, object] = plain(state)
    version: float = UNIVERSAL_CHECKPOINT_VERSION_VALUE
    fields: tuple[str, ...] = AUTOEP_ZERO12_REQUIRED_FIELDS
    found: tuple[KeyGroup, ...] = members_for("ep_size")
    wants_literal(ZERO_STAGE)
    for member in OptimizerKeys:
        print(member.value.upper(), text, description, since, constant, group, saved, version, fields, found)


def values(member: KeyGroup) -> str:
    # `.value` is str on every target (returning Any would be an error under --strict).
    text: str = OptimizerKeys.ZERO_STAGE.value
    counts: dict[str, int] = {ModuleKeys.MODULE.value: 1}
    level: str = Severity.ERROR.value
    print(text, counts, level)
    return member.value
