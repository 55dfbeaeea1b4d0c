"""Closed sets of str parameters (``kind=``, ``dtype=``, ``weights=``): Literal types that match
what the functions accept at run time, and a ValueError that lists the accepted values.

tests/typing_cases/bad_closed_sets.py checks that mypy rejects the misuses."""

from __future__ import annotations

import argparse
import pathlib
import re
import typing
from typing import Any

import pytest

import ckptkeys
from ckptkeys import DictKindName, Dtype, Weights, schema
from ckptkeys._check._entry import KIND_CHOICES
from ckptkeys._cli._main import _parser
from ckptkeys._export._types import DTYPE_CHOICES, WEIGHTS_CHOICES

from .conftest import FIXTURES

MODEL_STATES = FIXTURES / "z0_fp32_ws1" / "global_step3" / "mp_rank_00_model_states.pt"


def test_the_kind_type_is_the_schema_specs_names() -> None:
    assert typing.get_args(DictKindName) == tuple(spec.name for spec in schema.SPECS) == KIND_CHOICES


def test_the_dtype_and_weights_types_are_the_accepted_values() -> None:
    assert typing.get_args(Dtype) == DTYPE_CHOICES == ("fp32", "bf16", "fp16", "auto")
    assert typing.get_args(Weights) == WEIGHTS_CHOICES == ("masters", "module")


def _export_choices(option: str) -> tuple[Any, ...]:
    parser = _parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    export = commands.choices["export"]
    action = next(a for a in export._actions if option in a.option_strings)
    assert action.choices is not None
    return tuple(action.choices)


def test_the_command_offers_the_same_values() -> None:
    assert _export_choices("--dtype") == typing.get_args(Dtype)
    assert _export_choices("--weights") == typing.get_args(Weights)


@pytest.mark.parametrize("kind", KIND_CHOICES)
def test_every_kind_is_accepted(kind: DictKindName) -> None:
    assert isinstance(ckptkeys.validate({}, kind=kind), list)


def _kind_error(spelling: str) -> str:
    accepted = ", ".join(repr(name) for name in KIND_CHOICES)
    return re.escape(f"kind must be one of {accepted}; not {spelling!r}")


@pytest.mark.parametrize(
    ("spelling", "meant"),
    [
        ("model_states", "model states"),
        ("model-states", "model states"),
        ("Model States", "model states"),
        ("optimizer_states_file", "optimizer-states file"),
        ("zero-3 optimizer state", "ZeRO-3 optimizer state"),
        ("universal checkpoint info", "universal_checkpoint_info"),
    ],
)
def test_a_misspelt_kind_lists_the_kinds_and_names_the_one_meant(spelling: str, meant: str) -> None:
    message = _kind_error(spelling) + re.escape(f"; did you mean {meant!r}?") + "$"
    with pytest.raises(ValueError, match=message):
        ckptkeys.validate({}, kind=spelling)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        ckptkeys.validate(MODEL_STATES, kind=spelling)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        ckptkeys.validate_file(MODEL_STATES, kind=spelling)  # type: ignore[arg-type]


def test_an_unknown_kind_lists_the_kinds() -> None:
    with pytest.raises(ValueError, match=_kind_error("optimizer") + "$"):
        ckptkeys.validate({}, kind="optimizer")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=_kind_error("") + "$"):
        ckptkeys.validate(MODEL_STATES, kind="")  # type: ignore[arg-type]


def test_a_bad_kind_is_named_before_anything_is_read(tmp_path: pathlib.Path) -> None:
    # Not the folder's "kind applies to one file", nor the missing path's ReadError.
    for path in (FIXTURES / "z0_fp32_ws1", tmp_path / "absent.pt"):
        with pytest.raises(ValueError, match=_kind_error("model_states")):
            ckptkeys.validate_path(path, kind="model_states")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind applies to one file"):
        ckptkeys.validate_path(FIXTURES / "z0_fp32_ws1", kind="model states")


def test_the_right_kind_checks_the_file_as_that_kind() -> None:
    as_model_states = ckptkeys.validate_file(MODEL_STATES, kind="model states")
    as_optimizer = ckptkeys.validate_file(MODEL_STATES, kind="ZeRO-3 optimizer state")
    assert not [p for p in as_model_states.problems if p.code == "missing-key"]
    assert [p for p in as_optimizer.problems if p.code == "missing-key"]


def test_a_bad_dtype_or_weights_lists_the_values(tmp_path: pathlib.Path) -> None:
    folder = FIXTURES / "z2_bf16_ws2"
    with pytest.raises(ValueError, match=r"^dtype must be one of fp32, bf16, fp16, auto, not 'bf8'$"):
        ckptkeys.plan_export(folder, dtype="bf8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^weights must be one of masters, module, not 'master'$"):
        ckptkeys.export(folder, tmp_path / "out", weights="master")  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("dtype", DTYPE_CHOICES)
def test_every_dtype_is_accepted(dtype: Dtype) -> None:
    plan = ckptkeys.plan_export(FIXTURES / "z2_bf16_ws2", dtype=dtype)
    assert plan.dtype == ("bf16" if dtype == "auto" else dtype)
