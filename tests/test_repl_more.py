"""The REPL, more: every public property and method of a public class has a doc (so ``help()``
and docs/api.md say what it is); one-line reprs whatever the input; ``Literal`` aliases documented."""

from __future__ import annotations

import importlib
import inspect
import pickle
import typing

from hypothesis import given, settings
from hypothesis import strategies as st

import ckptkeys
from ckptkeys import Limits, Problem, Severity
from ckptkeys._check._select import Selection
from ckptkeys._read._repr import LINE_CHARS

from .conftest import FIXTURES, ROOT


def _undocumented() -> list[str]:
    missing = []
    for name in ckptkeys.__all__:
        cls = getattr(ckptkeys, name)
        if not inspect.isclass(cls):
            continue
        own = [base for base in cls.__mro__ if base.__module__.startswith("ckptkeys")]
        for attr in sorted({a for base in own for a in vars(base)}):
            if attr.startswith("_"):
                continue
            value = inspect.getattr_static(cls, attr)
            if isinstance(value, property):
                function = value.fget
            elif isinstance(value, (staticmethod, classmethod)):
                function = value.__func__
            elif inspect.isfunction(value):
                function = value
            else:
                continue  # a field, a constant, an enum member: documented where it is declared
            if not (getattr(function, "__doc__", None) or "").strip():
                missing.append(f"{name}.{attr}")
    return missing


def test_every_public_property_and_method_of_a_public_class_has_a_doc() -> None:
    assert _undocumented() == []


def test_the_sweep_sees_properties() -> None:
    """Not vacuous: the sweep reaches the properties named in the red team's report."""
    assert isinstance(inspect.getattr_static(ckptkeys.ExportPlan, "total_size"), property)
    assert inspect.getdoc(ckptkeys.TensorInfo.storage_key)
    assert inspect.getdoc(ckptkeys.ValidationReport.all_problems)


def _literal_aliases() -> list[tuple[str, object]]:
    found = []
    for module_name in ("ckptkeys", "ckptkeys.naming", "ckptkeys.schema", "ckptkeys.writing", "ckptkeys.lint"):
        module = importlib.import_module(module_name)
        for name in module.__all__:
            value = getattr(module, name)
            if typing.get_origin(value) is typing.Literal:
                found.append((f"{module_name}.{name}", value))
    return found


def test_every_public_literal_alias_has_a_doc_and_is_shown_as_a_type_alias() -> None:
    aliases = _literal_aliases()
    assert {"ckptkeys.Dtype", "ckptkeys.Weights", "ckptkeys.DictKindName"} <= {name for name, _ in aliases}
    api = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    for qualified, value in aliases:
        assert inspect.getdoc(value), qualified  # help() says what it is
        entry = api.split(f"### `{qualified}`\n", 1)[1].split("\n### ", 1)[0]
        assert entry.startswith("\n*type alias*\n"), (qualified, entry[:80])
        name = qualified.rsplit(".", 1)[1]
        first = repr(typing.get_args(value)[0])
        assert f"{name} = Literal[{first}" in entry or f"{name} = Literal[\n    {first}," in entry, entry
        assert "(*args, **kwargs)" not in entry


# --- one-line reprs, whatever the input -------------------------------------------------------

TEXT = st.text(max_size=2000)
LONG = st.text(min_size=300, max_size=2000)


def _one_line(shown: str) -> None:
    assert len(shown) <= LINE_CHARS, (len(shown), shown)
    assert "\n" not in shown and "\r" not in shown and shown.isprintable(), shown


@settings(max_examples=200, deadline=None)
@given(
    severity=st.sampled_from(list(Severity)),
    code=TEXT,
    message=TEXT,
    file=st.none() | TEXT,
    key_path=st.none() | TEXT,
)
def test_a_problems_repr_is_one_short_line_and_its_str_the_whole(
    severity: Severity, code: str, message: str, file: str | None, key_path: str | None
) -> None:
    problem = Problem(severity, code, message, file, key_path)
    _one_line(repr(problem))
    assert message in str(problem)  # the whole message stays in str()
    copy = pickle.loads(pickle.dumps(problem))
    assert copy == problem and hash(copy) == hash(problem)


@settings(max_examples=50, deadline=None)
@given(message=LONG, file=LONG)
def test_a_long_message_and_path_are_cut_with_an_ellipsis(message: str, file: str) -> None:
    shown = repr(Problem(Severity.ERROR, "missing-key", message, file))
    _one_line(shown)
    assert "..." in shown and shown.startswith("<Problem error missing-key ")


def test_real_problems_reprs_are_short() -> None:
    problems = [p for name in ("z2_bf16_ws2", "tp2_z1_bf16", "uc_z2_bf16_ws2") for p in ckptkeys.validate(FIXTURES / name)]
    assert problems
    for problem in problems:
        _one_line(repr(problem))
        assert problem.code in repr(problem)


@settings(max_examples=100, deadline=None)
@given(bounds=st.lists(st.integers(min_value=0, max_value=10**400), min_size=10, max_size=10))
def test_a_limits_repr_is_one_short_line(bounds: list[int]) -> None:
    names = Limits.__slots__
    limits = Limits(**dict(zip(names, bounds, strict=True)))
    _one_line(repr(limits))
    assert repr(Limits(max_depth=50)) == "Limits(max_depth=50)" and repr(Limits()) == "Limits()"
    assert pickle.loads(pickle.dumps(limits)) == limits


CODES = st.sampled_from(["missing-key", "missing-", "security", "converters", "code-execution", "no-latest"])


@settings(max_examples=100, deadline=None)
@given(
    select=st.none() | st.lists(CODES, min_size=1, max_size=60),  # [] is refused, as --select ''
    ignore=st.lists(CODES, max_size=60),
    fail_on=st.sampled_from(["error", "warning", "info", "never"]),
    require=st.lists(st.sampled_from(["zero_to_fp32", "ds_to_universal"]), max_size=20),
)
def test_a_selections_repr_is_one_short_line(
    select: list[str] | None, ignore: list[str], fail_on: str, require: list[str]
) -> None:
    selection = Selection(select=select, ignore=ignore, fail_on=fail_on, require=require)  # type: ignore[arg-type]
    _one_line(repr(selection))
    assert repr(Selection()) == "Selection()"
    copy = pickle.loads(pickle.dumps(selection))
    assert copy == selection and hash(copy) == hash(selection)
