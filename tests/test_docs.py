"""Generated docs are fresh; the README's promises hold."""

from __future__ import annotations

import argparse
import pathlib
from collections.abc import Callable
import re

import pytest

from ckptkeys._keys import _render

from . import doc_examples
from .conftest import ROOT


def test_key_reference_is_fresh() -> None:
    committed = (ROOT / "docs" / "keys.md").read_text(encoding="utf-8")
    assert committed == _render.render_markdown(), "run: python scripts/regen.py"


def test_key_reference_lists_every_member() -> None:
    import ckptkeys

    text = (ROOT / "docs" / "keys.md").read_text(encoding="utf-8")
    for member in ckptkeys.iter_members():
        assert f"| `{member.name}` | `{member.value!r}` |" in text


def test_key_reference_is_markdown_not_rest() -> None:
    text = (ROOT / "docs" / "keys.md").read_text(encoding="utf-8")
    assert "``" not in text and not re.search(r":\w+:`", text)
    assert "(`mp_rank_*_model_states.pt`; ZeRO-3: `zero_pp_rank_*`)" in text
    assert "Its pattern lists are [`ParamPatternKeys`](#parampatternkeys)" in text


def test_key_reference_shows_descriptions_as_written() -> None:
    # A description is plain text: in the table, every character Markdown would read as markup
    # (the backslashes of a regex, a `*` of a file pattern, a pipe) is escaped, nothing else.
    import ckptkeys

    text = (ROOT / "docs" / "keys.md").read_text(encoding="utf-8")
    special = re.compile(r"[\\`*|<\[\]]|(?<!\w)_|_(?!\w)")
    for member in ckptkeys.iter_members():
        row = f"| `{member.name}` | `{member.value!r}` | "
        start = text.index(row, text.index(f"\n## {member.group.__name__}\n")) + len(row)
        cell = text[start : text.index(f" | {member.since or ''} | ", start)]
        assert re.sub(r"\\(.)", r"\1", cell) == member.description
        assert not special.search(re.sub(r"\\.", "", cell)), cell


def test_figures_are_the_last_benchmark_runs() -> None:
    # docs/development.md records the last benchmark run; the README and the reader's page quote it.
    record = (ROOT / "docs" / "development.md").read_text(encoding="utf-8").split("Last figures", 1)[1]
    record = " ".join(record.split())
    found = re.search(
        r"`import ckptkeys` (?P<import>[\d.]+) ms.*?`read` of the 1 GB checkpoint (?P<read>[\d.]+ ms) against "
        r"`torch.load` (?P<torch>[\d,]+ ms).*?memory growth 0 MB \((?P<rss>\d+ MB) absolute\)",
        record,
    )
    assert found, record
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert f"{found['read']} on a 1 GB checkpoint, where `torch.load` takes {found['torch']}" in readme
    assert "takes under a millisecond" in readme and float(found["import"]) < 1
    reader = " ".join((ROOT / "docs" / "reader.md").read_text(encoding="utf-8").split())
    assert f"on a 1 GB checkpoint it takes {found['read']}" in reader
    assert f"({found['rss']} for the whole process" in reader
    assert "millisecond" not in reader
    constants = re.search(
        r"`ckptkeys.constants` (?P<ours>[\d.]+ ms) against (?P<theirs>[\d,]+ ms) for `deepspeed.checkpoint.constants`",
        record,
    )
    assert constants, record
    migration = " ".join((ROOT / "docs" / "migration.md").read_text(encoding="utf-8").split())
    assert f"The import costs {constants['ours']} instead of {constants['theirs']}" in migration
    member = re.search(r"a member as dict key (?P<ratio>[\d.]+x) a plain `str`", record)
    assert member, record
    registry = " ".join((ROOT / "docs" / "registry.md").read_text(encoding="utf-8").split())
    assert f"A dict look-up with a member costs {member['ratio']} one with a plain `str`" in registry


def _section(text: str, heading: str) -> str:
    """The text under a ``## heading`` of a Markdown page, up to the next ``## ``."""
    start = text.index(f"\n## {heading}\n") + len(heading) + 5
    end = text.find("\n## ", start)
    return text[start : end if end >= 0 else len(text)]


def _shell_blocks(text: str) -> list[str]:
    return re.findall(r"^```(?:sh|bash|console)\n(.*?)^```", text, re.DOTALL | re.MULTILINE)


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    [test_command] = _shell_blocks(_section(readme, "Tests"))
    assert test_command.strip() == "bash scripts/test.sh"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(rf"^{re.escape(test_command.strip())}$", ci, re.MULTILINE)


def test_readme_opens_with_purpose_then_commands_then_install() -> None:
    # First contact: one sentence of purpose, the table of jobs, install in a venv, two commands.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", readme, re.MULTILINE)
    assert headings[:3] == ["Which command do I need", "Install", "First commands"]
    purpose = " ".join(readme.split("\n## ", 1)[0].removeprefix("# ckptkeys\n").split())
    assert purpose.endswith(".") and purpose.count(". ") == 0 and "`" not in purpose, purpose
    table = _section(readme, "Which command do I need")
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| To ")]
    jobs = [row.split(" | ")[0].removeprefix("| ") for row in rows]
    assert jobs == [
        "inspect a checkpoint",
        "check a save before resuming from it",
        "get the weights out",
        "resume on another number of GPUs",
        "migrate code",
    ]
    from ckptkeys._cli._main import _parser

    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    for row in rows:
        command = re.search(r"`ckptkeys (\w+)", row)
        assert command and command.group(1) in commands, row
        assert re.search(r"\[\w+\.md\]\(docs/\w+\.md\)$", row.removesuffix(" |")), row
    install = _section(readme, "Install")
    assert "python3 -m venv .venv && .venv/bin/pip install ." in install
    assert "'.[export]'" in install and "pipx install ." in install and "PEP 668" in install
    [first] = _shell_blocks(_section(readme, "First commands"))
    assert first.splitlines()[0].startswith("ckptkeys inspect --example ")
    assert len(first.splitlines()) == 2


def test_links_resolve() -> None:
    checked = 0
    for path in doc_examples.markdown_files():
        text = path.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", text):
            assert (path.parent / target).exists(), f"{path.name}: link to {target}"
            checked += 1
    assert checked > 40


def test_complete_examples_are_exactly_the_marked_ones() -> None:
    # The marker says "complete program: CI type-checks it"; a complete block without it would
    # escape the check, a fragment with it would fail mypy for a name it never imports.
    marked = {(example.path, example.line) for example in doc_examples.all_examples()}
    for path in doc_examples.markdown_files():
        for line, code in doc_examples.python_blocks(path):
            assert doc_examples.is_complete(code) == ((path, line) in marked), f"{path}:{line}"


def test_every_marker_is_extracted() -> None:
    examples = doc_examples.all_examples()
    markers = sum(
        line.strip() == doc_examples.MARKER
        for path in doc_examples.markdown_files()
        for line in path.read_text(encoding="utf-8").splitlines()
    )
    assert markers == len(examples) > 0
    # The example the writing guide promises passes mypy --strict is among them.
    assert any(e.path.name == "writing.md" and "universal_checkpoint_info(" in e.code for e in examples)


def test_extraction_rule(tmp_path: pathlib.Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- mypy -->\n```python\nimport os\nprint(os.sep)\n```\n\n```python\nprint(x)\n```\n"
        "<!-- mypy -->\n````python\ndef f() -> None:\n    print(f)\n````\n",
        encoding="utf-8",
    )
    examples = doc_examples.examples_in(page)
    assert [(e.line, e.code) for e in examples] == [
        (2, "import os\nprint(os.sep)\n"),
        (11, "def f() -> None:\n    print(f)\n"),
    ]
    assert [line for line, _ in doc_examples.python_blocks(page)] == [2, 7, 11]
    written = doc_examples.write(examples, tmp_path / "out")
    assert [path.name for path in written] == ["page_md_line2.py", "page_md_line11.py"]
    assert written[0].read_text(encoding="utf-8") == "# page.md, the block at line 2\nimport os\nprint(os.sep)\n"


@pytest.mark.parametrize(
    "text",
    [
        "<!-- mypy -->\n\n```python\nx = 1\n```\n",  # not directly before the block
        "<!-- mypy -->\n```sh\nls\n```\n",  # not before a python block
        "<!-- mypy -->\n```python\nx = 1\n",  # a block never closed
    ],
)
def test_misplaced_marker_or_open_block_is_an_error(tmp_path: pathlib.Path, text: str) -> None:
    page = tmp_path / "page.md"
    page.write_text(text, encoding="utf-8")
    with pytest.raises(doc_examples.MarkerError, match="page.md"):
        doc_examples.examples_in(page)


@pytest.mark.parametrize(
    ("code", "complete"),
    [
        ("import ckptkeys\nckptkeys.scan('x')\n", True),
        ("ckptkeys.scan('x')\n", False),
        ("def f() -> None:\n    print(torch)\n", False),
        ("import torch\ndef f() -> None:\n    x = 1\n    print(torch, x, len)\n", True),
        ("sd['module'] -> sd[ModuleKeys.MODULE]\n", False),
        ("from ckptkeys.constants import *\nprint(ZERO_STAGE)\n", True),
    ],
)
def test_is_complete(code: str, complete: bool) -> None:
    assert doc_examples.is_complete(code) is complete


def test_torch_load_branch_table_names_tests_that_exist() -> None:
    """docs/security.md's table of torch.load's branches: each row names a test that exists, or says why none."""
    text = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    table = text[text.index("### Every branch of `torch.load`") : text.index("**Coverage.**")]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert len(rows) >= 25
    for row in rows:
        cell = row.rstrip().removesuffix("|").rsplit("|", 1)[-1].strip()
        named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", cell)
        assert named or cell.startswith("none: "), row[:80]
        for file, test in named:
            assert re.search(rf"^def {test}\(", (ROOT / file).read_text(encoding="utf-8"), re.M), f"{file}::{test}"


def _cells(row: str) -> int:
    """The cells of a Markdown table row: split at pipes not escaped (GFM splits inside code spans too)."""
    return len(re.split(r"(?<!\\)\|", row.strip().removeprefix("|").removesuffix("|")))


def _tables(text: str) -> list[tuple[int, list[str], str]]:
    """Every run of lines starting with ``|`` outside code fences: (line, rows, the line before it)."""
    runs: list[tuple[int, list[str], str]] = []
    fence = None
    previous = ""
    for number, line in enumerate(text.splitlines(), 1):
        opening = re.match(r"^\s*(`{3,}|~{3,})", line)
        if fence is None and opening:
            fence = opening.group(1)
        elif fence is not None and line.strip() == fence:
            fence = None
        elif fence is None and line.startswith("|"):
            if runs and runs[-1][0] + len(runs[-1][1]) == number:
                runs[-1][1].append(line)
            else:
                runs.append((number, [line], previous))
        previous = line
    return runs


@pytest.mark.parametrize("path", doc_examples.markdown_files(), ids=lambda p: p.name)
def test_tables_render(path: pathlib.Path) -> None:
    # A table row after a paragraph, or a row with a cell too many or too few, does not render as
    # a table (reader.md's error table once ended with a row cut off by a paragraph).
    for line, rows, before in _tables(path.read_text(encoding="utf-8")):
        where = f"{path.name}:{line}"
        assert before.strip() == "", f"{where}: a table must follow a blank line"
        assert len(rows) >= 2 and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", rows[1].strip()), f"{where}: no delimiter row"
        widths = {_cells(row) for row in rows}
        assert widths == {_cells(rows[0])}, f"{where}: rows of {sorted(widths)} cells"


def test_table_check_finds_a_broken_table() -> None:
    broken = "| A | B |\n|---|---|\n| 1 | 2 |\n\nA paragraph.\n| 3 | 4 |\n"
    [(_, good, _), (line, rows, before)] = _tables(broken)
    assert len(good) == 3 and (line, rows, before) == (6, ["| 3 | 4 |"], "A paragraph.")
    assert _cells("| `a \\| b` | c |") == 2 and _cells("| a | b | c |") == 3


def test_install_commands_name_the_checkout() -> None:
    # ckptkeys is not on the package index: `pip install 'ckptkeys[export]'` fails; from a clone it is '.[export]'.
    for path in doc_examples.markdown_files():
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"ckptkeys\[", text), f"{path.name}: an extra named as if ckptkeys were on the index"


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda tmp: tmp / "missing", "unreadable-file"),
        (lambda tmp: tmp, "unreadable-file"),  # a folder that holds no checkpoint
        (lambda tmp: _write(tmp / "x.pt", b"hi\n"), "unreadable-file"),
    ],
    ids=["missing", "empty-folder", "not-a-checkpoint"],
)
def test_json_errors_carry_a_code_as_cli_md_says(
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    make: Callable[[pathlib.Path], pathlib.Path],
    code: str,
) -> None:
    # docs/cli.md: every ReadError's JSON error has `code` and `globals`, a missing PATH's too;
    # a UsageError has neither.
    import json

    from ckptkeys._cli._main import main

    doc = " ".join((ROOT / "docs" / "cli.md").read_text(encoding="utf-8").split())
    assert "Every `ReadError` (a PATH that does not exist, a file that could not be read, a folder that holds" in doc
    path = str(make(tmp_path))
    assert main(["validate", "--json", path]) == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["type"] != "UsageError" and (error["code"], error["globals"]) == (code, [])
    assert main(["inspect", "--json", "--example", str(tmp_path)]) == 2  # PATH and --example: a UsageError
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["type"] == "UsageError" and "code" not in error and "globals" not in error


def _write(path: pathlib.Path, data: bytes) -> pathlib.Path:
    path.write_bytes(data)
    return path


CHANGE_TYPES = ("Added", "Changed", "Deprecated", "Removed", "Fixed", "Security")


def _changelog(text: str) -> list[tuple[str, str | None]]:
    """The releases of a Keep a Changelog 1.1.0 file, newest first: (version, date), Unreleased
    first with no date; ValueError for a heading or section the format does not have."""
    lines = text.splitlines()
    if lines[:1] != ["# Changelog"] or "https://keepachangelog.com/en/1.1.0/" not in text:
        raise ValueError("not a Keep a Changelog 1.1.0 file")
    releases: list[tuple[str, str | None]] = []
    section: str | None = None
    items = 0
    for line in [*lines[1:], "## [end]"]:
        if line.startswith("#"):
            if section is not None and items == 0:
                raise ValueError(f"empty section: {section}")
            section, items = None, 0
        if line.startswith("## "):
            if line == "## [end]":
                break
            found = re.fullmatch(r"## \[(Unreleased|\d+\.\d+\.\d+)\](?: - (\d{4}-\d{2}-\d{2}))?", line)
            if not found or (found[1] == "Unreleased") != (found[2] is None):
                raise ValueError(f"bad release heading: {line}")
            if found[2] is not None:
                import datetime

                datetime.date.fromisoformat(found[2])
            releases.append((found[1], found[2]))
        elif line.startswith("### "):
            if not releases or line[4:] not in CHANGE_TYPES:
                raise ValueError(f"bad section: {line}")
            section = line
        elif line.startswith("#"):
            raise ValueError(f"a heading the format does not have: {line}")
        elif line.startswith("- "):
            if section is None:
                raise ValueError(f"an entry outside a section: {line}")
            items += 1
    if not releases or releases[0][0] != "Unreleased" or any(v == "Unreleased" for v, _ in releases[1:]):
        raise ValueError("[Unreleased] must come first, once")
    released = releases[1:]
    versions = [tuple(int(part) for part in version.split(".")) for version, _ in released]
    dates = [date for _, date in released]
    if versions != sorted(versions, reverse=True) or len(set(versions)) != len(versions):
        raise ValueError("versions must be newest first, each once")
    if dates != sorted(dates, reverse=True):  # type: ignore[type-var]
        raise ValueError("dates must be newest first")
    return releases


def test_changelog_newest_release_is_the_version() -> None:
    import ckptkeys

    releases = _changelog((ROOT / "CHANGELOG.md").read_text(encoding="utf-8"))
    assert releases[1][0] == ckptkeys.__version__
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "[CHANGELOG.md](CHANGELOG.md)" in readme


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("# Changelog\nhttps://keepachangelog.com/en/1.1.0/\n## [0.1.0] - 2026-12-06\n### Added\n- x\n", "Unreleased"),
        ("# Changelog\nhttps://keepachangelog.com/en/1.1.0/\n## [Unreleased]\n## [0.1.0]\n", "bad release"),
        ("# Changelog\nhttps://keepachangelog.com/en/1.1.0/\n## [Unreleased]\n### Improved\n- x\n", "bad section"),
        ("# Changelog\nhttps://keepachangelog.com/en/1.1.0/\n## [Unreleased]\n### Added\n## [0.1.0] - 2026-12-06\n", "empty"),
        (
            "# Changelog\nhttps://keepachangelog.com/en/1.1.0/\n## [Unreleased]\n"
            "## [0.1.0] - 2026-12-06\n### Added\n- x\n## [0.2.0] - 2026-12-07\n### Added\n- y\n",
            "newest first",
        ),
        ("# Changelog\nhttps://keepachangelog.com/en/1.1.0/\n## [Unreleased]\n## [0.1.0] - 2026-13-06\n", "month"),
    ],
)
def test_changelog_check_refuses_what_the_format_lacks(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        _changelog(text)
