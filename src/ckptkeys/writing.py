"""Typed, validated builders for what a training script writes into ``client_state``.

``ds_to_universal`` refuses a checkpoint whose model states lack ``universal_checkpoint_info``.
A training script writes it through ``engine.save_checkpoint(..., client_state=...)`` as a dict
of a version, regex pattern lists and vocabulary sizes, with loose string keys nothing checks.
:func:`universal_checkpoint_info` takes every field DeepSpeed 0.19.8 reads as a keyword
argument, checks it the way ``ds_to_universal`` will, and returns a plain dict (``str`` keys,
lists, tuples, numbers) that ``torch.save`` and ``torch.load(weights_only=True)`` accept::

    info = universal_checkpoint_info(
        tp_replicated_parameter_patterns=[r"fc\\d\\.bias"],
        parameter_with_row_parallelism_patterns=[r"fc2\\.weight"],
    )
    engine.save_checkpoint(save_dir, client_state={UniversalKeys.UNIVERSAL_CHECKPOINT_INFO.value: info})

See ``docs/writing.md``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from ._errors import CkptKeysError
from ._keys._registry import (
    UNIVERSAL_CHECKPOINT_VERSION_VALUE,
    ParamPatternKeys,
    SubParamKeys,
    UniversalKeys,
    VocabKeys,
)
from .schema import SubParamEntry, UniversalCheckpointInfo

__all__ = ["SUPPORTED_VERSIONS", "InvalidInfoError", "SubParam", "client_state", "universal_checkpoint_info"]

SUPPORTED_VERSIONS: Final = (0.2, 0.3, 0.4)
"""Universal-checkpoint info versions DeepSpeed releases wrote (0.1 was reserved for BLOOM-176B)."""
_SHARD_WIDTHS_SINCE: Final = 0.4  # ds_to_universal reads sub_param_shard_widths from this version on


class InvalidInfoError(CkptKeysError, ValueError):
    """A field of ``universal_checkpoint_info`` that ``ds_to_universal`` would reject or misread."""


@dataclass(frozen=True, slots=True)
class SubParam:
    """One fused parameter made of sub-parameters (DeepSpeed's ``SubparamShape``).

    ``shape`` is the fused parameter's shape with, at ``partition_dim``, the tuple of the
    sub-parameters' sizes (version >= 0.4), e.g. fused QKV of 3 x 512 rows: ``((512, 512, 512), 1024)``;
    before 0.4 an int there counts equal sub-parameters.
    """

    patterns: Sequence[str]
    shape: Sequence[int | Sequence[int]]
    partition_dim: int


def _patterns(key: str, patterns: Sequence[str]) -> list[str]:
    if isinstance(patterns, str) or not all(isinstance(p, str) for p in patterns):
        raise InvalidInfoError(f"{key} must be a list of regex strings, not {patterns!r}")
    result = list(patterns)
    for pattern in result:
        try:
            re.compile(pattern)
        except re.error as error:
            raise InvalidInfoError(f"{key}: pattern {pattern!r} does not compile: {error}") from None
    duplicates = sorted({p for p in result if result.count(p) > 1})
    if duplicates:
        raise InvalidInfoError(f"{key}: patterns appear twice: {duplicates}")
    return result


def _positive(key: str, value: int | None) -> int | None:
    if value is not None and (type(value) is not int or value <= 0):
        raise InvalidInfoError(f"{key} must be a positive int, not {value!r}")
    return value


def _sub_param(index: int, entry: SubParam, version: float) -> tuple[SubParamEntry, tuple[int, ...] | None]:
    where = f"{ParamPatternKeys.PARAMETER_WITH_SUB_PARAMS}[{index}]"
    patterns = _patterns(f"{where}.{SubParamKeys.PATTERNS}", entry.patterns)
    if not patterns:
        raise InvalidInfoError(f"{where} needs at least one pattern")
    shape: list[int | list[int]] = []
    for dim in entry.shape:
        if isinstance(dim, int) and not isinstance(dim, bool):
            shape.append(dim)
        elif isinstance(dim, Sequence) and dim and all(type(d) is int and d > 0 for d in dim):
            shape.append(list(dim))
        else:
            raise InvalidInfoError(f"{where}.{SubParamKeys.SHAPE}: {dim!r} is neither an int nor a tuple of sizes")
    if type(entry.partition_dim) is not int or not 0 <= entry.partition_dim < len(shape):
        raise InvalidInfoError(f"{where}.{SubParamKeys.PARTITION_DIM} {entry.partition_dim!r} is not a dim of {shape}")
    at = shape[entry.partition_dim]
    sizes = tuple(at) if isinstance(at, list) else None
    if version >= _SHARD_WIDTHS_SINCE and sizes is None:
        raise InvalidInfoError(
            f"{where}: version {version} needs the sub-parameters' sizes at partition_dim, as a tuple, not {at!r}"
        )
    built: SubParamEntry = {"patterns": patterns, "shape": shape, "partition_dim": entry.partition_dim}
    return built, sizes


def _shard_widths(
    widths: Mapping[str, Sequence[Sequence[int]]], sizes_by_pattern: dict[str, tuple[int, ...]]
) -> dict[str, list[list[int]]]:
    key = ParamPatternKeys.SUB_PARAM_SHARD_WIDTHS
    result: dict[str, list[list[int]]] = {}
    degrees = set()
    for pattern, rows in widths.items():
        if pattern not in sizes_by_pattern:
            raise InvalidInfoError(
                f"{key}: {pattern!r} is not a pattern of {ParamPatternKeys.PARAMETER_WITH_SUB_PARAMS}"
            )
        sizes = sizes_by_pattern[pattern]
        table = [list(row) for row in rows]
        if len(table) != len(sizes):
            raise InvalidInfoError(f"{key}[{pattern!r}]: {len(table)} rows for {len(sizes)} sub-parameters")
        for size, row in zip(sizes, table, strict=True):
            if not row or not all(type(w) is int and w >= 0 for w in row):
                raise InvalidInfoError(f"{key}[{pattern!r}]: {row!r} is not a list of widths")
            if sum(row) != size:
                raise InvalidInfoError(
                    f"{key}[{pattern!r}]: widths {row} sum to {sum(row)}, the sub-parameter is {size}"
                )
            degrees.add(len(row))
        result[pattern] = table
    if len(degrees) > 1:
        raise InvalidInfoError(f"{key}: rows give different tensor-parallel degrees {sorted(degrees)}")
    missing = sorted(set(sizes_by_pattern) - set(result))
    if missing:
        raise InvalidInfoError(f"{key} has no widths for the sub-parameter patterns {missing}")
    return result


def universal_checkpoint_info(
    *,
    version: float = UNIVERSAL_CHECKPOINT_VERSION_VALUE,
    original_vocab_size: int | None = None,
    padded_vocab_size: int | None = None,
    vocabulary_parameter_patterns: Sequence[str] = (),
    pipeline_replicated_parameter_patterns: Sequence[str] = (),
    parameter_to_average_patterns: Sequence[str] = (),
    parameter_with_row_parallelism_patterns: Sequence[str] = (),
    tp_replicated_parameter_patterns: Sequence[str] = (),
    parameter_with_2_sub_params_cat_dim_0: Sequence[str] = (),
    parameter_with_sub_params: Sequence[SubParam] = (),
    sub_param_shard_widths: Mapping[str, Sequence[Sequence[int]]] | None = None,
    expert_parameter_patterns: Sequence[str] = (),
) -> UniversalCheckpointInfo:
    """The ``universal_checkpoint_info`` dict ``ds_to_universal`` reads, checked on construction.

    Pattern lists are regexes matched with ``re.match`` against parameter names (anchored at
    the start only). Raises :class:`InvalidInfoError` (a ``ValueError``) naming the field for a
    pattern that does not compile, a version DeepSpeed never wrote, vocabulary sizes that do
    not fit, sub-parameter shapes or shard widths that do not add up. The result has plain
    ``str`` keys and holds only lists, ints and floats.
    """
    if version not in SUPPORTED_VERSIONS or isinstance(version, bool):
        raise InvalidInfoError(f"version {version!r} is not one DeepSpeed writes: {SUPPORTED_VERSIONS}")
    original = _positive(VocabKeys.ORIGINAL_VOCAB_SIZE, original_vocab_size)
    padded = _positive(VocabKeys.PADDED_VOCAB_SIZE, padded_vocab_size)
    if original is not None and padded is not None and padded < original:
        raise InvalidInfoError(f"padded_vocab_size {padded} is smaller than original_vocab_size {original}")
    info: UniversalCheckpointInfo = {"universal_checkpoint_version": float(version)}
    if original is not None:
        info["original_vocab_size"] = original
    if padded is not None:
        info["padded_vocab_size"] = padded
    info["vocabulary_parameter_patterns"] = _patterns(
        ParamPatternKeys.VOCABULARY_PARAMETER_PATTERNS, vocabulary_parameter_patterns
    )
    info["pipeline_replicated_parameter_patterns"] = _patterns(
        ParamPatternKeys.PIPELINE_REPLICATED_PARAMETER_PATTERNS, pipeline_replicated_parameter_patterns
    )
    info["parameter_to_average_patterns"] = _patterns(
        ParamPatternKeys.PARAMETER_TO_AVERAGE_PATTERNS, parameter_to_average_patterns
    )
    info["parameter_with_row_parallelism_patterns"] = _patterns(
        ParamPatternKeys.PARAMETER_WITH_ROW_PARALLELISM_PATTERNS, parameter_with_row_parallelism_patterns
    )
    info["tp_replicated_parameter_patterns"] = _patterns(
        ParamPatternKeys.TP_REPLICATED_PARAMETER_PATTERNS, tp_replicated_parameter_patterns
    )
    info["parameter_with_2_sub_params_cat_dim_0"] = _patterns(
        ParamPatternKeys.PARAMETER_WITH_2_SUB_PARAMS_CAT_DIM_0, parameter_with_2_sub_params_cat_dim_0
    )
    entries: list[SubParamEntry] = []
    sizes_by_pattern: dict[str, tuple[int, ...]] = {}
    for index, entry in enumerate(parameter_with_sub_params):
        if not isinstance(entry, SubParam):
            raise InvalidInfoError(f"{ParamPatternKeys.PARAMETER_WITH_SUB_PARAMS}[{index}] must be a SubParam")
        built, sizes = _sub_param(index, entry, version)
        entries.append(built)
        if sizes is not None:
            sizes_by_pattern.update(dict.fromkeys(built["patterns"], sizes))
    if entries:
        info["parameter_with_sub_params"] = entries
    if version >= _SHARD_WIDTHS_SINCE and (entries or sub_param_shard_widths):
        info["sub_param_shard_widths"] = _shard_widths(sub_param_shard_widths or {}, sizes_by_pattern)
    elif sub_param_shard_widths:
        raise InvalidInfoError(f"sub_param_shard_widths needs version >= {_SHARD_WIDTHS_SINCE}, not {version}")
    if expert_parameter_patterns:
        info["expert_parameter_patterns"] = _patterns(
            ParamPatternKeys.EXPERT_PARAMETER_PATTERNS, expert_parameter_patterns
        )
    return info


def client_state(info: UniversalCheckpointInfo, **extra: object) -> dict[str, object]:
    """``client_state`` for ``engine.save_checkpoint``: the info under its key, plus your own entries."""
    if UniversalKeys.UNIVERSAL_CHECKPOINT_INFO.value in extra:
        raise InvalidInfoError("pass universal_checkpoint_info as the first argument, not as a keyword")
    return {UniversalKeys.UNIVERSAL_CHECKPOINT_INFO.value: info, **extra}
