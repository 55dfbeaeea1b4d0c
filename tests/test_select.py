"""Selecting problems: ``Selection`` and ``validate``/``inspect``'s ``--select``, ``--ignore``, ``--fail-on``,
``--require``; converter readiness as information, each reason printed once."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest

import ckptkeys
from ckptkeys import Problem, Selection, Severity
from ckptkeys._check._codes import CODES, GROUPS
from ckptkeys._check._select import matches, unknown_selectors
from ckptkeys._cli._main import main

from .conftest import DATA, FIXTURES

# Every save DeepSpeed wrote here, directly or through a framework: the fixtures (copies of the shared
# fixtures), the Trainer and Lightning runs, and the extra saves. None has a defect (the fixtures'
# README lists only what the converters do); the saves broken on purpose are tests/data/broken.
HEALTHY = sorted(
    [p for p in FIXTURES.iterdir() if p.is_dir()]
    + [p for p in (DATA / "clients").iterdir() if p.is_dir()]
    + [DATA / n for n in ("moe_z0_fp32_ep2", "pp2_z0_fp32", "universal_z3")]
)
Z2 = FIXTURES / "z2_bf16_ws2"
MOE = FIXTURES / "moe_z2_fp32_ep2"
TRAINER = DATA / "clients" / "hf_trainer_z2_bf16"
BROKEN = DATA / "broken" / "partition_count"
# A universal tag's frozen parameters and buffers are warnings about resuming (DeepSpeed's loader does
# not restore them), not defects: the saves holding one pass once those two codes are ignored.
NOT_RESTORED = ("universal-frozen-not-restored", "universal-buffers-not-restored")
UNIVERSAL = {"uc_z2_bf16_ws2", "universal_z3"}


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main([args[0], "--isolated", *args[1:]])
    out, err = capsys.readouterr()
    return status, out, err


def document(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    status, out, _ = run(capsys, *args, "--json")
    parsed: dict[str, Any] = json.loads(out)
    return status, parsed


def shown(doc: dict[str, Any]) -> list[dict[str, Any]]:
    reports = [s["report"] for s in doc["saves"] if s["report"]] if doc["kind"] == "run" else [doc]
    problems: list[dict[str, Any]] = doc["problems"] * (doc["kind"] == "run")
    return problems + [p for r in reports for p in r["problems"] + [p for t in r["tags"] for p in t["problems"]]]


# -- healthy saves: exit 0, no warning -------------------------------------------------------------


def test_the_healthy_saves_are_found() -> None:
    assert len(HEALTHY) == 15 and all(p.is_dir() for p in HEALTHY)


@pytest.mark.parametrize("folder", HEALTHY, ids=lambda p: p.name)
def test_every_healthy_save_passes_fail_on_warning(capsys: pytest.CaptureFixture[str], folder: pathlib.Path) -> None:
    every_save = ["--all"] if folder.parent.name == "clients" else []  # a run: each of its saves
    universal = folder.name in UNIVERSAL
    ignore = ["--ignore", ",".join(NOT_RESTORED)] if universal else []
    status, doc = document(capsys, "validate", "--fail-on", "warning", *every_save, *ignore, str(folder))
    assert status == 0
    assert (doc["summary"]["error"], doc["summary"]["warning"], doc["summary"]["hidden"]) == (0, 0, 2 * universal)
    assert all(p["severity"] == "info" for p in shown(doc))
    if universal:  # and without --ignore, exactly those two warnings fail it
        status, doc = document(capsys, "validate", "--fail-on", "warning", str(folder))
        assert status == 1 and sorted(p["code"] for p in shown(doc) if p["severity"] == "warning") == sorted(
            NOT_RESTORED
        )


def test_a_broken_save_still_fails(capsys: pytest.CaptureFixture[str]) -> None:
    status, doc = document(capsys, "validate", str(BROKEN))
    assert status == 1 and doc["summary"]["error"] >= 1


# -- the prefix rule, groups, unknown selectors ------------------------------------------------------


def test_a_prefix_is_whole_words() -> None:
    assert matches("missing", "missing-key") and matches("missing-", "missing-key")
    assert matches("zero-to-fp32", "zero-to-fp32-safetensors-not-ready")
    assert matches("missing-key", "missing-key") and not matches("missing-key", "missing-rank")
    assert not matches("miss", "missing-key") and not matches("un", "unknown-key") and not matches("", "wrong-type")
    assert unknown_selectors(["miss", "un", "missing", "latest-", "security", "nope"]) == ["miss", "un", "nope"]


def test_groups_name_known_codes_and_no_group_is_a_code() -> None:
    for name, codes in GROUPS.items():
        assert set(codes) <= set(CODES) and codes
        assert not any(matches(name, code) for code in CODES if code not in codes)
    assert {c for c in CODES if c.endswith("-not-ready")} == set(GROUPS["converters"])


def test_unknown_values_are_value_errors_listing_what_exists() -> None:
    with pytest.raises(ValueError, match="unknown code or prefix 'miss'.*missing-key.*security"):
        Selection(ignore=["miss"])
    with pytest.raises(ValueError, match="fail_on is 'warnings'; it is one of error, warning, info, never"):
        Selection(fail_on="warnings")  # type: ignore[arg-type]  # what mypy rejects too
    with pytest.raises(ValueError, match="unknown converter 'ds-to-universal'.*zero_to_fp32, ds_to_universal"):
        Selection(require=["ds-to-universal"])  # type: ignore[list-item]  # what mypy rejects too
    with pytest.raises(TypeError, match="a list of strings, not one string"):
        Selection(select="missing-")


# -- Selection on problems and reports -----------------------------------------------------------------


def _problem(severity: Severity, code: str) -> Problem:
    return Problem(severity, code, "message", "file")


PROBLEMS = [
    _problem(Severity.ERROR, "missing-rank"),
    _problem(Severity.WARNING, "unknown-key"),
    _problem(Severity.INFO, "client-state-key"),
    _problem(Severity.INFO, "ds-to-universal-not-ready"),
    _problem(Severity.INFO, "zero-to-fp32-not-ready"),
]


def test_select_ignore_and_order() -> None:
    assert Selection().apply(PROBLEMS) == tuple(PROBLEMS)
    assert [p.code for p in Selection(select=["missing", "unknown-key"]).apply(PROBLEMS)] == [
        "missing-rank",
        "unknown-key",
    ]
    assert [p.code for p in Selection(ignore=["converters", "client-state-key"]).apply(PROBLEMS)] == [
        "missing-rank",
        "unknown-key",
    ]
    # ignore wins over select
    assert Selection(select=["missing-rank"], ignore=["missing-"]).apply(PROBLEMS) == ()


@pytest.mark.parametrize(
    ("fail_on", "problems", "fails"),
    [
        ("error", PROBLEMS, True),
        ("error", PROBLEMS[1:], False),
        ("warning", PROBLEMS[1:], True),
        ("warning", PROBLEMS[2:], False),
        ("info", PROBLEMS[2:], True),
        ("info", [], False),
        ("never", PROBLEMS, False),
    ],
)
def test_fail_on(fail_on: Any, problems: list[Problem], fails: bool) -> None:
    assert Selection(fail_on=fail_on).fails(problems) is fails


def test_require_makes_that_converter_an_error_only() -> None:
    selection = Selection(require=["ds_to_universal"])
    applied = selection.apply(PROBLEMS[2:])
    assert [(p.code, p.severity) for p in applied] == [
        ("client-state-key", Severity.INFO),
        ("ds-to-universal-not-ready", Severity.ERROR),
        ("zero-to-fp32-not-ready", Severity.INFO),
    ]
    assert selection.fails(PROBLEMS[2:]) and not Selection().fails(PROBLEMS[2:])
    assert selection.apply(applied) == applied  # applying twice changes nothing


def test_report_keeps_the_shape_and_drops_what_is_hidden() -> None:
    report = ckptkeys.validate_run(TRAINER, all_saves=True)
    selection = Selection(ignore=["zero-to-fp32"])
    selected = selection.report(report)
    assert len(selected.saves) == len(report.saves) == 2
    assert [p.code for p in selected.all_problems] == ["ds-to-universal-not-ready"] * 2
    assert len(report.all_problems) - len(selected.all_problems) == 2
    assert list(selected.all_problems) == list(selection.apply(report.all_problems))


# -- the command -----------------------------------------------------------------------------------------


def test_unknown_code_is_a_usage_error_listing_the_codes(capsys: pytest.CaptureFixture[str]) -> None:
    for option in ("--select", "--ignore"):
        status, out, err = run(capsys, "validate", option, "missing-rank,miss", str(Z2))
        assert status == 2 and out == ""
        assert err.startswith(f"ckptkeys validate: {option}: unknown code or prefix 'miss'; the codes are missing-key,")
        assert "ds-to-universal-not-ready" in err and "the groups security, converters" in err
    status, out, err = run(capsys, "inspect", "--require", "zero_to_fp32,ds-to-universal", str(Z2))
    assert status == 2 and "--require: unknown converter 'ds-to-universal'" in err
    status, out, err = run(capsys, "validate", "--fail-on", "warnings", str(Z2))
    assert status == 2 and "--fail-on: invalid choice: 'warnings'" in err


def test_hidden_problems_are_counted_and_do_not_fail(capsys: pytest.CaptureFixture[str]) -> None:
    status, doc = document(capsys, "validate", "--ignore", "partition-count-mismatch,client-state-key", str(BROKEN))
    assert status == 0 and doc["summary"]["error"] == 0 and doc["summary"]["hidden"] >= 2
    assert {p["code"] for p in shown(doc)}.isdisjoint({"partition-count-mismatch", "client-state-key"})
    assert doc["selection"] == {
        "select": None,
        "ignore": ["partition-count-mismatch", "client-state-key"],
        "fail_on": "error",
        "require": [],
        "config": None,
    }
    everything = len(ckptkeys.validate(BROKEN))
    status, out, _ = run(capsys, "validate", "--select", "client-state-key", str(BROKEN))
    kept = out.count("client-state-key:")
    assert status == 0 and 0 < kept < everything
    assert out.endswith(f"\n({everything - kept} problems hidden by the selection: --select, --ignore or pyproject.toml)\n")


def test_fail_on_decides_the_exit(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "validate", "-q", "--fail-on", "never", str(BROKEN))[0] == 0
    assert run(capsys, "validate", "-q", "--fail-on", "info", str(Z2))[0] == 1
    assert run(capsys, "validate", "-q", "--fail-on", "warning", str(Z2))[0] == 0
    status, doc = document(capsys, "validate", "--fail-on", "info", str(Z2))
    assert status == 1 and doc["exit"]["status"] == 1 and "fail-on info" in doc["exit"]["meaning"]


def test_require_fails_where_the_converter_would_refuse(capsys: pytest.CaptureFixture[str]) -> None:
    status, doc = document(capsys, "validate", "--require", "ds_to_universal", str(Z2))
    assert status == 1
    assert [(p["severity"], p["code"]) for p in shown(doc) if p["severity"] == "error"] == [
        ("error", "ds-to-universal-not-ready")
    ]
    # zero_to_fp32 accepts this save: requiring it fails nothing
    assert run(capsys, "validate", "-q", "--require", "zero_to_fp32", str(Z2))[0] == 0
    # a universal tag has nothing to convert: no problem, required or not
    assert run(capsys, "validate", "-q", "--require", "zero_to_fp32,ds_to_universal", str(DATA / "universal_z3"))[0] == 0


def test_library_and_command_apply_the_same_selection(capsys: pytest.CaptureFixture[str]) -> None:
    options = {"select": ["missing", "converters", "client-state-key"], "ignore": ["zero-to-fp32"]}
    selection = Selection(select=options["select"], ignore=options["ignore"], require=["ds_to_universal"])
    for path in (MOE, BROKEN, TRAINER):
        _, doc = document(
            capsys,
            "validate",
            "--select",
            ",".join(options["select"]),
            "--ignore",
            ",".join(options["ignore"]),
            "--require",
            "ds_to_universal",
            str(path),
        )
        expected = [
            {"severity": str(p.severity), "code": p.code, "file": p.file, "key_path": p.key_path, "message": p.message}
            for p in selection.apply(ckptkeys.validate(path))
        ]
        assert shown(doc) == expected


# -- each reason once ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["inspect", "validate"])
@pytest.mark.parametrize("folder", [MOE, TRAINER], ids=lambda p: p.name)
def test_each_converter_reason_is_printed_once(
    capsys: pytest.CaptureFixture[str], command: str, folder: pathlib.Path
) -> None:
    (tag,) = ckptkeys.validate_folder(folder if folder != TRAINER else folder / "checkpoint-4").tags
    reasons = [v.reason for v in tag.converters.values() if not v.ready and v.reason]
    reasons += [
        v.safe_serialization.reason
        for v in tag.converters.values()
        if v.safe_serialization is not None and v.safe_serialization.reason
    ]
    assert len(reasons) == 2
    status, out, _ = run(capsys, command, str(folder))
    assert status == 0
    for reason in reasons:
        assert out.count(reason) == 1, (reason, out)
    assert out.count("will fail") == 2  # one problem per converter (or --safe_serialization)


def test_an_empty_select_is_refused_in_python_as_on_the_command_line() -> None:
    # --select '' and select = [] are usage errors; Selection(select=[]) showed nothing and failed nothing.
    with pytest.raises(ValueError, match="select lists no code"):
        Selection(select=[])
    assert Selection(select=None).select is None  # None: every problem


def test_the_converter_type_is_the_converters() -> None:
    import typing

    from ckptkeys._check._converters import CONVERTERS
    from ckptkeys._check._select import Converter

    assert typing.get_args(Converter) == tuple(str(c) for c in CONVERTERS)
