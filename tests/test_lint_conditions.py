"""ckptkeys lint: the branches that run without DeepSpeed, each test judged by its parts.

A key in a branch that runs only without DeepSpeed (``if not args.deepspeed:``, the ``else`` of
``if args.deepspeed:``) is Megatron's own and not reported; a compound test is read as what it
says, so the ``else`` of ``if args.deepspeed and not args.no_pipeline_parallel:`` (which also runs
with DeepSpeed, when ``no_pipeline_parallel``) is not such a branch (issue 22, point 1).
"""

from __future__ import annotations

import ast
import textwrap

import pytest

from ckptkeys.lint import lint_source
from ckptkeys.lint._linter import _deepspeed_test

# `param_shapes` is a key only DeepSpeed writes: reported wherever the branch may run with DeepSpeed.
KEY = "sd['param_shapes']"


def reported(code: str) -> bool:
    findings = lint_source(textwrap.dedent(code), "example.py")
    return any(f.value == "param_shapes" for f in findings)


@pytest.mark.parametrize(
    ("code", "found"),
    [
        # the miss: the else of a compound test runs with DeepSpeed too
        (f"if args.deepspeed and not args.no_pipeline_parallel:\n    pass\nelse:\n    {KEY}\n", True),
        (f"if args.deepspeed and not args.no_pipeline_parallel:\n    {KEY}\n", True),
        # plain tests, as before
        (f"if not args.deepspeed:\n    {KEY}\n", False),
        (f"if not args.deepspeed:\n    pass\nelse:\n    {KEY}\n", True),
        (f"if args.deepspeed:\n    pass\nelse:\n    {KEY}\n", False),
        (f"if args.deepspeed:\n    {KEY}\n", True),
        # or: the body may run with DeepSpeed (x true), its else runs without
        (f"if args.deepspeed or x:\n    {KEY}\n", True),
        (f"if args.deepspeed or x:\n    pass\nelse:\n    {KEY}\n", False),
        (f"if not args.deepspeed or x:\n    {KEY}\n", True),
        (f"if not args.deepspeed and x:\n    {KEY}\n", False),
        (f"if not args.deepspeed and x:\n    pass\nelse:\n    {KEY}\n", True),
        (f"if a and args.deepspeed:\n    {KEY}\n", True),
        (f"if a and args.deepspeed:\n    pass\nelse:\n    {KEY}\n", True),
        (f"if not (args.deepspeed or x):\n    {KEY}\n", False),
        # comparisons that turn the test round
        (f"if args.deepspeed is None:\n    {KEY}\n", False),
        (f"if args.deepspeed is not None:\n    pass\nelse:\n    {KEY}\n", False),
        (f"if args.deepspeed is not None:\n    {KEY}\n", True),
        (f"if args.strategy != 'deepspeed':\n    {KEY}\n", False),
        (f"if args.no_deepspeed:\n    {KEY}\n", False),
        # elif chains
        (f"if args.deepspeed:\n    pass\nelif x:\n    {KEY}\n", False),
        (f"if not args.deepspeed:\n    pass\nelif x:\n    {KEY}\n", True),
        (f"if args.deepspeed and y:\n    pass\nelif x:\n    {KEY}\n", True),
        (f"if x:\n    pass\nelif not args.deepspeed:\n    {KEY}\n", False),
        # conditional expressions and and/or operands
        (f"v = {KEY} if args.deepspeed and y else None\n", True),
        (f"v = None if args.deepspeed else {KEY}\n", False),
        (f"v = None if args.deepspeed and y else {KEY}\n", True),
        (f"v = args.deepspeed and {KEY}\n", True),
        (f"v = args.deepspeed or {KEY}\n", False),
        (f"v = not args.deepspeed and {KEY}\n", False),
        (f"v = x or {KEY}\n", True),
    ],
)
def test_branches_are_judged_by_the_parts_of_their_test(code: str, found: bool) -> None:
    assert reported(code) is found, code


def test_a_common_word_in_the_else_of_a_compound_test() -> None:
    # Megatron-DeepSpeed's loader: the else runs with DeepSpeed when no_pipeline_parallel is set
    code = """
    def load(args, model, name):
        if args.deepspeed and not args.no_pipeline_parallel:
            model.load_checkpoint(name)
        else:
            sd = torch.load(os.path.join(name, 'mp_rank_00_model_states.pt'))
            model.load_state_dict(sd['module'])
    """
    findings = [f for f in lint_source(textwrap.dedent(code)) if f.code == "CK101"]
    assert [f.value for f in findings] == ["module"]
    plain = code.replace(" and not args.no_pipeline_parallel", "")
    assert [f for f in lint_source(textwrap.dedent(plain)) if f.code == "CK101"] == []


@pytest.mark.parametrize(
    ("test", "reading"),
    [
        ("args.deepspeed", (True, False, False, True)),
        ("not args.deepspeed", (False, True, True, False)),
        ("args.deepspeed and not args.no_pipeline_parallel", (True, False, False, False)),
        ("args.deepspeed or x", (False, False, False, True)),
        ("a and args.deepspeed", (True, False, False, False)),
        ("is_deepspeed_zero3_enabled() and a and b", (True, False, False, False)),
        ("args.deepspeed == False", (False, True, True, False)),
        ("x > 3", (False, False, False, False)),
        ("x is None", (False, False, False, False)),
    ],
)
def test_what_a_test_says_of_deepspeed(test: str, reading: tuple[bool, bool, bool, bool]) -> None:
    assert _deepspeed_test(ast.parse(test, mode="eval").body) == reading
