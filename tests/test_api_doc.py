"""docs/api.md and docs/cli.md's synopses: generated from the code, fresh, and complete."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import types

import pytest

from ckptkeys._cli._main import _parser

from .conftest import ROOT

REFRESH = "python scripts/regen.py"


def _docgen() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("docgen", ROOT / "scripts" / "docgen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


docgen = _docgen()


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_api_reference_is_fresh() -> None:
    committed = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert committed == docgen.render_api(), f"docs/api.md is stale: run `{REFRESH}`"


def test_cli_synopses_are_fresh() -> None:
    committed = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert committed == docgen.render_cli(committed, _parser()), f"docs/cli.md's synopses are stale: run `{REFRESH}`"


@pytest.mark.parametrize("module", docgen.MODULES)
def test_api_reference_names_every_public_name(module: str) -> None:
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    names: list[str] = importlib.import_module(module).__all__
    headings = set(re.findall(rf"^### `{re.escape(module)}\.(\w+)`$", text, re.MULTILINE))
    assert headings == set(names)


def test_every_function_and_class_entry_has_its_summary() -> None:
    # A public function or class without a docstring would show as a bare heading.
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    for entry in text.split("\n### ")[1:]:
        name, _, body = entry.partition("\n")
        kind = re.search(r"^\*(.+)\*$", body, re.MULTILINE)
        assert kind, name
        if kind.group(1) in ("function", "class", "dataclass", "TypedDict", "enum") or kind.group(1).startswith("key"):
            prose = re.sub(r"```py\n.*?```\n", "", body, flags=re.DOTALL).replace(kind.group(0), "")
            assert prose.strip(), f"{name}: no docstring"


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_synopsis_lists_exactly_the_parsers_options(name: str) -> None:
    # Checked against argparse itself, not against the generator: every option string, metavar
    # and positional of the command, and nothing else.
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    found = re.search(rf"^## `(ckptkeys {name}(?: [^`]*)?)`$", text, re.MULTILINE)
    assert found, f"docs/cli.md: no synopsis heading for `ckptkeys {name}`: run `{REFRESH}`"
    synopsis = found.group(1)
    parser = _subcommands()[name]
    options = {s for a in parser._actions for s in a.option_strings if s.startswith("--") and s != "--help"}
    assert set(re.findall(r"--[\w-]+", synopsis)) == options
    for action in parser._actions:
        if action.option_strings and action.nargs != 0 and "--help" not in action.option_strings:
            long = max(action.option_strings, key=len)
            shown = "|".join(action.choices) if action.choices else action.metavar or action.dest.upper()
            assert f"{long} {shown}" in synopsis, long
        elif not action.option_strings:
            spelled = {None: "{}", "?": "[{}]", "+": "{}...", "*": "[{}...]"}[action.nargs].format(action.metavar)  # type: ignore[index]
            assert spelled in synopsis.split(), spelled
    table = re.sub(r"\\(.)", r"\1", text[found.end() : text.index(docgen.END, found.end())])  # unescaped
    for action in parser._actions:
        if action.help and "--help" not in action.option_strings:
            assert f" | {action.help} |" in table, action.help


def test_cli_generator_refuses_a_command_without_a_block() -> None:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    block = docgen.BEGIN.format(command="lint")
    with pytest.raises(ValueError, match="no block for `ckptkeys lint`"):
        docgen.render_cli(text.replace(block, ""), _parser())
    stray = docgen.BEGIN.format(command="nope") + "\n" + docgen.END
    with pytest.raises(ValueError, match="nope"):
        docgen.render_cli(text + stray, _parser())


def test_a_new_option_makes_the_synopsis_stale() -> None:
    parser = _parser()
    committed = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    # An option no command has (a real one would collide with the parser's own).
    _subcommands_of(parser)["validate"].add_argument("--zz-probe", choices=("a", "b"), help="a probe option")
    fresh = docgen.render_cli(committed, parser)
    assert fresh != committed
    heading = next(line for line in fresh.splitlines() if line.startswith("## `ckptkeys validate "))
    assert heading.endswith(" [--zz-probe a|b]`")
    assert "| `--zz-probe a\\|b` | a probe option |" in fresh


def _subcommands_of(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_signature_keeps_annotations_as_written() -> None:
    namespace: dict[str, object] = {}
    exec(
        "from __future__ import annotations\n"
        "def f(a: int | None, /, b: dict[str, 'X'] = {}, *, c: Literal['x', 'y'] = 'x') -> tuple[int, ...]: ...\n",
        namespace,
    )
    shown = docgen.signature(namespace["f"])
    assert shown == "(a: int | None, /, b: dict[str, 'X'] = {}, *, c: Literal['x', 'y'] = 'x') -> tuple[int, ...]"
    assert docgen.wrapped("f", shown) == (
        "f(a: int | None, /, b: dict[str, 'X'] = {}, *, c: Literal['x', 'y'] = 'x') -> tuple[int, ...]"
    )
    assert docgen.wrapped("f" * 80, shown).splitlines() == [
        "f" * 80 + "(",
        "    a: int | None,",
        "    /,",
        "    b: dict[str, 'X'] = {},",
        "    *,",
        "    c: Literal['x', 'y'] = 'x',",
        ") -> tuple[int, ...]",
    ]


def test_a_default_without_a_stable_repr_is_refused() -> None:
    def f(a: object = object()) -> None: ...

    with pytest.raises(ValueError, match="not stable"):
        docgen.signature(f)


def test_summary_is_the_first_paragraph_as_markdown() -> None:
    doc = """Read ``path`` with :class:`~ckptkeys.Limits`.

    More text.
    """
    assert docgen.summary(doc) == "Read `path` with `Limits`."


# -- docs/lint.md: every option of lint and every key of [tool.ckptkeys.lint] -------------------------------


def test_lint_tables_are_fresh() -> None:
    committed = (ROOT / "docs" / "lint.md").read_text(encoding="utf-8")
    assert committed == docgen.render_lint(committed, _parser()), f"docs/lint.md's tables are stale: run `{REFRESH}`"


def test_lint_tables_list_every_option_and_key() -> None:
    # Checked against the parser and _config's list, not against the generator.
    from ckptkeys._cli._config import LINT_KEYS

    text = (ROOT / "docs" / "lint.md").read_text(encoding="utf-8")
    start = text.index(docgen.LINT_OPTIONS)
    options = text[start : text.index(docgen.END_TABLE, start)]
    parser = _subcommands()["lint"]
    for action in parser._actions:
        for flag in action.option_strings:
            if flag not in ("-h", "--help"):
                assert f"`{flag}" in options, flag
    start = text.index(docgen.LINT_KEYS)
    keys = text[start : text.index(docgen.END_TABLE, start)]
    rows = re.findall(r"^\| `([\w-]+)` \| ([^|]+) \| ([^|]+) \|", keys, re.MULTILINE)
    assert [(key, kind) for key, kind, _ in rows] == list(LINT_KEYS.items())
    assert all(default.strip() for _, _, default in rows)


def test_a_new_lint_option_or_key_makes_lint_md_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    from ckptkeys._cli import _config

    committed = (ROOT / "docs" / "lint.md").read_text(encoding="utf-8")
    parser = _parser()
    _subcommands_of(parser)["lint"].add_argument("--zz-probe", action="store_true", help="a probe option")
    assert "| `--zz-probe` | a probe option |" in docgen.render_lint(committed, parser)
    monkeypatch.setitem(_config.LINT_KEYS, "zz-probe", _config.BOOLEAN)
    with pytest.raises(ValueError, match="zz-probe"):  # a key without its default and meaning
        docgen.render_lint(committed, _parser())
    monkeypatch.setitem(_config.LINT_KEY_DOCS, "zz-probe", ("false", "a probe key"))
    assert "| `zz-probe` | a boolean | false | a probe key |" in docgen.render_lint(committed, _parser())
    with pytest.raises(ValueError, match="no generated table"):
        docgen.render_lint(committed.replace(docgen.LINT_KEYS, ""), _parser())
