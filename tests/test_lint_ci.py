"""The CI proof: another project runs ``ckptkeys lint --output-format github .`` as it runs ruff.

A small project is built in a temporary folder, as a CI job checks it out: a ``pyproject.toml``
with ``[tool.ckptkeys.lint]`` (select, ignore, per-file-ignores, extend-exclude), a
``.gitignore``, a ``.venv`` whose site-packages hold DeepSpeed's own code (full of findings), a
package with findings, a line and a file silenced by ``noqa``. The command runs there as a
subprocess, with a CI's environment (no terminal, ``CI=true``, ``GITHUB_ACTIONS=true``), and
must print exactly the expected annotations, exit 1 (0 with ``--exit-zero``), write a SARIF log
valid against OASIS's schema, and concise lines that a GitHub problem matcher for ruff reads.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

FINDINGS = "import torch\nsd = torch.load('mp_rank_00_model_states.pt')\nshapes = sd['param_shapes']\n"

PROJECT = {
    "pyproject.toml": """\
[project]
name = "other"
version = "0.1"

[tool.ruff]
line-length = 100

[tool.ckptkeys.lint]
select = ["CK1", "CK2"]
ignore = ["CK107"]
extend-exclude = ["vendored"]
per-file-ignores = {"tests/*" = ["CK1"]}
""",
    ".gitignore": "generated/\n*.egg-info/\n",
    # A CI checkout after `pip install` into a virtual environment: never linted.
    ".venv/lib/python3.11/site-packages/deepspeed/runtime/engine.py": FINDINGS,
    ".venv/lib/python3.11/site-packages/deepspeed/checkpoint/constants.py": "ZERO_FILE_PREFIX = 'zero_pp_rank_'\n",
    "generated/names.py": FINDINGS,  # ignored by .gitignore
    "other.egg-info/x.py": FINDINGS,  # ignored by .gitignore
    "vendored/megatron.py": FINDINGS,  # extend-exclude
    "pkg/__init__.py": "",
    "pkg/train.py": """\
from deepspeed.checkpoint.constants import PARAM_SHAPES
import torch


def load(path, step):
    sd = torch.load(path)
    shapes = sd['param_shapes']
    names = sd['buffer_names']  # noqa: CK101
    tag = f'global_step{step}'
    keys = ['param_shapes', 'buffer_names']
    return shapes, names, tag, keys, PARAM_SHAPES
""",
    "pkg/fixtures.py": "# ckptkeys: noqa\n" + FINDINGS,
    "tests/test_train.py": """\
def test_load(sd, step):
    assert sd['param_shapes'] == {}
    assert f'global_step{step}'
""",
}

# CK301 is not selected, the noqa'd line and CK107 (ignored) are silent; tests/* keeps CK2 only.
EXPECTED = [
    ("pkg/train.py", 7, 17, 7, 31, "CK101"),
    ("pkg/train.py", 9, 11, 9, 31, "CK203"),
    ("tests/test_train.py", 3, 12, 3, 32, "CK203"),
]

# The GitHub problem matcher of astral-sh/ruff-action (.github/matchers/check.json, commit
# 35619fd), without the `Error: ` the action's own logging puts before each line.
RUFF_ACTION_MATCHER = re.compile(r"^(.*):(\d+):(\d+): (\w+) (.*)$")
# home-assistant/core's .github/workflows/matchers/ruff.json (commit b08cb86), its code class widened
# from ruff's [EF] to CK.
HOME_ASSISTANT_MATCHER = re.compile(r"^(.*):(\d+):(\d+):\s(CK\d{3}\s.*)$")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("other-project")
    for name, text in PROJECT.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    if shutil.which("git") is not None:
        subprocess.run(["git", "init", "-q", str(root)], check=True, env={**os.environ, "HOME": str(root)})
    else:
        (root / ".git").mkdir()
    return root


def ci(project: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``ckptkeys lint ARGS .`` as a CI step runs it: no terminal, GitHub Actions' variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CKPTKEYS", "NO_COLOR", "FORCE_COLOR"))}
    env.update(CI="true", GITHUB_ACTIONS="true", TERM="dumb", PYTHONIOENCODING="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "ckptkeys", "lint", *args, "."],
        cwd=project,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_github_annotations_exactly(project: pathlib.Path) -> None:
    result = ci(project, "--output-format", "github")
    assert result.returncode == 1, result.stderr
    assert result.stderr == ""  # as ruff's github format: the annotations alone
    lines = result.stdout.splitlines()
    assert len(lines) == len(EXPECTED), result.stdout
    for line, (path, row, col, end_row, end_col, code) in zip(lines, EXPECTED, strict=True):
        path = path.replace("/", os.sep)
        where = project / path  # absolute, as ruff's (the runner reads a relative file from the repository's root)
        head = (
            f"::error title=ckptkeys ({code}),file={where},line={row},col={col},endLine={end_row},endColumn={end_col}"
            f"::{path}:{row}:{col}: {code} "
        )
        assert line.startswith(head), (line, head)


def test_what_is_left_out_has_findings(project: pathlib.Path) -> None:
    """Not vacuous: without the table, .gitignore and ruff's default list (``--exclude`` replaces
    it), the virtual environment, the ignored and the excluded folders all have findings."""
    result = ci(project, "--isolated", "--no-respect-gitignore", "--exclude", "no-such-name")
    reported = {line.split(":")[0].split(os.sep)[0] for line in result.stdout.splitlines()}
    assert {".venv", "generated", "other.egg-info", "vendored", "pkg", "tests"} <= reported


def test_exit_zero(project: pathlib.Path) -> None:
    result = ci(project, "--output-format", "github", "--exit-zero")
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == len(EXPECTED)


def test_sarif_is_valid(project: pathlib.Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((pathlib.Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text())
    result = ci(project, "--output-format", "sarif")
    assert result.returncode == 1
    document = json.loads(result.stdout)
    jsonschema.Draft4Validator(schema).validate(document)
    found = [
        (
            pathlib.Path(r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].removeprefix("file://"))
            .relative_to(project.resolve())
            .as_posix(),
            r["locations"][0]["physicalLocation"]["region"]["startLine"],
            r["ruleId"],
        )
        for r in document["runs"][0]["results"]
    ]
    assert found == [(path, row, code) for path, row, _, _, _, code in EXPECTED]


def test_concise_lines_match_ruffs_problem_matchers(project: pathlib.Path) -> None:
    result = ci(project)
    assert result.returncode == 1
    assert result.stderr == "Found 3 problems (1 fixable with --fix).\n"
    lines = result.stdout.splitlines()
    assert len(lines) == len(EXPECTED)
    for line, (path, row, col, _, _, code) in zip(lines, EXPECTED, strict=True):
        for matcher in (RUFF_ACTION_MATCHER, HOME_ASSISTANT_MATCHER):
            match = matcher.match(line)
            assert match is not None, (matcher.pattern, line)
            assert match.group(1, 2, 3) == (path.replace("/", os.sep), str(row), str(col))
        assert RUFF_ACTION_MATCHER.match(line).group(4) == code  # type: ignore[union-attr]


@pytest.mark.skipif(not os.path.exists("/tmp/rv/bin/ruff"), reason="ruff 0.17.6 is not at /tmp/rv/bin/ruff")
def test_ruffs_own_concise_lines_match_the_same_matcher(tmp_path: pathlib.Path) -> None:
    """The matcher is ruff's: ruff's own concise lines match it as ckptkeys' do."""
    (tmp_path / "a.py").write_text("import os\n", encoding="utf-8")
    result = subprocess.run(
        ["/tmp/rv/bin/ruff", "check", "--isolated", "--output-format", "concise", "a.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    match = RUFF_ACTION_MATCHER.match(result.stdout.splitlines()[0])
    assert match is not None and match.group(1, 2, 3, 4) == ("a.py", "1", "8", "F401")


def test_the_documented_step_is_the_one_tested() -> None:
    root = pathlib.Path(__file__).parent.parent
    docs = (root / "docs" / "lint.md").read_text(encoding="utf-8")
    section = docs[docs.index("## In CI") :]
    assert "run: ckptkeys lint --output-format github .\n" in section
    hooks = (root / ".pre-commit-hooks.yaml").read_text(encoding="utf-8")
    for hook in re.findall(r"- id: (ckptkeys[\w-]*)", section):
        assert f"- id: {hook}\n" in hooks, hook
    assert RUFF_ACTION_MATCHER.pattern.strip("^$") in section.replace("\\\\", "\\")
