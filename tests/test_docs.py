"""Generated docs are fresh; the README's promises hold."""

from __future__ import annotations

import re

from ckptkeys import _render

from .conftest import ROOT


def test_key_reference_is_fresh() -> None:
    committed = (ROOT / "docs" / "keys.md").read_text(encoding="utf-8")
    assert committed == _render.render_markdown(), "run: python scripts/regen.py"


def test_key_reference_lists_every_member() -> None:
    import ckptkeys

    text = (ROOT / "docs" / "keys.md").read_text(encoding="utf-8")
    for member in ckptkeys.iter_members():
        assert f"| `{member.name}` | `{member.value!r}` |" in text


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```(?:sh|bash|console)?\n(.*?)```", readme, re.DOTALL)
    assert len(blocks) >= 2
    test_command = blocks[1].strip()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command in ci
