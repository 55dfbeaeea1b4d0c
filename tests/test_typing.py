"""mypy --strict on small client files: correct use passes, misuse is reported where expected."""

from __future__ import annotations

import pathlib
import re

import pytest

from .conftest import ROOT

api = pytest.importorskip("mypy.api")

CASES = ROOT / "tests" / "typing_cases"


def _mypy(path: pathlib.Path) -> tuple[str, int]:
    stdout, stderr, status = api.run(
        [
            "--strict",
            "--no-incremental",
            "--cache-dir=/dev/null",
            "--python-version=3.10",
            "--config-file=",
            "--no-error-summary",
            "--hide-error-context",
            str(path),
        ]
    )
    return stdout + stderr, status


def _expected(path: pathlib.Path) -> dict[int, str]:
    expected = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = re.search(r"# E: (.+)$", line)
        if match:
            expected[number] = match.group(1)
    return expected


def test_correct_use_type_checks() -> None:
    output, status = _mypy(CASES / "good.py")
    assert status == 0, output


@pytest.mark.parametrize("name", ["bad_member.py", "bad_literal.py", "bad_info.py"])
def test_misuse_is_reported(name: str) -> None:
    path = CASES / name
    output, status = _mypy(path)
    assert status == 1, output
    errors: dict[int, list[str]] = {}
    for line in output.splitlines():
        match = re.match(rf".*{re.escape(name)}:(\d+): error: (.*)$", line)
        if match:
            errors.setdefault(int(match.group(1)), []).append(match.group(2))
    expected = _expected(path)
    assert set(errors) == set(expected), output
    for number, fragment in expected.items():
        assert any(fragment in message for message in errors[number]), (number, errors[number])
