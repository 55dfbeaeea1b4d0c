"""``[tool.ckptkeys.lint]`` in ``pyproject.toml`` and lint's ``--extend-select``, ``--exclude``, ``--config``,
``--isolated``: ruff's rule selection (levels, specificity), ``exclude`` and ``per-file-ignores``."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from ckptkeys._cli._config import _resolve
from ckptkeys._cli._main import main
from ckptkeys.lint import CODES

# One finding of each of three codes: CK301 (line 1), CK101 (line 3), CK203 (line 4).
SOURCE = (
    "from deepspeed.checkpoint.constants import ZERO_STAGE\n"
    "def f(s):\n    return s['param_shapes'], s['buffer_names']\n"
    "tag = f'global_step{step}'\n"
)


@pytest.fixture
def project(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "build").mkdir()
    for name in ("src/train.py", "tests/test_train.py", "build/copy.py", "conftest.py"):
        (tmp_path / name).write_text(SOURCE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def config(project: pathlib.Path, table: str) -> None:
    (project / "pyproject.toml").write_text(f"[project]\nname = 'p'\n\n[tool.ckptkeys.lint]\n{table}", encoding="utf-8")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[tuple[str, str]], str]:
    """Status, (path, code) of each finding, stderr."""
    status = main(["lint", *args])
    out, err = capsys.readouterr()
    found = [(line.split(":")[0], line.split()[1]) for line in out.splitlines()]
    return status, found, err


ALL = list(CODES)


@pytest.mark.parametrize(
    ("levels", "expected"),
    [
        ([(None, None, None)], set(ALL)),  # nothing said: every code
        ([(["CK1"], None, None)], {c for c in ALL if c.startswith("CK1")}),
        ([(["CK1"], ["CK301"], None)], {c for c in ALL if c.startswith("CK1")} | {"CK301"}),
        ([(["CK"], None, ["CK1"])], {c for c in ALL if not c.startswith("CK1")}),
        # the more specific prefix wins, whichever list it is in; ignore wins a tie
        ([(["CK101"], None, ["CK1"])], {"CK101"}),
        ([(["CK1"], None, ["CK101"])], {c for c in ALL if c.startswith("CK1") and c != "CK101"}),
        ([(["CK101"], None, ["CK101"])], set()),
        # the command line is a higher level: its select is the base, the config's ignore dropped
        ([(["CK1"], None, ["CK101"]), (["CK101", "CK3"], None, None)], {"CK101", "CK301", "CK302", "CK303"}),
        # without a select there, its ignore and extend-select adjust the config's
        ([(["CK1"], None, ["CK102"]), (None, ["CK2"], ["CK101"])],
         {c for c in ALL if c.startswith(("CK1", "CK2"))} - {"CK101", "CK102"}),
        ([(None, None, ["CK1"]), (None, ["CK101"], None)], {c for c in ALL if not c.startswith("CK1")} | {"CK101"}),
    ],
)  # fmt: skip
def test_rule_selection_as_ruff_resolves_it(
    levels: list[tuple[list[str] | None, list[str] | None, list[str] | None]], expected: set[str]
) -> None:
    assert _resolve(levels, ALL) == expected


def test_the_table_and_the_options(project: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, found, _ = run(capsys, "src")
    assert status == 1 and [c for _, c in found] == ["CK301", "CK101", "CK101", "CK203"]

    config(project, 'select = ["CK1"]\nextend-select = ["CK203"]\n')
    assert [c for _, c in run(capsys, "src")[1]] == ["CK101", "CK101", "CK203"]
    assert [c for _, c in run(capsys, "src", "--ignore", "CK2")[1]] == ["CK101", "CK101"]  # adds to the config
    assert [c for _, c in run(capsys, "src", "--select", "CK3")[1]] == ["CK301"]  # the config's extend-select dropped
    assert [c for _, c in run(capsys, "src", "--extend-select", "ck301")[1]] == ["CK301", "CK101", "CK101", "CK203"]
    assert [c for _, c in run(capsys, "src", "--isolated")[1]] == ["CK301", "CK101", "CK101", "CK203"]

    config(project, 'ignore = ["CK1"]\n')
    other = project / "other.toml"
    other.write_text('[tool.ckptkeys.lint]\nselect = ["CK203"]\n', encoding="utf-8")
    assert [c for _, c in run(capsys, "src")[1]] == ["CK301", "CK203"]
    assert [c for _, c in run(capsys, "src", "--config", str(other))[1]] == ["CK203"]
    # a table for lint does not disturb validate's, and the reverse
    config(project, 'ignore = ["CK1"]\n\n[tool.ckptkeys.validate]\nignore = ["client-state-key"]\n')
    assert [c for _, c in run(capsys, "src")[1]] == ["CK301", "CK203"]


def test_exclude(project: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    every = {"build/copy.py", "conftest.py", "src/train.py", "tests/test_train.py"}
    assert {p for p, _ in run(capsys, ".")[1]} == every
    config(project, 'exclude = ["build", "tests/*.py"]\n')
    assert {p for p, _ in run(capsys, ".")[1]} == {"conftest.py", "src/train.py"}
    # --exclude replaces the key (as ruff's); a pattern may name a file by its name alone
    assert {p for p, _ in run(capsys, ".", "--exclude", "conftest.py")[1]} == every - {"conftest.py"}
    # as ruff: a file given by name is linted whatever exclude says
    assert {p for p, _ in run(capsys, "build/copy.py")[1]} == {"build/copy.py"}
    # patterns are relative to the pyproject.toml's folder, not to the current one
    config(project, 'exclude = ["src/train.py"]\n')
    monkeypatch.chdir(project / "src")
    assert run(capsys, ".")[1] == []


def test_per_file_ignores(project: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    config(
        project,
        "[tool.ckptkeys.lint.per-file-ignores]\n"
        '"tests/*" = ["CK1"]\n"conftest.py" = ["CK3", "CK203"]\n"!src/*" = ["CK203"]\n',
    )
    found = run(capsys, ".")[1]
    assert [c for p, c in found if p == "src/train.py"] == ["CK301", "CK101", "CK101", "CK203"]
    assert [c for p, c in found if p == "tests/test_train.py"] == ["CK301"]  # CK1 by tests/*, CK203 by !src/*
    assert [c for p, c in found if p == "conftest.py"] == ["CK101", "CK101"]
    assert [c for p, c in found if p == "build/copy.py"] == ["CK301", "CK101", "CK101"]
    # a silenced finding is not rewritten either; the CK301 left is
    assert main(["lint", "--fix", "tests/test_train.py"]) == 0
    rewritten = (project / "tests" / "test_train.py").read_text()
    assert "s['param_shapes']" in rewritten and "from ckptkeys.constants import ZERO_STAGE" in rewritten


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ('selec = ["CK1"]\n', "[tool.ckptkeys.lint] selec: unknown key; the keys are select, extend-select, ignore"),
        ('select = "CK1"\n', "[tool.ckptkeys.lint] select: must be a list of strings"),
        ('select = []\n', "[tool.ckptkeys.lint] select: [] selects no code"),
        ('ignore = ["XX9"]\n', "[tool.ckptkeys.lint] ignore: XX9: unknown code; the codes are CK001"),
        ('per-file-ignores = ["CK1"]\n', "[tool.ckptkeys.lint] per-file-ignores: must be a table of lists of strings"),
        ('per-file-ignores = {"tests/*" = ["CK9"]}\n', "[tool.ckptkeys.lint] per-file-ignores 'tests/*': CK9: unknown"),
    ],
)
def test_a_table_that_cannot_be_used_is_a_usage_error(
    project: pathlib.Path, capsys: pytest.CaptureFixture[str], table: str, says: str
) -> None:
    config(project, table)
    assert main(["lint", "src"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ckptkeys lint: {project / 'pyproject.toml'}: {says}"), err
    assert main(["lint", "src", "--isolated"]) == 1  # --isolated reads no file
    capsys.readouterr()
    assert main(["lint", "src", "--isolated", "--config", "x.toml"]) == 2  # not both, as in ruff


def test_the_example_of_the_docs_is_a_valid_table(project: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (pathlib.Path(__file__).parent.parent / "docs" / "lint.md").read_text(encoding="utf-8")
    example = text.split("## Configuration: `[tool.ckptkeys.lint]`", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    (project / "pyproject.toml").write_text(example, encoding="utf-8")
    status, found, _ = run(capsys, ".")
    # select CK1, CK2 + CK301, not CK107; build/ excluded; CK1 not in tests/*, CK2 only under src/
    assert status == 1
    assert sorted(set(found)) == [
        ("conftest.py", "CK101"),
        ("conftest.py", "CK301"),
        ("src/train.py", "CK101"),
        ("src/train.py", "CK203"),
        ("src/train.py", "CK301"),
        ("tests/test_train.py", "CK301"),
    ]


def stdin(project: pathlib.Path, data: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "ckptkeys", "lint", *args], cwd=project, input=data, capture_output=True, check=False
    )


def test_standard_input(project: pathlib.Path) -> None:
    data = SOURCE.encode()
    bare = stdin(project, data, "-")
    assert bare.returncode == 1
    assert [line.split()[0] for line in bare.stdout.decode().splitlines()] == ["-:1:1:", "-:3:14:", "-:3:33:", "-:4:7:"]
    named = stdin(project, data, "-", "--stdin-filename", "tests/test_x.py")
    assert named.stdout.decode().splitlines()[0].startswith("tests/test_x.py:1:1: CK301 ")
    assert named.stderr == b"Found 4 problems (3 fixable with --fix).\n"
    # the name is what per-file-ignores match, as in ruff
    config(project, '[tool.ckptkeys.lint.per-file-ignores]\n"tests/*" = ["CK1", "CK2"]\n')
    named = stdin(project, data, "-", "--stdin-filename", "tests/test_x.py", "--output-format", "github")
    assert [line.split(",")[0] for line in named.stdout.decode().splitlines()] == ["::error title=ckptkeys (CK301)"]

    # --fix: the fixed text on stdout, the findings left and the summary on stderr; no file written
    fixed = stdin(project, data, "--fix", "-", "--isolated")
    assert fixed.returncode == 1  # the tag built by hand is left
    text = fixed.stdout.decode()
    assert text == (
        "from ckptkeys import ModuleKeys\nfrom ckptkeys.constants import ZERO_STAGE\n"
        "def f(s):\n    return s[ModuleKeys.PARAM_SHAPES], s[ModuleKeys.BUFFER_NAMES]\ntag = f'global_step{step}'\n"
    )
    assert fixed.stderr.decode().splitlines() == [
        f"-:4:7: CK203 {fixed.stderr.decode().split(' CK203 ')[1].splitlines()[0]}",
        "Found 4 problems (3 fixed in 1 file, 1 remaining).",
    ]
    assert sorted(p.name for p in project.iterdir()) == ["build", "conftest.py", "pyproject.toml", "src", "tests"]
    # a text that cannot be decoded is one CK001 finding, and --fix gives it back unchanged
    broken = stdin(project, b"x = '\xff'\n", "--fix", "-")
    assert (broken.returncode, broken.stdout) == (1, b"x = '\xff'\n")
    assert broken.stderr.decode().startswith("-:1:1: CK001 cannot be read")
    assert stdin(project, b"x = 1\n", "-").returncode == 0

    assert stdin(project, data, "-", "src").returncode == 2  # - goes alone
    assert b"--stdin-filename goes with -" in stdin(project, data, "src", "--stdin-filename", "a.py").stderr


def test_force_exclude_as_the_pre_commit_hook_runs_it(
    project: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config(project, 'exclude = ["build", "tests/*.py"]\n')
    named = ["build/copy.py", "tests/test_train.py", "src/train.py"]
    assert {p for p, _ in run(capsys, *named)[1]} == set(named)  # named files are linted, as ruff
    assert {p for p, _ in run(capsys, "--force-exclude", *named)[1]} == {"src/train.py"}
    status, found, err = run(capsys, "--force-exclude", "build/copy.py")
    assert (status, found, err) == (0, [], "All checks passed!\n")
    excluded = stdin(project, SOURCE.encode(), "--force-exclude", "-", "--stdin-filename", "build/copy.py")
    assert (excluded.returncode, excluded.stdout) == (0, b"")


def test_force_exclude_does_not_look_above_the_project(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    project = tmp_path / "build" / "checkout"  # the whole checkout under a folder named like an excluded one
    project.mkdir(parents=True)
    (project / "train.py").write_text(SOURCE, encoding="utf-8")
    config(project, 'exclude = ["build"]\n')
    monkeypatch.chdir(project)
    assert {p for p, _ in run(capsys, "--force-exclude", "train.py")[1]} == {"train.py"}
