"""Member docstrings: what ``inspect.getdoc``, IPython's ``?`` and ``help(Group)`` show; ``help(member)``."""

from __future__ import annotations

import builtins
import importlib.util
import inspect
import pydoc
import re

import pytest

from ckptkeys import GROUPS, KeyGroup, OptimizerKeys, iter_members


@pytest.mark.parametrize("member", list(iter_members()), ids=lambda m: f"{type(m).__name__}.{m.name}")
def test_every_member_has_its_own_docstring(member: KeyGroup) -> None:
    doc = inspect.getdoc(member)
    assert doc is not None and doc.startswith(member.description), doc
    assert f"Value {member.value!r}" in doc
    if member.deepspeed_name is not None:
        assert f"deepspeed.checkpoint.constants.{member.deepspeed_name}" in doc
    if member.since is not None:
        assert f"since DeepSpeed {member.since}" in doc
    assert pydoc.getdoc(member) == doc  # what pydoc shows beside the member in help(Group)
    assert type(member).__doc__ != member.__doc__  # not the group's docstring


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.__name__)
def test_help_of_a_group_lists_each_member_with_its_description(group: type[KeyGroup]) -> None:
    text = pydoc.plain(pydoc.render_doc(group))
    assert inspect.getdoc(group).splitlines()[0] in text  # type: ignore[union-attr]
    for member in group:
        line = re.search(rf"^ \|  {member.name} = .*\n \|      (.*)$", text, re.MULTILINE)
        assert line is not None, member.name
        assert line.group(1) == member.description.splitlines()[0]


def test_the_groups_own_docstrings_are_kept() -> None:
    assert OptimizerKeys.__doc__ is not None and OptimizerKeys.__doc__.startswith("Keys of the optimizer state")
    assert KeyGroup.__doc__ is not None and KeyGroup.__doc__.startswith("A group of DeepSpeed checkpoint keys")


def test_help_of_a_member_finds_no_documentation() -> None:
    # docs/registry.md: pydoc takes a str argument as a name to look up, and a member is a str.
    with pytest.raises(ImportError, match="No Python documentation found for"):
        pydoc.render_doc(OptimizerKeys.PARTITION_COUNT)


@pytest.mark.parametrize("member", list(iter_members()), ids=lambda m: f"{type(m).__name__}.{m.name}")
def test_help_of_a_member_never_documents_something_else(member: KeyGroup) -> None:
    # What pydoc.Helper.help and pydoc.locate would find under the member's value (3.11+ strip it
    # first); none may match, or help(member) would show a keyword, topic, module or builtin.
    name = member.value.strip()
    assert name not in ("keywords", "symbols", "topics", "modules", "True", "False", "None")
    assert not name.startswith("modules ")
    assert name not in pydoc.Helper.symbols and name not in pydoc.Helper.keywords and name not in pydoc.Helper.topics
    parts = [part for part in name.split(".") if part]
    assert parts, name  # an empty name would document str
    assert importlib.util.find_spec(parts[0]) is None, name
    assert not hasattr(builtins, parts[0]), name
