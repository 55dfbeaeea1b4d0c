"""mypy --strict on small client files: correct use passes, misuse is reported where expected.

Every case is checked for each Python version users run mypy for (3.10-3.13): mypy's view of
``enum.StrEnum`` depends on the target version. One mypy run per target checks all the cases.
"""

from __future__ import annotations

import functools
import os
import pathlib
import re

import pytest

from .conftest import ROOT

api = pytest.importorskip("mypy.api")

CASES = ROOT / "tests" / "typing_cases"
TARGETS = ["3.10", "3.11", "3.12", "3.13"]
BAD = sorted(path.name for path in CASES.glob("bad_*.py"))


@functools.cache
def _mypy(target: str) -> tuple[str, int]:
    """mypy's output over every case file, for this target, against this checkout's src/."""
    previous = os.environ.get("MYPYPATH")
    os.environ["MYPYPATH"] = str(ROOT / "src")  # the checkout, not whatever ckptkeys is installed
    try:
        stdout, stderr, status = api.run(
            [
                "--strict",
                "--no-incremental",
                "--cache-dir=/dev/null",
                f"--python-version={target}",
                "--config-file=",
                "--no-error-summary",
                "--hide-error-context",
                *(str(path) for path in sorted(CASES.glob("*.py"))),
            ]
        )
    finally:
        if previous is None:
            del os.environ["MYPYPATH"]
        else:
            os.environ["MYPYPATH"] = previous
    return stdout + stderr, status


def _errors(output: str, name: str) -> dict[int, list[str]]:
    errors: dict[int, list[str]] = {}
    for line in output.splitlines():
        match = re.match(rf".*{re.escape(name)}:(\d+): error: (.*)$", line)
        if match:
            errors.setdefault(int(match.group(1)), []).append(match.group(2))
    return errors


def _expected(path: pathlib.Path) -> dict[int, str]:
    expected = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = re.search(r"# E: (.+)$", line)
        if match:
            expected[number] = match.group(1)
    return expected


def test_cases_exist() -> None:
    assert "bad_value.py" in BAD and (CASES / "good.py").is_file()


@pytest.mark.parametrize("target", TARGETS)
def test_mypy_checked_this_checkout(target: str) -> None:
    output, status = _mypy(target)
    assert status == 1, output  # the bad cases fail; a crash or a usage error would be 2
    # Every error line belongs to a case file: nothing from src/, no import error.
    for line in output.splitlines():
        assert re.match(r".*typing_cases/\w+\.py:\d+: (error|note): ", line), line


@pytest.mark.parametrize("target", TARGETS)
def test_correct_use_type_checks(target: str) -> None:
    output, _ = _mypy(target)
    assert _errors(output, "good.py") == {}, output


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", BAD)
def test_misuse_is_reported(name: str, target: str) -> None:
    output, _ = _mypy(target)
    errors = _errors(output, name)
    expected = _expected(CASES / name)
    assert set(errors) == set(expected), output
    for number, fragment in expected.items():
        assert any(fragment in message for message in errors[number]), (number, errors[number])
