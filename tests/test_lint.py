"""ckptkeys lint: every rule with positive and negative cases, --fix, and the command."""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import re
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ckptkeys
from ckptkeys.lint import CODES, Finding, fix_source, iter_python_files, lint_source
from ckptkeys.lint._linter import noqa_codes


def lint(code: str, **kwargs: object) -> list[Finding]:
    return lint_source(textwrap.dedent(code), "example.py", **kwargs)  # type: ignore[arg-type]


def codes(code: str) -> list[str]:
    return [f.code for f in lint(code)]


def fixed(code: str) -> str:
    source = textwrap.dedent(code)
    return fix_source(source, lint_source(source, "example.py"))[0]


# -- key positions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("x = state['param_shapes']", "CK101"),
        ("state['param_shapes'] = x", "CK101"),
        ("del state['param_shapes']", "CK101"),
        ("x = state.get('param_shapes')", "CK102"),
        ("x = state.pop('param_shapes', None)", "CK102"),
        ("state.setdefault('param_shapes', {})", "CK102"),
        ("if 'param_shapes' in state: pass", "CK103"),
        ("if 'param_shapes' not in state: pass", "CK103"),
        ("x = {'param_shapes': 1}", "CK104"),
        ("if key == 'param_shapes': pass", "CK105"),
        ("if 'param_shapes' != self.key: pass", "CK105"),
        ("if k == 'param_shapes': pass", "CK105"),
        ("helper(key='param_shapes')", "CK106"),
    ],
)
def test_each_key_position(code: str, expected: str) -> None:
    (finding,) = lint(code)
    assert finding.code == expected
    assert finding.value == "param_shapes"
    assert finding.candidates == ("ModuleKeys.PARAM_SHAPES",)
    assert "ModuleKeys.PARAM_SHAPES" in finding.message


@pytest.mark.parametrize(
    "code",
    [
        "x = 'param_shapes'",  # a bare string: no key position
        "print('param_shapes')",
        "x = f(param_shapes='optimizer_state_dict')",  # a keyword other than key=
        "if name == 'param_shapes': pass",  # == with something not named like a key
        "x = state['not_a_deepspeed_key']",
        "x = state[b'param_shapes']",  # bytes are not keys
        "x = ['param_shapes']",  # one key: not a collection of keys
        "x = state.values('param_shapes')",  # not a key method
        "x = state['param_shapes' + suffix]",  # not a literal
        "x: Literal['param_shapes'] = 'param_shapes'",  # a type, not a look-up
        "x: typing.Literal['param_shapes']",
    ],
)
def test_not_key_positions(code: str) -> None:
    assert lint(code) == []


def test_position_is_reported_in_characters_and_one_based() -> None:
    (finding,) = lint("x = 'é' + state['param_shapes']\n")
    assert (finding.line, finding.col) == (1, 17)
    assert str(finding) == f"example.py:1:17: CK101 {finding.message}"


def test_ordinary_words_need_a_distinctive_key_of_their_group_beside_them() -> None:
    assert codes("def f(config):\n    return config['optimizer'], config['module']\n") == []
    assert codes("x = d['step']") == []
    found = lint(
        """
        def load(sd):
            model = sd['module']
            names = sd['buffer_names']
        """
    )
    assert [(f.value, f.candidates[0]) for f in found] == [
        ("module", "ModuleKeys.MODULE"),
        ("buffer_names", "ModuleKeys.BUFFER_NAMES"),
    ]


def test_context_is_per_function() -> None:
    found = lint(
        """
        def load(sd):
            return sd['buffer_names']

        def other(config):
            return config['module']
        """
    )
    assert [f.value for f in found] == ["buffer_names"]


def test_candidates_are_ordered_by_the_keys_around_them() -> None:
    (scaler,) = [
        f
        for f in lint(
            """
            def f(s):
                return s['cur_scale'], s['dynamic_loss_scale'], s['single_partition_of_fp32_groups']
            """
        )
        if f.value == "cur_scale"
    ]
    assert scaler.candidates[0] == "OptimizerKeys.CUR_SCALE"
    assert set(scaler.candidates) == {"OptimizerKeys.CUR_SCALE", "LossScalerKeys.CUR_SCALE"}
    assert scaler.fixable and scaler.replacement == "OptimizerKeys.CUR_SCALE"
    (scaler,) = [
        f
        for f in lint(
            """
            def f(s):
                return s['cur_scale'], s['cur_hysteresis'], s['consecutive_hysteresis']
            """
        )
        if f.value == "cur_scale"
    ]
    assert scaler.candidates[0] == "LossScalerKeys.CUR_SCALE"


def test_a_tie_is_ambiguous_and_not_fixed() -> None:
    (finding,) = lint("x = state['ds_version']")
    assert len(finding.candidates) == 3 and "use one of" in finding.message
    assert not finding.fixable
    assert fix_source("x = state['ds_version']\n", [finding]) == ("x = state['ds_version']\n", [])


# -- file names --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "builder"),
    [
        ("name = f'zero_pp_rank_{dp}_mp_rank_{mp:02d}_optim_states.pt'", "optim_states(dp_rank, mp_rank, precision)"),
        ("name = 'mp_rank_' + str(mp).zfill(2) + '_model_states.pt'", "model_states(mp_rank)"),
        ("name = 'layer_%02d-model_states.pt' % layer", "layer_model_states(layer, mp_rank)"),
        (
            "name = 'expp_rank_{}_mp_rank_{:02d}_optim_states.pt'.format(ep, mp)",
            "expert_optim_states(ep_rank, mp_rank)",
        ),
        ("name = f'{prefix}zero_pp_rank_{dp}' + f'_mp_rank_{mp:02d}_model_states.pt'", "zero3_model_states"),
    ],
)
def test_rebuilt_file_names(code: str, builder: str) -> None:
    (finding,) = lint(code)
    assert finding.code == "CK201"
    assert builder in finding.message
    assert not finding.fixable


@pytest.mark.parametrize(
    "code",
    [
        "msg = f'Expected {n} of *_optim_states.pt files'",  # a sentence, not a name
        "name = f'log_rank_{rank}.txt'",
        "name = f'global_rank_mapping={mapping}'",
        "name = f'layer_{i}.weight'",
        "pattern = '*_optim_states.pt'",  # no placeholder: a glob, not a rebuilt name
    ],
)
def test_not_file_names(code: str) -> None:
    assert lint(code) == []


def test_literal_file_names() -> None:
    (finding,) = lint("path = os.path.join(d, 'bf16_zero_pp_rank_3_mp_rank_01_optim_states.pt')")
    assert finding.code == "CK202"
    assert "ckptkeys.naming.optim_states(3, 1, 'bf16')" in finding.message
    assert lint("path = 'weights_model_states.pt'") == []


# -- imports ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "after"),
    [
        (
            "from deepspeed.checkpoint.constants import OPTIMIZER_STATE_DICT\n",
            "from ckptkeys.constants import OPTIMIZER_STATE_DICT\n",
        ),
        (
            "from deepspeed.checkpoint.constants import (\n    A,  # first\n    B,\n)\n",
            "from ckptkeys.constants import (\n    A,  # first\n    B,\n)\n",
        ),
        ("import deepspeed.checkpoint.constants as c\n", "import ckptkeys.constants as c\n"),
        ("from deepspeed.checkpoint import constants\n", "from ckptkeys import constants\n"),
        ("import deepspeed.checkpoint.constants\n", None),  # binds `deepspeed`: not rewritten
    ],
)
def test_constants_imports(code: str, after: str | None) -> None:
    (finding,) = lint(code)
    assert finding.code == "CK301"
    assert fixed(code) == (after if after is not None else code)


def test_relative_import_inside_deepspeed_is_reported_not_rewritten(tmp_path: pathlib.Path) -> None:
    package = tmp_path / "deepspeed" / "checkpoint"
    package.mkdir(parents=True)
    path = package / "user.py"
    source = "from .constants import ZERO_STAGE\nfrom .utils import thing\n"
    (finding,) = lint_source(source, str(path))
    assert finding.code == "CK301" and not finding.fixable
    assert lint_source(source, str(tmp_path / "elsewhere.py")) == []


def test_unrelated_imports() -> None:
    assert lint("from deepspeed.checkpoint import DeepSpeedCheckpoint\nimport constants\n") == []


def test_syntax_errors_are_a_finding() -> None:
    (finding,) = lint("x = state['param_shapes'\n")
    assert finding.code == "CK001"


# -- suppression and selection -----------------------------------------------------------------------


def test_ignore_comments() -> None:
    assert lint("x = state['param_shapes']  # ckptkeys: ignore\n") == []
    assert lint("x = state['param_shapes']  # ckptkeys: ignore[CK101]\n") == []
    assert [f.code for f in lint("x = state['param_shapes']  # ckptkeys: ignore[CK102]\n")] == ["CK101"]


def test_select_and_ignore_prefixes() -> None:
    code = "from deepspeed.checkpoint.constants import A\nx = state['param_shapes']\n"
    assert [f.code for f in lint(code, select=["CK1"])] == ["CK101"]
    assert [f.code for f in lint(code, ignore=["CK1"])] == ["CK301"]
    assert [f.code for f in lint(code, select=["CK"], ignore=["CK301"])] == ["CK101"]


def test_every_code_is_documented() -> None:
    docs = (pathlib.Path(__file__).parent.parent / "docs" / "lint.md").read_text(encoding="utf-8")
    for code in CODES:
        assert f"`{code}`" in docs, code


# -- fixing -------------------------------------------------------------------------------------------


def test_fix_reads_use_members_and_stores_use_value() -> None:
    source = '''\
        """A docstring."""
        from __future__ import annotations

        import os  # the first import


        def save(state, sd):
            # keep this comment
            sd['param_shapes'] = state.get('param_shapes')
            return {'param_shapes': sd['param_shapes']}
        '''
    assert fixed(source) == textwrap.dedent(
        '''\
        """A docstring."""
        from __future__ import annotations

        import os  # the first import

        from ckptkeys import ModuleKeys


        def save(state, sd):
            # keep this comment
            sd[ModuleKeys.PARAM_SHAPES.value] = state.get(ModuleKeys.PARAM_SHAPES)
            return {ModuleKeys.PARAM_SHAPES.value: sd[ModuleKeys.PARAM_SHAPES]}
        '''
    )


def test_fix_reuses_an_existing_import_and_skips_a_clash() -> None:
    assert fixed("from ckptkeys import ModuleKeys\nx = s['param_shapes']\n") == (
        "from ckptkeys import ModuleKeys\nx = s[ModuleKeys.PARAM_SHAPES]\n"
    )
    clash = "ModuleKeys = None\nx = s['param_shapes']\n"
    assert fixed(clash) == clash


def test_fix_without_imports_or_docstring_and_with_crlf() -> None:
    assert (
        fixed("x = s['param_shapes']\r\ny = 1\r\n")
        == "from ckptkeys import ModuleKeys\r\n\r\nx = s[ModuleKeys.PARAM_SHAPES]\r\ny = 1\r\n"
    )


def test_fix_inside_an_f_string_and_with_implicit_concatenation() -> None:
    source = "x = f\"{s['param_shapes']}\"\ny = s['param_' 'shapes']\n"
    assert fixed(source) == (
        'from ckptkeys import ModuleKeys\n\nx = f"{s[ModuleKeys.PARAM_SHAPES]}"\ny = s[ModuleKeys.PARAM_SHAPES]\n'
    )


def test_fix_is_idempotent_and_leaves_no_fixable_finding() -> None:
    source = "def f(s):\n    s['buffer_names'] = s.pop('param_shapes')\n    return 'module' in s\n"
    once = fixed(source)
    assert fixed(once) == once
    assert not [f for f in lint_source(once, "x.py") if f.fixable]


SAVE = """
def build(state):
    out = {'param_shapes': state['param_shapes'], 'buffer_names': []}
    out['optimizer_state_dict'] = state.get('optimizer_state_dict')
    out.setdefault('frozen_param_shapes', None)
    return out, 'buffer_names' in out, state['param_shapes'] == 1
"""


def _run(source: str) -> tuple[object, bytes]:
    namespace: dict[str, object] = {}
    exec(compile(source, "example.py", "exec"), namespace)
    result = namespace["build"]({"param_shapes": 1, "optimizer_state_dict": {}})  # type: ignore[operator]
    return result, pickle.dumps(result[0], protocol=2)


def test_fixed_code_behaves_and_pickles_the_same() -> None:
    after = fixed(SAVE)
    assert after != SAVE and "ckptkeys" in after
    before_result, before_bytes = _run(SAVE)
    after_result, after_bytes = _run(after)
    assert after_result == before_result
    assert after_bytes == before_bytes  # plain str keys in what would be saved: no enum member pickled
    assert all(type(key) is str for key in after_result[0])  # type: ignore[index]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.sampled_from(sorted({m.value for g in ckptkeys.GROUPS for m in g if "_" in m.value})),
        min_size=1,
        max_size=6,
        unique=True,
    )
)
def test_fixing_a_dict_display_never_changes_what_pickles(keys: list[str]) -> None:
    source = "def build(state):\n    return {" + ", ".join(f"{k!r}: {i}" for i, k in enumerate(keys)) + "}, 0, 0\n"
    after = fixed(source)
    assert _run(after)[1] == _run(source)[1]


# -- files and the command ----------------------------------------------------------------------------


def test_iter_python_files(tmp_path: pathlib.Path) -> None:
    # As ruff 0.17.6 walks: its default exclude (.venv, .git, ...), not every hidden folder.
    for name in ("a.py", "b.txt", "sub/c.py", ".github/d.py", ".venv/e.py", ".git/f.py", "node_modules/g.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    found = [pathlib.Path(p).relative_to(tmp_path).as_posix() for p in iter_python_files([tmp_path])]
    assert found == ["a.py", ".github/d.py", "sub/c.py"]


def cli(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ckptkeys", "lint", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONIOENCODING="utf-8"),
        check=False,
    )


def test_command(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "train.py"
    original = "def f(s):\n    return s['param_shapes']\n\n\ndef g(t):\n    return t['ds_version']\n"
    bad.write_text(original)
    clean = tmp_path / "clean.py"
    clean.write_text("x = 1\n")

    result = cli("train.py", "clean.py", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines()[0].startswith("train.py:2:14: CK101 'param_shapes' is a checkpoint key")
    assert len(result.stdout.splitlines()) == 2
    assert cli("clean.py", cwd=tmp_path).returncode == 0
    assert cli("missing.py", cwd=tmp_path).returncode == 2
    assert cli("--select", "XX9", "train.py", cwd=tmp_path).returncode == 2

    document = json.loads(cli("--json", "train.py", cwd=tmp_path).stdout)
    assert [f["code"] for f in document["findings"]] == ["CK101", "CK101"]
    assert document["findings"][0]["candidates"] == ["ModuleKeys.PARAM_SHAPES"]
    assert document["findings"][1]["fixable"] is False

    diff = cli("--diff", "train.py", cwd=tmp_path)
    assert diff.returncode == 1 and "+from ckptkeys import ModuleKeys" in diff.stdout
    assert bad.read_text() == original  # --diff writes nothing

    result = cli("--fix", "train.py", cwd=tmp_path)
    assert result.returncode == 1  # the ambiguous ds_version is left
    assert "ModuleKeys.PARAM_SHAPES" in bad.read_text()
    assert [line.split()[1] for line in result.stdout.splitlines()] == ["CK101"]
    assert result.stderr == "Found 2 problems (1 fixed in 1 file, 1 remaining).\n"
    assert cli("--ignore", "CK101", "train.py", cwd=tmp_path).returncode == 0


def test_concise_lines_summary_exit_zero_and_statistics(tmp_path: pathlib.Path) -> None:
    # Two fixable findings of one code, one unfixable (the ambiguous 'ds_version'), one CK301 (fixable).
    (tmp_path / "a.py").write_text(
        "from deepspeed.checkpoint.constants import ZERO_STAGE\n"
        "def f(s):\n    return s['param_shapes'], s['buffer_names']\n\n\ndef g(t):\n    return t['ds_version']\n"
    )
    (tmp_path / "clean.py").write_text("x = 1\n")
    result = cli("a.py", cwd=tmp_path)
    assert result.returncode == 1
    # path:line:col: CODE message, as a problem matcher for ruff reads it
    pattern = r"^[^:]+:\d+:\d+: CK\d{3} .+$"
    assert all(re.match(pattern, line) for line in result.stdout.splitlines()), result.stdout
    where = ["a.py:1:1:", "a.py:3:14:", "a.py:3:33:", "a.py:7:14:"]
    assert [line.split()[0] for line in result.stdout.splitlines()] == where
    assert result.stderr == "Found 4 problems (3 fixable with --fix).\n"

    clean = cli("clean.py", cwd=tmp_path)
    assert (clean.returncode, clean.stdout, clean.stderr) == (0, "", "All checks passed!\n")
    one = cli("--select", "CK3", "a.py", cwd=tmp_path)
    assert one.stderr == "Found 1 problem (1 fixable with --fix).\n"
    nothing = cli("--select", "CK101", "--ignore", "CK101", "clean.py", "a.py", cwd=tmp_path)
    assert nothing.stderr == "All checks passed!\n"

    zero = cli("--exit-zero", "a.py", cwd=tmp_path)
    assert (zero.returncode, zero.stdout, zero.stderr) == (0, result.stdout, result.stderr)
    assert cli("--exit-zero", "missing.py", cwd=tmp_path).returncode == 2  # usage errors are not findings
    assert cli("--exit-zero", "--diff", "a.py", cwd=tmp_path).returncode == 0

    statistics = cli("--statistics", "a.py", cwd=tmp_path)
    assert statistics.returncode == 1
    assert statistics.stdout.splitlines() == [f"3\tCK101\t[*] {CODES['CK101']}", f"1\tCK301\t[*] {CODES['CK301']}"]
    assert statistics.stderr == result.stderr
    none = cli("--statistics", "--select", "CK101", "--ignore", "CK101", "a.py", cwd=tmp_path)
    assert none.stdout == ""
    (tmp_path / "b.py").write_text("x = f'global_step{step}'\n" * 10 + "def f(s):\n    return s['param_shapes']\n")
    mixed = cli("--statistics", "b.py", cwd=tmp_path)
    assert mixed.stdout.splitlines() == [f"10\tCK203\t[ ] {CODES['CK203']}", f" 1\tCK101\t[*] {CODES['CK101']}"]
    assert cli("--statistics", "--select", "CK2", "b.py", cwd=tmp_path).stdout.splitlines() == [
        f"10\tCK203\t{CODES['CK203']}"
    ]
    # --json has its own summary: no line on stderr, and the document alone on stdout
    document = cli("--json", "a.py", cwd=tmp_path)
    assert document.stderr == "" and json.loads(document.stdout)["summary"] == {"CK101": 3, "CK301": 1}


def test_output_formats(tmp_path: pathlib.Path) -> None:
    (tmp_path / "a.py").write_text("def f(s):\n\treturn s['param_shapes'], 1\n")
    concise = cli("a.py", cwd=tmp_path)
    line = "a.py:2:11: CK101 'param_shapes' is a checkpoint key: use ModuleKeys.PARAM_SHAPES"
    assert concise.stdout == line + "\n"
    assert cli("--output-format", "concise", "a.py", cwd=tmp_path).stdout == concise.stdout

    # github: ruff's workflow command, the span's end included; no summary line (the log would show it as text)
    github = cli("--output-format", "github", "a.py", cwd=tmp_path)
    assert github.returncode == 1 and github.stderr == ""
    where = tmp_path.resolve() / "a.py"  # absolute, as ruff's: the runner reads a relative one from the repository's root
    assert github.stdout == f"::error title=ckptkeys (CK101),file={where},line=2,col=11,endLine=2,endColumn=25::{line}\n"

    # full: the source line (a tab as 4 spaces, as ruff shows it) and carets under the span
    full = cli("--output-format", "full", "a.py", cwd=tmp_path)
    excerpt = [line, "  |", "2 |     return s['param_shapes'], 1", "  |              ^^^^^^^^^^^^^^"]
    assert full.stdout.splitlines()[:4] == excerpt
    assert full.stdout.splitlines()[4].startswith("  = why: ") and full.stderr == concise.stderr

    as_json = cli("--output-format", "json", "a.py", cwd=tmp_path)
    assert as_json.stdout == cli("--json", "a.py", cwd=tmp_path).stdout and as_json.stderr == ""
    (finding,) = json.loads(as_json.stdout)["findings"]
    assert (finding["line"], finding["col"], finding["end_line"], finding["end_col"]) == (2, 11, 2, 25)
    assert cli("--output-format", "sarf", "a.py", cwd=tmp_path).returncode == 2


def test_sarif_is_valid_against_the_official_schema(tmp_path: pathlib.Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")  # a test dependency; the schema is OASIS's, in tests/data
    schema = json.loads((pathlib.Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text())
    (tmp_path / "a b.py").write_text("from deepspeed.checkpoint.constants import A\nx = s['param_shapes']\n")
    (tmp_path / "bad.py").write_bytes(b"x = '\xff'\n")
    result = cli("--output-format", "sarif", ".", cwd=tmp_path)
    assert result.returncode == 1 and result.stderr == ""
    document = json.loads(result.stdout)
    jsonschema.Draft4Validator(schema).validate(document)  # the schema is draft-04
    with pytest.raises(jsonschema.ValidationError):  # the check can fail: a wrong version is refused
        jsonschema.Draft4Validator(schema).validate({**document, "version": "2.0.0"})
    (run,) = document["runs"]
    assert [(r["ruleId"], r["locations"][0]["physicalLocation"]["region"]["startLine"]) for r in run["results"]] == [
        ("CK301", 1),
        ("CK101", 2),
        ("CK001", 1),
    ]
    assert run["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == (
        (tmp_path / "a b.py").as_uri()
    )
    assert [rule["id"] for rule in run["tool"]["driver"]["rules"]] == list(CODES)
    assert all(run["tool"]["driver"]["rules"][r["ruleIndex"]]["id"] == r["ruleId"] for r in run["results"])
    # an empty run is valid too
    (tmp_path / "a b.py").unlink()
    (tmp_path / "bad.py").unlink()
    empty = json.loads(cli("--output-format", "sarif", ".", cwd=tmp_path).stdout)
    jsonschema.Draft4Validator(schema).validate(empty)
    assert empty["runs"][0]["results"] == []


def test_github_annotations_escape_what_would_end_the_command() -> None:
    from ckptkeys._cli._lint import github_annotation

    finding = Finding("/odd,name:%.py", 3, 1, "CK001", "cannot be read\n::error file=forged.py::x\r")
    assert github_annotation(finding) == (
        "::error title=ckptkeys (CK001),file=/odd%2Cname%3A%25.py,line=3,col=1,endLine=3,endColumn=1::"
        "/odd,name:%25.py:3:1: CK001 cannot be read%0A::error file=forged.py::x%0D"
    )


def test_pre_commit_hook_definition() -> None:
    text = (pathlib.Path(__file__).parent.parent / ".pre-commit-hooks.yaml").read_text(encoding="utf-8")
    assert "id: ckptkeys-lint" in text and "entry: ckptkeys lint" in text and "types: [python]" in text
    # each entry runs as pre-commit runs it: the entry, then the staged file names
    entries = [line.split("entry: ", 1)[1] for line in text.splitlines() if line.strip().startswith("entry: ")]
    assert entries == ["ckptkeys lint --force-exclude", "ckptkeys lint --fix --force-exclude"]


def test_form_feeds_do_not_shift_lines() -> None:
    source = "x = 1\x0c\ny = s['param_shapes']\n"
    (finding,) = lint_source(source, "ff.py")
    assert (finding.line, finding.col) == (2, 7)
    assert (
        fix_source(source, [finding])[0]
        == "from ckptkeys import ModuleKeys\n\nx = 1\x0c\ny = s[ModuleKeys.PARAM_SHAPES]\n"
    )


def test_encodings_are_kept_and_unreadable_files_do_not_stop_the_run(tmp_path: pathlib.Path) -> None:
    latin = tmp_path / "latin.py"
    latin.write_bytes("# -*- coding: latin-1 -*-\nname = 'café'\nx = s['param_shapes']\n".encode("latin-1"))
    bom = tmp_path / "bom.py"
    bom.write_bytes(b"\xef\xbb\xbfx = s['param_shapes']\r\n")
    broken = tmp_path / "broken.py"
    broken.write_bytes(b"x = '\xff'\n")  # not UTF-8, no declaration
    result = cli("--fix", ".", cwd=tmp_path)
    assert result.returncode == 1
    assert [line.split()[1] for line in result.stdout.splitlines()] == ["CK001"]
    assert result.stdout.startswith("broken.py:1:1: CK001 cannot be read")
    assert latin.read_bytes().decode("latin-1").endswith("name = 'café'\nx = s[ModuleKeys.PARAM_SHAPES]\n")
    assert bom.read_bytes() == b"\xef\xbb\xbffrom ckptkeys import ModuleKeys\r\n\r\nx = s[ModuleKeys.PARAM_SHAPES]\r\n"
    assert cli("--ignore", "CK001", ".", cwd=tmp_path).returncode == 0


def test_the_import_goes_below_a_shebang_coding_line_and_comments() -> None:
    source = (
        "#!/usr/bin/env python\n# -*- coding: utf-8 -*-\n# a comment\n\n\n"
        "@decorator\ndef f(s):\n    return s['param_shapes']\n"
    )
    assert fixed(source) == (
        "#!/usr/bin/env python\n# -*- coding: utf-8 -*-\n# a comment\n\n\nfrom ckptkeys import ModuleKeys\n\n"
        "@decorator\ndef f(s):\n    return s[ModuleKeys.PARAM_SHAPES]\n"
    )
    only_docstring = '"""Doc."""\nx: int\n'
    assert lint(only_docstring) == []


# -- suppression: # noqa as ruff reads it ------------------------------------------------------------


@pytest.mark.parametrize(
    ("comment", "codes"),
    [
        ("# noqa", frozenset()),
        ("# NOQA", frozenset()),
        ("#noqa", frozenset()),
        ("# NoQA   a reason", frozenset()),
        ("# noqa# another comment", frozenset()),
        ("# type: ignore # noqa", frozenset()),
        ("# noqa: CK101", frozenset({"CK101"})),
        ("# noqa:CK101,CK102", frozenset({"CK101", "CK102"})),
        ("# noqa: CK101, CK102", frozenset({"CK101", "CK102"})),
        ("# noqa: CK101 CK102 the keys of a config, not a checkpoint", frozenset({"CK101", "CK102"})),
        ("# noqa : CK101", frozenset({"CK101"})),
        ("# noqa: CK101,,CK102", frozenset({"CK101", "CK102"})),
        ("# noqa: CK101CK102", frozenset({"CK101", "CK102"})),
        ("# noqa: CK101#CK102", frozenset({"CK101"})),
        ("# a comment", None),
        ("# noqa: ck101", None),  # codes are upper case: none listed, so it silences nothing
        ("# noqa:", None),
        ("# noqa; CK101", None),
        ("#noqaCK101", None),
        ("# noqa: CK101x", None),
        ("# noqa: CK101CKx", None),
        ("# not noqa", None),
    ],
)
def test_noqa_directives_read_as_ruff_reads_them(comment: str, codes: frozenset[str] | None) -> None:
    assert noqa_codes(comment) == codes


def test_noqa_silences_on_its_line() -> None:
    line = "x = state['param_shapes']; y = state.get('buffer_names')"
    assert [f.code for f in lint(line + "\n")] == ["CK101", "CK102"]
    assert lint(line + "  # noqa\n") == []
    assert lint(line + "  # NOQA  these are a config's keys\n") == []
    assert [f.code for f in lint(line + "  # noqa: CK101\n")] == ["CK102"]
    assert lint(line + "  # noqa: CK101, CK102\n") == []
    assert lint(line + "  # noqa: CK1\n") != []  # a prefix is no code
    assert [f.code for f in lint(line + "  # noqa: ck101\n")] == ["CK101", "CK102"]  # invalid: nothing silenced
    # the comment of another line silences nothing here
    assert [f.code for f in lint("# noqa\n" + line + "\n")] == ["CK101", "CK102"]
    # the existing comment works as before, and beside a noqa
    assert lint(line + "  # ckptkeys: ignore\n") == []
    assert lint(line + "  # noqa: CK101  # ckptkeys: ignore[CK102]\n") == []


def test_noqa_inside_a_string_is_no_comment() -> None:
    assert [f.code for f in lint("x = state['param_shapes'], '# noqa'\n")] == ["CK101"]
    assert [f.code for f in lint("x = state['param_shapes'], '# ckptkeys: ignore'\n")] == ["CK101"]
    assert [f.code for f in lint('x = state["param_shapes"], f"{y} # noqa"\n')] == ["CK101"]
    text = 'x = state["param_shapes"], """\n# noqa\n"""\n'
    assert [f.code for f in lint(text)] == ["CK101"]


def test_noqa_on_the_last_line_of_a_string_spanning_lines() -> None:
    # as ruff: a comment can only follow the string's end, so that line silences what is inside it
    # (a backslash at the end of a line inside the string continues it: the values have no newline)
    for source, code in [
        ('name = """zero_pp_rank_0_mp_rank_00_optim_states.pt\\\n"""  # noqa: CK202\n', "CK202"),
        ('tag = f"""global_step{step}\\\n"""  # noqa: CK203\n', "CK203"),
    ]:
        bare = source.replace(f"  # noqa: {code}", "")
        assert [(f.line, f.code) for f in lint(bare)] == [(1, code)]
        assert lint(source) == []


def test_noqa_on_the_command_line(tmp_path: pathlib.Path) -> None:
    (tmp_path / "a.py").write_text("x = s['param_shapes']  # noqa: CK101\ny = s['param_shapes']\n")
    result = cli("a.py", cwd=tmp_path)
    assert result.returncode == 1 and [line.split()[0] for line in result.stdout.splitlines()] == ["a.py:2:7:"]
    fixed_run = cli("--fix", "a.py", cwd=tmp_path)
    assert fixed_run.returncode == 0
    assert "x = s['param_shapes']  # noqa: CK101\n" in (tmp_path / "a.py").read_text()  # a silenced one is not fixed


# -- the file-level exemption: # ckptkeys: noqa as ruff reads # ruff: noqa ---------------------------------

# CK101 on line 3, CK203 on line 4.
BODY = "def f(s):\n    return s['param_shapes']\ntag = f'global_step{step}'\n"


@pytest.mark.parametrize(
    ("directive", "left"),
    [
        ("# ckptkeys: noqa", set()),
        ("#ckptkeys:noqa", set()),
        ("#  ckptkeys :  noqa", set()),
        ("# ckptkeys: NOQA", set()),  # noqa in any case, as ruff
        ("# ckptkeys: noqa the whole file is a fixture", set()),
        ("# ckptkeys: noqa: CK101", {"CK203"}),
        ("# ckptkeys: noqa:CK101,CK203", set()),
        ("# ckptkeys: noqa: CK101 CK203", set()),
        ("# ckptkeys: noqa: CK101 keys of a config", {"CK203"}),
        ("# type: ignore # ckptkeys: noqa", set()),
        ("    # ckptkeys: noqa", set()),  # indented: still a line of its own
        # Silence nothing, as ruff's `# ruff: noqa` of the same shape:
        ("x = 1  # ckptkeys: noqa", {"CK101", "CK203"}),  # after code: ruff warns and ignores it
        ("# CKPTKEYS: noqa", {"CK101", "CK203"}),  # the tool's name in lower case only
        ("# ckptkeys: noqa: ck101", {"CK101", "CK203"}),  # lower-case code: invalid
        ("# ckptkeys: noqa: CK1", {"CK101", "CK203"}),  # whole codes, not prefixes
        ("# ckptkeys: noqa; CK101", {"CK101", "CK203"}),
        ("# ckptkeys: noqaCK101", {"CK101", "CK203"}),
        ("# ckptkeys: noqa:", {"CK101", "CK203"}),
        ("s = '''\n# ckptkeys: noqa\n'''", {"CK101", "CK203"}),  # text in a string, not a comment
    ],
)
def test_file_level_noqa(directive: str, left: set[str]) -> None:
    source = f"{directive}\n{BODY}"
    assert {f.code for f in lint_source(source)} == left
    assert {f.code for f in lint_source(f"{BODY}{directive}\n")} == left  # anywhere in the file


def test_file_level_noqa_directives_add_up_and_a_silenced_finding_is_not_fixed() -> None:
    source = f"# ckptkeys: noqa: CK101\n# ckptkeys: noqa: CK203\n{BODY}"
    assert lint_source(source) == []
    assert fix_source(source, lint_source(source)) == (source, [])
    only = f"# ckptkeys: noqa: CK203\n{BODY}"
    new, applied = fix_source(only, lint_source(only))
    assert [f.code for f in applied] == ["CK101"]


def test_quiet_and_silent_as_ruffs(tmp_path: pathlib.Path) -> None:
    """ruff 0.17.6, measured: -q prints the findings and no summary; -s prints nothing (but
    --statistics and --diff), the exit status unchanged; the two together are a usage error."""
    (tmp_path / "train.py").write_text("def f(s):\n    return s['param_shapes']\n")
    loud = cli("train.py", cwd=tmp_path)
    assert loud.returncode == 1 and loud.stdout and loud.stderr.startswith("Found 1 problem")
    quiet = cli("-q", "train.py", cwd=tmp_path)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (1, loud.stdout, "")
    for form in ("concise", "full", "json", "github", "sarif"):
        silent = cli("--silent", "--output-format", form, "train.py", cwd=tmp_path)
        assert (silent.returncode, silent.stdout, silent.stderr) == (1, "", ""), form
    statistics = cli("-s", "--statistics", "train.py", cwd=tmp_path)
    assert statistics.returncode == 1 and statistics.stdout.split("\t")[:2] == ["1", "CK101"]
    diff = cli("-s", "--diff", "train.py", cwd=tmp_path)
    assert diff.returncode == 1 and "+++ train.py" in diff.stdout
    both = cli("-q", "-s", "train.py", cwd=tmp_path)
    assert both.returncode == 2 and "not allowed with" in both.stderr
