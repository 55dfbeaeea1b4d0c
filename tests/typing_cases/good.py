"""Correct use of the registry and the shim: must type-check under mypy --strict."""

from __future__ import annotations

from typing import Literal, TypedDict

from ckptkeys import (
    DictKindName,
    Dtype,
    KeyGroup,
    ModuleKeys,
    OptimizerKeys,
    Severity,
    Weights,
    export,
    members_for,
    plain,
    plan_export,
    validate,
    validate_file,
    validate_path,
)
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


def closed_sets(kind: DictKindName, dtype: Dtype, weights: Weights) -> None:
    # Every accepted spelling type-checks, and so do the public aliases.
    plan_export("ckpt", dtype="fp32", weights="masters")
    plan_export("ckpt", dtype="bf16", weights="module")
    export("ckpt", "out", dtype="fp16")
    export("ckpt", "out", dtype="auto", weights=weights)
    plan_export("ckpt", dtype=dtype)
    validate("ckpt", kind="model states")
    validate({}, kind="ZeRO-1/2 optimizer state")
    validate_file("ckpt", kind="optimizer-states file")
    validate_path("ckpt", kind="universal_checkpoint_info")
    validate_path("ckpt", kind=kind)
    validate("ckpt")
    output: str = plan_export("ckpt").dtype
    source: Weights = plan_export("ckpt").weights
    print(output, source)
