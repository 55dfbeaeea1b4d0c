"""ckptkeys.constants: a drop-in for deepspeed.checkpoint.constants 0.19.8."""

from __future__ import annotations

import ast
import importlib
import pickle
from typing import Any

import pytest

import ckptkeys
import ckptkeys.constants as shim
from ckptkeys._keys import _render

from .conftest import ROOT, reference_constants

REFERENCE = {c["name"]: c for c in reference_constants()}


def test_exports_exactly_deepspeeds_names() -> None:
    assert sorted(shim.__all__) == sorted(REFERENCE)
    namespace: dict[str, Any] = {}
    exec("from ckptkeys.constants import *", namespace)
    namespace.pop("__builtins__")
    assert sorted(namespace) == sorted(REFERENCE)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_value_and_type_match_deepspeed(name: str) -> None:
    expected = REFERENCE[name]
    value = getattr(shim, name)
    assert type(value).__name__ == expected["type"]
    if expected["type"] == "tuple":
        assert value == tuple(expected["value"])
        assert all(type(item) is str for item in value)
    else:
        assert value == expected["value"]
    assert repr(value) == repr(tuple(expected["value"]) if expected["type"] == "tuple" else expected["value"])
    # Plain values: pickles that never mention ckptkeys.
    assert b"ckptkeys" not in pickle.dumps(value)


def test_shim_agrees_with_registry_name_by_name() -> None:
    for name in REFERENCE:
        value = getattr(shim, name)
        if REFERENCE[name]["type"] == "str":
            assert ckptkeys.member_for_constant(name) == value
        else:
            assert getattr(ckptkeys, name) == value


def test_shim_is_generated_from_registry() -> None:
    committed = (ROOT / "src" / "ckptkeys" / "constants.py").read_text(encoding="utf-8")
    assert committed == _render.render_constants_module(), "run: python scripts/regen.py"


def test_every_name_is_declared_final() -> None:
    tree = ast.parse((ROOT / "src" / "ckptkeys" / "constants.py").read_text(encoding="utf-8"))
    finals = {
        node.target.id
        for node in tree.body
        if isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and isinstance(node.annotation, ast.Name)
        and node.annotation.id == "_Final"
    }
    assert finals == set(REFERENCE)


@pytest.mark.deepspeed
def test_matches_installed_deepspeed() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("deepspeed")
    real = importlib.import_module("deepspeed.checkpoint.constants")
    names = {n for n in vars(real) if not n.startswith("_")}
    assert names == set(shim.__all__)
    for name in names:
        ours, theirs = getattr(shim, name), getattr(real, name)
        assert ours == theirs and type(ours) is type(theirs), name
        if isinstance(theirs, tuple):
            assert [type(x) for x in ours] == [type(x) for x in theirs]
