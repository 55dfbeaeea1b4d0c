"""The REPL: one-line reprs of what read, scan, validate and plan_export return, at any size."""

from __future__ import annotations

import dataclasses
import pathlib
import pickle
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ckptkeys
from ckptkeys import (
    Checkpoint,
    ExportPlan,
    ExportShard,
    ExportTensor,
    FileReport,
    Layout,
    LayoutFile,
    Limits,
    Opaque,
    Problem,
    Run,
    RunReport,
    Save,
    Severity,
    TagLayout,
    TagReport,
    TensorInfo,
    ValidationReport,
    Verdict,
)
from ckptkeys._export._spans import FileSpan
from ckptkeys.naming import parse

from .conftest import DATA, FIXTURES

# What a one-line repr must stay under, whatever the object holds.
MAX_REPR = 200


def _one_line(obj: object) -> str:
    text = repr(obj)
    assert "\n" not in text and len(text) <= MAX_REPR, (len(text), text[:300])
    assert text.startswith(f"<{type(obj).__name__} ") or text.startswith(f"{type(obj).__name__}("), text
    return text


# -- one-line reprs of real results ------------------------------------------------------------


def _largest_file() -> pathlib.Path:
    return max(FIXTURES.glob("*/*/*.pt"), key=lambda p: p.stat().st_size)


def test_checkpoint_repr() -> None:
    path = _largest_file()
    checkpoint = ckptkeys.read(path)
    text = _one_line(checkpoint)
    assert f"{path.stat().st_size:,} bytes" in text and "zip" in text
    assert f"{len(checkpoint.storages)} storages" in text and f"{len(checkpoint.globals)} globals" in text
    assert f" {len(_tensors(checkpoint.data, set()))} tensors," in text


def _tensors(item: Any, seen: set[int]) -> list[TensorInfo]:
    """Every tensor of a structure once, by recursion (the repr walks it without)."""
    if id(item) in seen:
        return []
    seen.add(id(item))
    if isinstance(item, TensorInfo):
        return [item]
    if isinstance(item, dict):
        return [t for pair in item.items() for part in pair for t in _tensors(part, seen)]
    if isinstance(item, (list, tuple)):
        return [t for part in item for t in _tensors(part, seen)]
    if isinstance(item, Opaque):
        parts = (item.args, item.kwargs, item.state, item.items, item.dict_items)
        return [t for part in parts for t in _tensors(part, seen)]
    return []


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.iterdir() if p.is_dir()))
def test_scan_validate_and_plan_reprs_on_the_fixtures(fixture: str) -> None:
    root = FIXTURES / fixture
    layout = ckptkeys.scan(root, read=True)
    text = _one_line(layout)
    files = sum(len(t.files) for t in layout.tags)
    assert f"{len(layout.tags)} tag" in text and f"{files} file" in text
    for tag in layout.tags:
        assert f"{len(tag.files)} file" in _one_line(tag)
        for file in tag.files:
            assert f"{file.size:,} bytes" in _one_line(file)
    report = ckptkeys.validate_path(root)
    assert isinstance(report, ValidationReport)
    _severities_in(_one_line(report), report.all_problems)
    for tag_report in report.tags:
        _severities_in(_one_line(tag_report), tag_report.problems)
        for verdict in tag_report.converters.values():
            _one_line(verdict)
    try:
        plan = ckptkeys.plan_export(root)
    except ckptkeys.ExportError:
        return
    assert f"{len(plan.tensors)} tensors" in _one_line(plan)
    assert f"{plan.total_size:,} bytes" in repr(plan)
    for shard in plan.shards:
        _one_line(shard)
    for tensor in plan.tensors:
        assert tensor.name in _one_line(tensor) or len(tensor.name) > 64


def _severities_in(text: str, problems: tuple[Problem, ...]) -> None:
    for severity in Severity:
        count = sum(p.severity == severity for p in problems)
        if count:
            assert re.search(rf"\b{count} {severity.value}", text), (severity, text)
    if not problems:
        assert "no problems" in text


def test_file_report_and_run_reprs() -> None:
    report = ckptkeys.validate_file(_largest_file())
    assert "model states" in _one_line(report)
    run_folder = DATA / "clients" / "lightning_z2"
    run = ckptkeys.scan_run(run_folder)
    assert f"{len(run.saves)} saves" in _one_line(run)
    assert all(f"step {s.step}" in _one_line(s) for s in run.saves if s.step is not None)
    run_report = ckptkeys.validate_path(run_folder)
    assert isinstance(run_report, RunReport)
    assert f"1 of {len(run.saves)} saves validated" in _one_line(run_report)


def test_limits_repr_names_only_what_was_changed() -> None:
    assert repr(Limits()) == "Limits()"
    changed = Limits(max_depth=50, max_objects=7)
    assert repr(changed) == "Limits(max_objects=7, max_depth=50)"
    assert eval(repr(changed), {"Limits": Limits}) == changed


def test_verdict_reprs() -> None:
    assert repr(Verdict(True, safe_serialization=Verdict(False, "no-safetensors", "..."))) == (
        "<Verdict ready; safe_serialization not ready: no-safetensors>"
    )
    assert repr(Verdict(False, "universal", "already universal", applicable=False)) == (
        "<Verdict not applicable: universal>"
    )


def test_equality_hashing_and_pickling_are_unchanged() -> None:
    layout = ckptkeys.scan(FIXTURES / "z2_bf16_ws2")
    assert pickle.loads(pickle.dumps(layout)) == layout
    assert hash(layout.tags[0].files[0]) == hash(dataclasses.replace(layout.tags[0].files[0]))
    plan = ckptkeys.plan_export(FIXTURES / "z2_bf16_ws2")
    assert pickle.loads(pickle.dumps(plan)) == plan and dataclasses.replace(plan) == plan
    checkpoint = ckptkeys.read(_largest_file())
    assert pickle.loads(pickle.dumps(checkpoint)).path == checkpoint.path
    assert dataclasses.replace(checkpoint) == checkpoint
    assert Limits(max_depth=3) == Limits(max_depth=3) and hash(Limits()) == hash(Limits())


# -- one-line reprs of made-up structures of any size ------------------------------------------

_names = st.text(min_size=1, max_size=300)
_problems = st.lists(
    st.builds(Problem, st.sampled_from(list(Severity)), st.text(max_size=40), st.text(max_size=400)), max_size=200
)
_TENSOR = TensorInfo("float32", (2, 3), (3, 1), 0, None)


def _structure() -> st.SearchStrategy[Any]:
    # The same tensor reached twice counts once; a fresh one each time counts each time.
    fresh = st.builds(lambda: TensorInfo("bfloat16", (4,), (1,), 0, None))
    leaves = st.one_of(st.integers(), st.text(max_size=50), st.just(_TENSOR), fresh)
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=30), st.dictionaries(st.text(max_size=20), inner, max_size=30)
        ),
        max_leaves=2000,
    )


@settings(max_examples=60, deadline=None)
@given(path=_names, data=_structure(), size=st.integers(min_value=0, max_value=2**63))
def test_checkpoint_repr_is_short_for_any_structure(path: str, data: Any, size: int) -> None:
    checkpoint = Checkpoint(path, data, (), {}, "legacy", size)
    text = _one_line(checkpoint)
    assert f" {len(_tensors(data, set())):,} tensor" in text
    assert f"{size:,} byte" in text if size < 10**15 else f"{size:.3g} bytes" in text


_FILE_NAMES = [
    "mp_rank_00_model_states.pt",
    "zero_pp_rank_0_mp_rank_00_optim_states.pt",
    "layer_01-model_00-model_states.pt",
]


@settings(max_examples=40, deadline=None)
@given(
    path=_names,
    tag_name=_names,
    files=st.integers(min_value=0, max_value=600),
    problems=_problems,
    size=st.integers(min_value=0, max_value=2**40),
)  # fmt: skip
def test_layout_and_report_reprs_are_short_at_any_size(
    path: str, tag_name: str, files: int, problems: list[Problem], size: int
) -> None:
    names = [parse(_FILE_NAMES[i % len(_FILE_NAMES)]) for i in range(files)]
    layout_files = tuple(LayoutFile(f"{path}/{i}", f"{i}", name, size) for i, name in enumerate(names) if name)
    tag = TagLayout(tag_name, path, layout_files, False, 3, "bf16", 2, 1, None, None, tuple(problems))
    assert f"{len(layout_files):,} file" in _one_line(tag)
    layout = Layout(path, "save", tag_name, None, (tag,) * 50, tuple(problems), framework="transformers")
    _one_line(layout)
    verdicts = {"zero_to_fp32": Verdict(False, "x" * 300, "y" * 3000), "ds_to_universal": Verdict(True)}
    tag_report = TagReport(tag, tuple(problems), verdicts)
    _severities_in(_one_line(tag_report), tag_report.problems)
    report = ValidationReport(layout, (tag_report,) * 20, tuple(problems))
    _severities_in(_one_line(report), report.all_problems)
    saves = tuple(Save(tag_name, f"{path}/{i}", i, 0.0) for i in range(files % 500))
    run = Run(path, "lightning", saves, (), (), tuple(problems))
    _one_line(run)
    _one_line(RunReport(run, (report,) * 3))
    if layout_files:
        _one_line(layout_files[0])
        checkpoint = Checkpoint(path, {}, (), {}, "zip", size)
        _one_line(FileReport(path, layout_files[0].name, checkpoint, tuple(problems)))
    for save in saves[:3]:
        _one_line(save)


@settings(max_examples=30, deadline=None)
@given(
    path=_names,
    names=st.lists(st.text(min_size=1, max_size=200), min_size=1, max_size=40),
    shape=st.lists(st.integers(min_value=0, max_value=2**20), max_size=40),
)
def test_export_reprs_are_short_at_any_size(path: str, names: list[str], shape: list[int]) -> None:
    span = FileSpan(path, 0, 8)
    tensors = tuple(
        ExportTensor(name, tuple(shape), "float32", "bfloat16", (span,) * 50, "trainable") for name in names
    )
    shards = tuple(
        ExportShard(f"model-{i:05d}-of-{len(names):05d}.safetensors", tuple(names), 10**9) for i in range(len(names))
    )
    plan = ExportPlan(path, names[0], "zero-1/2", "bf16", "fp32", tensors, shards, dict.fromkeys(names, names[0]))
    assert f"{len(names)} tensor" in _one_line(plan)
    for tensor in tensors[:3]:
        _one_line(tensor)
    _one_line(shards[0])
