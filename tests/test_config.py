"""``[tool.ckptkeys.validate]`` in ``pyproject.toml``: found as ruff finds its config, overridden by options,
refused with the file, table and key named when it cannot be used."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from typing import Any

import pytest

from ckptkeys._cli._config import ConfigError, find_config, read_config
from ckptkeys._cli._main import main

from .conftest import DATA, FIXTURES

Z2 = str(FIXTURES / "z2_bf16_ws2")  # one client-state-key and one ds-to-universal-not-ready, both info
BROKEN = str(DATA / "broken" / "partition_count")

FAIL_ON_INFO = """\
[project]
name = "trainer"

[tool.ckptkeys.validate]
fail-on = "info"
ignore = ["client-state-key"]
"""


@pytest.fixture
def project(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """A project whose pyproject.toml has the table; the current directory two levels below it."""
    (tmp_path / "pyproject.toml").write_text(FAIL_ON_INFO, encoding="utf-8")
    below = tmp_path / "runs" / "today"
    below.mkdir(parents=True)
    monkeypatch.chdir(below)
    return tmp_path


def validate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any], str]:
    status = main(["validate", "--json", *args])
    out, err = capsys.readouterr()
    document: dict[str, Any] = json.loads(out)
    return status, document, err


def test_found_from_a_subdirectory(project: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert find_config() == str(project / "pyproject.toml")
    status, document, _ = validate(capsys, Z2)
    assert status == 1  # fail-on info, and ds-to-universal-not-ready is shown
    assert document["selection"] == {
        "select": None,
        "ignore": ["client-state-key"],
        "fail_on": "info",
        "require": [],
        "config": str(project / "pyproject.toml"),
    }
    assert document["summary"]["hidden"] == 1


def test_a_pyproject_without_the_table_is_skipped(project: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "runs" / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.ruff]\nline-length = 99\n')
    assert find_config() == str(project / "pyproject.toml")
    (project / "runs" / "pyproject.toml").write_text("[tool.ckptkeys]\n")  # the table alone: this one, empty
    assert find_config() == str(project / "runs" / "pyproject.toml")
    status, document, _ = validate(capsys, Z2)
    assert status == 0 and document["selection"]["fail_on"] == "error"


def test_no_config_anywhere_and_isolated(tmp_path: pathlib.Path) -> None:
    keys = {"select": "a list of strings"}
    (tmp_path / "pyproject.toml").write_text('[tool.ckptkeys.validate]\nselect = ["missing"]\n', encoding="utf-8")
    assert read_config("validate", keys, start=str(tmp_path)).values == {"select": ["missing"]}
    config = read_config("validate", keys, start=str(tmp_path), isolated=True)
    assert (config.path, config.values) == (None, {})
    (tmp_path / "pyproject.toml").unlink()
    if any((parent / "pyproject.toml").exists() for parent in tmp_path.parents):
        pytest.skip("a pyproject.toml above the temporary folder")
    assert find_config(str(tmp_path)) is None
    assert read_config("validate", keys, start=str(tmp_path)).path is None


def test_options_override_keys_one_by_one(project: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, document, _ = validate(capsys, "--fail-on", "error", Z2)
    assert status == 0
    assert document["selection"]["fail_on"] == "error" and document["selection"]["ignore"] == ["client-state-key"]
    status, document, _ = validate(capsys, "--ignore", "converters", Z2)
    assert status == 1  # fail-on info from the file, client-state-key shown again
    assert [p["code"] for t in document["tags"] for p in t["problems"]] == ["client-state-key"]


def test_isolated_and_config(project: pathlib.Path, capsys: pytest.CaptureFixture[str], tmp_path_factory: Any) -> None:
    status, document, _ = validate(capsys, "--isolated", Z2)
    assert status == 0 and document["selection"]["config"] is None and document["selection"]["fail_on"] == "error"
    other = tmp_path_factory.mktemp("elsewhere") / "settings.toml"
    other.write_text('[tool.ckptkeys.validate]\nrequire = ["ds_to_universal"]\n', encoding="utf-8")
    status, document, _ = validate(capsys, "--config", str(other), Z2)
    assert status == 1 and document["selection"]["config"] == str(other) and document["summary"]["error"] == 1
    assert main(["validate", "--config", str(other), "--isolated", Z2]) == 2  # as ruff: one or the other
    assert "not allowed with argument --config" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[tool.ckptkeys.validate]\nfail_on = "info"\n', "[tool.ckptkeys.validate] fail_on: unknown key; the keys are"),
        ('[tool.ckptkeys.validate]\nselect = "missing-"\n', "[tool.ckptkeys.validate] select: must be a list of strings"),
        ("[tool.ckptkeys.validate]\nfail-on = 1\n", "[tool.ckptkeys.validate] fail-on: must be a string, not 1"),
        ('[tool.ckptkeys.validate]\nfail-on = "warnings"\n', "fail-on: 'warnings' is not one of error, warning"),
        ('[tool.ckptkeys.validate]\nignore = ["miss"]\n', "ignore: unknown code or prefix 'miss'; the codes are"),
        ('[tool.ckptkeys.validate]\nrequire = ["x"]\n', "require: unknown converter 'x'; the converters are"),
        ('[tool.ckptkeys.valdate]\nselect = ["missing"]\n', "[tool.ckptkeys] valdate: unknown table"),
        ("[tool]\nckptkeys = 3\n", "[tool.ckptkeys]: is not a table"),
        ('[tool.ckptkeys]\nvalidate = "all"\n', "[tool.ckptkeys.validate]: is not a table"),
        ("[tool.ckptkeys\n", "not valid TOML"),
    ],
)
def test_a_config_that_cannot_be_used_is_a_usage_error(
    project: pathlib.Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    (project / "pyproject.toml").write_text(text, encoding="utf-8")
    status = main(["validate", Z2])
    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    assert err.startswith(f"ckptkeys validate: {project / 'pyproject.toml'}: ") and message in err, err
    assert main(["validate", "--isolated", "-q", Z2]) == 0  # the way past it


def test_config_named_but_missing(capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="nope.toml: cannot be read"):
        read_config("validate", {}, config=str(missing))
    assert main(["inspect", "--config", str(missing), Z2]) == 2
    assert capsys.readouterr().err.startswith(f"ckptkeys inspect: {missing}: cannot be read")


def test_inspect_reads_the_validate_table(project: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", Z2]) == 1
    out = capsys.readouterr().out
    assert "client-state-key" not in out and "(1 problem hidden by the selection" in out


def test_the_toml_reader_of_this_python(project: pathlib.Path) -> None:
    """tomllib on 3.11+; its backport tomli (the dependency on 3.10) there."""
    assert read_config("validate", {"ignore": "a list of strings", "fail-on": "a string"}).values["fail-on"] == "info"
    assert ("tomllib" if sys.version_info >= (3, 11) else "tomli") in sys.modules


def test_no_toml_reader_without_a_pyproject(tmp_path: pathlib.Path) -> None:
    """Nothing reads TOML where no pyproject.toml is on the way up, and ``import ckptkeys`` never does."""
    code = (
        "import sys; from ckptkeys._cli._main import main; "
        f"status = main(['validate', '-q', {Z2!r}]); "
        "print(status, sorted(m for m in ('tomllib', 'tomli') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    if any((parent / "pyproject.toml").exists() for parent in (tmp_path, *tmp_path.parents)):
        pytest.skip("a pyproject.toml above the temporary folder")
    assert result.stdout.split("\n")[0] == "0 []"
