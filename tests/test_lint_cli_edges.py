"""``ckptkeys lint`` where ruff's users push it: closed streams, files that cannot be written, odd
characters in the source and in globs, noqa where ruff reads it, and the options ruff combines or
refuses. Each case was measured against ruff 0.17.6 on the same input (noted where it differs)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from ckptkeys._cli import _lint
from ckptkeys._cli._main import main

SRC = str(pathlib.Path(__file__).resolve().parent.parent / "src")
# Two findings: CK202 (line 2, not fixable) and CK101 (line 3, fixable).
SOURCE = "import torch\nsd = torch.load('mp_rank_00_model_states.pt')\nx = sd['param_shapes']\n"


def child(
    *args: str, cwd: pathlib.Path, data: bytes | None = None, close: tuple[int, ...] = ()
) -> subprocess.CompletedProcess[bytes]:
    """``python -m ckptkeys lint ARGS``, the descriptors ``close`` closed as ``<&-``/``>&-`` do."""

    def closing() -> None:
        for fd in close:
            os.close(fd)

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]), PYTHONIOENCODING="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "ckptkeys", "lint", *args],
        cwd=cwd,
        env=env,
        input=data,
        stdin=None if data is not None or 0 in close else subprocess.DEVNULL,
        capture_output=True,
        check=False,
        preexec_fn=closing,
    )


# -- closed standard streams, files that cannot be written ----------------------------------------


def test_a_closed_standard_input_is_one_unreadable_file(tmp_path: pathlib.Path) -> None:
    # `ckptkeys lint - <&-` raised AttributeError (sys.stdin is None); ruff 0.17.6 lints an empty text
    # there ("All checks passed!"): here it is one CK001, as any file that cannot be read.
    done = child("-", "--isolated", cwd=tmp_path, close=(0,))
    assert done.returncode == 1, done.stderr
    assert done.stdout.decode() == "-:1:1: CK001 cannot be read: standard input is closed\n"
    fixing = child("--fix", "-", "--isolated", cwd=tmp_path, close=(0,))
    assert (fixing.returncode, fixing.stdout) == (1, b"")
    assert fixing.stderr.decode().startswith("-:1:1: CK001 cannot be read: standard input is closed\n")


def test_fix_of_standard_input_with_standard_output_closed_is_74(tmp_path: pathlib.Path) -> None:
    # `ckptkeys lint --fix - >&-` raised AttributeError (no .buffer on the closed-output stand-in)
    done = child("--fix", "-", "--isolated", cwd=tmp_path, data=SOURCE.encode(), close=(1,))
    assert done.returncode == 74, done.stderr
    assert done.stderr.decode().splitlines()[-1] == "ckptkeys lint: cannot write to standard output: it is closed"


def test_fix_goes_on_past_a_file_it_cannot_write(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A file --fix cannot write (read-only, a read-only folder: root writes both, so the refusal is
    # simulated) ended the run with a PermissionError traceback, the files after it not linted.
    for name in ("a.py", "b.py"):
        (tmp_path / name).write_text(SOURCE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    rewrite = _lint._rewrite

    def refuse(path: str, data: bytes) -> None:
        if path == "a.py":
            raise PermissionError(13, "Permission denied", path)
        rewrite(path, data)

    monkeypatch.setattr(_lint, "_rewrite", refuse)
    status = main(["lint", "--fix", "--isolated", "a.py", "b.py"])
    out, err = capsys.readouterr()
    assert status == 1
    assert [line.split(": ")[0:2] for line in out.splitlines()] == [
        ["a.py:1:1", "CK001 cannot be written"],
        ["a.py:2:17", "CK202 'mp_rank_00_model_states.pt' is a checkpoint file name"],
        ["a.py:3:8", "CK101 'param_shapes' is a checkpoint key"],
        ["b.py:2:17", "CK202 'mp_rank_00_model_states.pt' is a checkpoint file name"],
    ]
    assert out.splitlines()[0] == "a.py:1:1: CK001 cannot be written: Permission denied"
    assert (tmp_path / "a.py").read_text(encoding="utf-8") == SOURCE
    assert "ModuleKeys.PARAM_SHAPES" in (tmp_path / "b.py").read_text(encoding="utf-8")
    assert err == "Found 5 problems (1 fixed in 1 file, 4 remaining).\n"


# -- --output-format full: the source line as a terminal shows it ----------------------------------


def test_full_shows_the_line_as_ruff_does_and_the_carets_under_the_span(tmp_path: pathlib.Path) -> None:
    # Measured with ruff 0.17.6 --output-format full on the same lines (E711 after the same prefixes):
    # a tab is 4 spaces; a control character its Control Picture (ESC U+241B, form feed U+240C,
    # DEL U+2421), so that a source line cannot drive the terminal; a bidi override U+FFFD; and the
    # carets are placed by display width: East Asian wide characters 2 columns, combining and
    # zero-width ones none. Before, each character was one column and control characters were
    # written raw (an ESC sequence in a string literal reached the terminal).
    lines = [
        "x = 1;\tz = sd['param_shapes']",
        "y = '\x1b[31m'; z = sd['param_shapes']",
        "\x0cu = sd['param_shapes']",
        "y = '日本'; z = sd['param_shapes']",
        "w = 'e\u0301\u200b\x7f'; v = sd['param_shapes']",
        "w = '\u202e'; v = sd['param_shapes']",
    ]
    (tmp_path / "a.py").write_text("import torch\nsd = torch.load(p)\n" + "\n".join(lines) + "\n", encoding="utf-8")
    done = child("--output-format", "full", "--isolated", "a.py", cwd=tmp_path)
    assert done.returncode == 1
    # (split at \n only: str.splitlines would split at the form feed the line shows)
    shown = [line for line in done.stdout.decode().split("\n") if line[:1].isdigit() or line.startswith("  | ")]
    carets = "^" * 14  # the width of 'param_shapes' with its quotes
    assert shown == [
        "3 | x = 1;    z = sd['param_shapes']",
        f"  | {' ' * 17}{carets}",
        "4 | y = '\u241b[31m'; z = sd['param_shapes']",
        f"  | {' ' * 20}{carets}",
        "5 | \u240cu = sd['param_shapes']",
        f"  | {' ' * 8}{carets}",
        "6 | y = '日本'; z = sd['param_shapes']",
        f"  | {' ' * 19}{carets}",
        "7 | w = 'e\u0301\u200b\u2421'; v = sd['param_shapes']",
        f"  | {' ' * 17}{carets}",
        "8 | w = '\ufffd'; v = sd['param_shapes']",
        f"  | {' ' * 16}{carets}",
    ]


# -- globs: exclude and per-file-ignores read as ruff's globset reads them -------------------------

GLOB_FILES = ("a/b/c.py", "x.py", "tests/test_a.py", "a/tests/t.py", "a/c.py")


@pytest.mark.parametrize(
    ("pattern", "ignored"),
    [  # the files each per-file-ignores pattern silences, as ruff 0.17.6 silences them (measured)
        ("tests/*", {"tests/test_a.py"}),
        ("**/tests/*", {"tests/test_a.py", "a/tests/t.py"}),  # **/ matches no folder too (was: a/tests only)
        ("a/**/c.py", {"a/b/c.py", "a/c.py"}),  # /**/ too (was: a/b/c.py only)
        ("{a,tests}/*", {"a/b/c.py", "tests/test_a.py", "a/tests/t.py", "a/c.py"}),  # alternation (was: none)
        ("{a/{b,x},x.py}/*", {"a/b/c.py"}),
        ("a/{b/c,c}.py", {"a/b/c.py", "a/c.py"}),
        ("!{a,x.py}", {"a/b/c.py", "tests/test_a.py", "a/tests/t.py", "a/c.py"}),
        ("\\a/c.py", {"a/c.py"}),  # a backslash escapes (was: a literal backslash)
        ("a/*.py", {"a/b/c.py", "a/tests/t.py", "a/c.py"}),  # * crosses /
        ("*/c.py", {"a/b/c.py", "a/c.py"}),
        ("c.py", {"a/b/c.py", "a/c.py"}),  # the file's name alone
        ("./a/*", {"a/b/c.py", "a/tests/t.py", "a/c.py"}),
        ("te?ts/*", {"tests/test_a.py"}),
        ("[a-c]/c.py", {"a/c.py"}),
        ("*/[]t]*/*", {"a/tests/t.py"}),
        ("[!x].py", {"a/b/c.py", "a/tests/t.py", "a/c.py"}),
        ("a", set()),
        ("A/*", set()),
        ("b/c.py", set()),
    ],
)
def test_per_file_ignores_globs_as_ruff_matches_them(
    pattern: str, ignored: set[str], tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    for name in GLOB_FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(SOURCE, encoding="utf-8")
    escaped = pattern.replace("\\", "\\\\")
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.ckptkeys.lint]\nper-file-ignores = {{"{escaped}" = ["CK1"]}}\n', encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    assert main(["lint", "."]) == 1
    with_key = {line.split(":")[0] for line in capsys.readouterr().out.splitlines() if " CK101 " in line}
    assert set(GLOB_FILES) - with_key == ignored


@pytest.mark.parametrize(
    ("pattern", "why"),
    [  # ruff 0.17.6 refuses each ("invalid glob", exit 2); they silently matched nothing here
        ("[", "unclosed character class; missing ']'"),
        ("[]", "unclosed character class; missing ']'"),
        ("[!]", "unclosed character class; missing ']'"),
        ("{a", "unclosed alternate group; missing '}'"),
        ("}", "unopened alternate group; missing '{'"),
        ("a\\", "dangling '\\'"),
    ],
)
def test_a_pattern_that_is_no_glob_is_a_usage_error(
    pattern: str, why: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    (tmp_path / "a.py").write_text(SOURCE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    escaped = pattern.replace("\\", "\\\\")
    for key in ("exclude", "extend-exclude", "per-file-ignores"):
        value = f'{{"!{escaped}" = ["CK1"]}}' if key == "per-file-ignores" else f'["{escaped}"]'
        (tmp_path / "pyproject.toml").write_text(f"[tool.ckptkeys.lint]\n{key} = {value}\n", encoding="utf-8")
        assert main(["lint", "."]) == 2
        err = capsys.readouterr().err
        assert f"[tool.ckptkeys.lint] {key}: {pattern!r}: not a glob: {why}" in err, err
    for option in ("--exclude", "--extend-exclude"):
        assert main(["lint", "--isolated", option, pattern, "."]) == 2
        assert f"{option} {pattern!r}: not a glob: {why}" in capsys.readouterr().err


# -- noqa where ruff reads it ----------------------------------------------------------------------

HEAD = "import torch\nsd = torch.load(p)\n"


@pytest.mark.parametrize(
    ("body", "silenced"),
    [  # ruff 0.17.6 on the same layouts (F821 on undefined_x where the key is here), measured
        ("z = sd['param_shapes'] + \\\n    1  # noqa\n", True),  # backslash-joined: the last line's comment
        ("z = sd['param_shapes'] + \\\n    1 + \\\n    2  # noqa: CK101\n", True),
        ("z = 1 + \\\n    sd['param_shapes']  # noqa\n", True),
        ("z = '''\n''' + sd['param_shapes'] + \\\n  1  # noqa\n", True),  # a string spanning lines, then a backslash
        ("z = (sd['param_shapes'] +\n    1)  # noqa\n", False),  # brackets: the finding's own line only
        ("z = sd['param_shapes'] + 1  # a comment \\\ny = 2  # noqa\n", False),  # a backslash in a comment joins nothing
        ("z = (sd['param_shapes'], '\\\n')  # noqa\n", True),  # a string joined by a backslash: its last line
        ("# flake8: noqa\nz = sd['param_shapes']\n", True),  # ruff reads flake8's file-level directive as its own
        ("#flake8 : noqa: CK101\nz = sd['param_shapes']\n", True),
        ("# flake8: noqa: F401\nz = sd['param_shapes']\n", False),
        ("# FLAKE8: NOQA\nz = sd['param_shapes']\n", False),
        ("z = 1  # flake8: noqa\ny = sd['param_shapes']\n", False),  # after code: no file-level directive
    ],
)
def test_noqa_on_joined_lines_and_flake8s_file_directive(body: str, silenced: bool) -> None:
    from ckptkeys.lint import lint_source

    codes = [f.code for f in lint_source(HEAD + body, "k.py")]
    assert ("CK101" not in codes) == silenced, codes


@pytest.mark.parametrize("comment", ["# noqa", "# noqa: CK001", "# ckptkeys: ignore"])
def test_a_file_that_does_not_parse_is_reported_whatever_noqa_says(comment: str) -> None:
    # As ruff 0.17.6 reports invalid-syntax through `# noqa` and `# ruff: noqa` (measured); a file
    # left out on purpose is left out with exclude or per-file-ignores. Both silenced CK001 here.
    from ckptkeys.lint import lint_source

    assert [f.code for f in lint_source(f"x = sd['param_shapes']  {comment}\ndef (:\n", "k.py")] == ["CK001"]
    assert [f.code for f in lint_source(f"# ckptkeys: noqa\nx = sd['param_shapes']  {comment}\ndef (:\n", "k.py")] == ["CK001"]


# -- options ruff combines, refuses, or defaults ---------------------------------------------------


def test_statistics_as_ruff_combines_them(tmp_path: pathlib.Path) -> None:
    (tmp_path / "a.py").write_text(SOURCE, encoding="utf-8")
    # --statistics --output-format json: ruff 0.17.6 writes its statistics as JSON (code, name,
    # count, fixable, fixable_count), no summary; the findings document was written instead here.
    done = child("--statistics", "--output-format", "json", "--isolated", "a.py", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (1, b"")
    assert json.loads(done.stdout) == [
        {"code": "CK101", "name": "checkpoint key in a subscript: d['key']", "count": 1, "fixable": True,
         "fixable_count": 1},
        {"code": "CK202", "name": "literal checkpoint file name (or the 'latest' file as a path)", "count": 1,
         "fixable": False, "fixable_count": 0},
    ]  # fmt: skip
    assert child("--statistics", "--json", "--isolated", "a.py", cwd=tmp_path).stdout == done.stdout
    # ruff refuses --statistics with --diff (a usage error) and with github or sarif ("Unsupported
    # serialization format for statistics", 2); both printed something else and exited 1 here.
    for refused in (["--diff"], ["--output-format", "github"], ["--output-format", "sarif"]):
        done = child("--statistics", *refused, "--isolated", "a.py", cwd=tmp_path)
        assert (done.returncode, done.stdout) == (2, b""), refused
        assert done.stderr.decode().startswith("ckptkeys lint: --statistics ")
    assert "ModuleKeys" not in (tmp_path / "a.py").read_text(encoding="utf-8")


def test_no_path_is_the_current_folder_and_stdin_filename_alone_reads_standard_input(tmp_path: pathlib.Path) -> None:
    # As ruff 0.17.6: `ruff check` lints `.`, `ruff check --stdin-filename x.py` reads standard
    # input (both were usage errors here: PATH was required).
    (tmp_path / "a.py").write_text(SOURCE, encoding="utf-8")
    bare = child("--isolated", cwd=tmp_path)
    assert bare.returncode == 1
    assert [line.split(" ")[0] for line in bare.stdout.decode().splitlines()] == ["a.py:2:17:", "a.py:3:8:"]
    named = child("--isolated", "--stdin-filename", "pkg/z.py", cwd=tmp_path, data=SOURCE.encode())
    assert [line.split(" ")[0] for line in named.stdout.decode().splitlines()] == ["pkg/z.py:2:17:", "pkg/z.py:3:8:"]
    # ruff reads standard input and ignores the paths, with a warning; refused here, as before
    mixed = child("--isolated", "--stdin-filename", "z.py", "a.py", cwd=tmp_path, data=SOURCE.encode())
    assert mixed.returncode == 2


def test_a_list_of_the_wrong_type_is_shown_with_a_value_of_the_lint_table(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # It said such as ["missing-"], a validate problem code, for [tool.ckptkeys.lint] too.
    (tmp_path / "pyproject.toml").write_text('[tool.ckptkeys.lint]\nselect = "CK1"\n', encoding="utf-8")
    (tmp_path / "a.py").write_text(SOURCE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["lint", "a.py"]) == 2
    assert """[tool.ckptkeys.lint] select: must be a list of strings, such as ["CK1"], not 'CK1'""" in capsys.readouterr().err


def test_fix_of_an_excluded_standard_input_gives_the_text_back(tmp_path: pathlib.Path) -> None:
    # `lint --fix --force-exclude --stdin-filename build/x.py -` (an editor fixing the buffer of an
    # excluded file) wrote nothing: the tool reading stdout replaced the buffer with an empty
    # text. ruff 0.17.6 writes the text back unchanged (measured), and so does this now.
    (tmp_path / "pyproject.toml").write_text('[tool.ckptkeys.lint]\nexclude = ["build"]\n', encoding="utf-8")
    data = SOURCE.replace("\n", "\r\n").encode()
    done = child("--fix", "--force-exclude", "--stdin-filename", "build/x.py", "-", cwd=tmp_path, data=data)
    assert (done.returncode, done.stdout) == (0, data)
    shown = child("--force-exclude", "--stdin-filename", "build/x.py", "-", cwd=tmp_path, data=data)
    assert (shown.returncode, shown.stdout) == (0, b"")


def test_fix_of_standard_input_gives_back_the_bytes_where_nothing_is_fixed(tmp_path: pathlib.Path) -> None:
    # An ISO-2022-JP text with a redundant escape (ESC ( B where ASCII is on already): decoded and
    # encoded again it lost the escape, so `lint --fix -` changed a text it fixed nothing in.
    data = b'# coding: iso2022_jp\nx = "\x1b(Babc"\n'
    done = child("--fix", "--isolated", "-", cwd=tmp_path, data=data)
    assert (done.returncode, done.stdout) == (0, data)
    # where something is fixed, the text is in its own encoding still
    data = ("# coding: iso2022_jp\nname = '日本'\n" + SOURCE).encode("iso2022_jp")
    fixed = child("--fix", "--isolated", "-", cwd=tmp_path, data=data)
    assert fixed.returncode == 1
    text = fixed.stdout.decode("iso2022_jp")
    assert "from ckptkeys import ModuleKeys\n" in text and "name = '日本'\n" in text
    assert text.endswith("x = sd[ModuleKeys.PARAM_SHAPES]\n")


# -- configuration found as ruff finds it: the closest pyproject.toml above each file ---------------


@pytest.fixture
def nested(tmp_path: pathlib.Path) -> pathlib.Path:
    """ruff's hierarchy, measured with ruff 0.17.6 on the same tree ([tool.ruff.lint] in place of
    [tool.ckptkeys.lint]): `ruff check proj` from the folder above, and `ruff check deep ../tests
    ../other` from proj/sub, both read proj's table for top.py, sub/deep/m.py and tests/t.py
    (sub's pyproject.toml has no table: skipped), and other's for other/o.py."""
    project = tmp_path / "proj"
    for name in ("top.py", "sub/deep/m.py", "tests/t.py", "other/o.py"):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(SOURCE, encoding="utf-8")
    (project / "pyproject.toml").write_text(
        '[tool.ckptkeys.lint]\nper-file-ignores = {"sub/**/m.py" = ["CK1"], "t.py" = ["CK2"]}\n', encoding="utf-8"
    )
    (project / "sub" / "pyproject.toml").write_text('[project]\nname = "x"\n', encoding="utf-8")
    (project / "other" / "pyproject.toml").write_text('[tool.ckptkeys.lint]\nselect = ["CK2"]\n', encoding="utf-8")
    return tmp_path


def test_each_file_under_the_closest_table_above_it(nested: pathlib.Path) -> None:
    def found(done: subprocess.CompletedProcess[bytes]) -> set[tuple[str, str]]:
        return {(line.split(":")[0], line.split(" ")[1]) for line in done.stdout.decode().splitlines()}

    # the table of proj was read only from inside proj (from above it: none, every code everywhere)
    assert found(child("proj", cwd=nested)) == {
        ("proj/top.py", "CK202"), ("proj/top.py", "CK101"), ("proj/sub/deep/m.py", "CK202"),
        ("proj/tests/t.py", "CK101"), ("proj/other/o.py", "CK202"),
    }  # fmt: skip
    # other's table was never read from proj/sub (its CK101 was reported)
    assert found(child("deep", "../tests", "../other", cwd=nested / "proj" / "sub")) == {
        ("deep/m.py", "CK202"), ("../tests/t.py", "CK101"), ("../other/o.py", "CK202"),
    }  # fmt: skip
    # --isolated and --config: one setting for every file, as in ruff
    assert len(found(child("--isolated", "proj", cwd=nested))) == 8
    config = child("--config", "proj/other/pyproject.toml", "proj", cwd=nested)
    assert {code for _, code in found(config)} == {"CK202"} and len(found(config)) == 4


def test_a_table_that_cannot_be_used_below_is_a_usage_error_before_any_rewrite(nested: pathlib.Path) -> None:
    (nested / "proj" / "other" / "pyproject.toml").write_text('[tool.ckptkeys.lint]\nselect = "CK2"\n')
    done = child("--fix", "proj", cwd=nested)
    assert (done.returncode, done.stdout) == (2, b"")
    assert b"other/pyproject.toml: [tool.ckptkeys.lint] select: must be a list of strings" in done.stderr
    assert all((nested / "proj" / n).read_text() == SOURCE for n in ("top.py", "sub/deep/m.py", "tests/t.py"))


def test_the_patterns_of_a_config_named_with_config_are_relative_to_the_current_folder(tmp_path: pathlib.Path) -> None:
    # ruff 0.17.6 (measured, and as its docs say): with --config, "src/*" in conf/pyproject.toml
    # matches src/x.py of the current folder ("../src/*" does not). Here it was taken from conf/.
    (tmp_path / "src").mkdir()
    (tmp_path / "conf").mkdir()
    (tmp_path / "src" / "x.py").write_text(SOURCE, encoding="utf-8")
    for pattern, left in (("src/*", 0), ("../src/*", 2)):
        (tmp_path / "conf" / "pyproject.toml").write_text(
            f'[tool.ckptkeys.lint]\nper-file-ignores = {{"{pattern}" = ["CK"]}}\n', encoding="utf-8"
        )
        done = child("--config", "conf/pyproject.toml", ".", cwd=tmp_path)
        assert len(done.stdout.splitlines()) == left, (pattern, done.stdout)


def test_all_selects_every_code_as_ruffs_all(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `--select ALL`, `ignore = ["ALL"]`, `"tests/*" = ["ALL"]`: ruff's selector of every rule, the
    # least specific (ruff 0.17.6: --ignore ALL --extend-select F401 reports F401). An unknown code here.
    (tmp_path / "tests").mkdir()
    (tmp_path / "a.py").write_text(SOURCE, encoding="utf-8")
    (tmp_path / "tests" / "t.py").write_text(SOURCE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)

    def codes(*args: str) -> list[str]:
        status = main(["lint", *args])
        found = [line.split(" ")[1] for line in capsys.readouterr().out.splitlines()]
        assert status == (1 if found else 0)
        return found

    assert codes("--isolated", "--select", "ALL", "a.py") == ["CK202", "CK101"]
    assert codes("--isolated", "--select", "ALL", "--ignore", "CK1", "a.py") == ["CK202"]
    assert codes("--isolated", "--ignore", "ALL", "--extend-select", "CK101", "a.py") == ["CK101"]
    (tmp_path / "pyproject.toml").write_text('[tool.ckptkeys.lint]\nper-file-ignores = {"tests/*" = ["ALL"]}\n')
    assert codes(".") == ["CK202", "CK101"]


def test_findings_in_the_order_of_their_paths_as_ruff_writes_them(tmp_path: pathlib.Path) -> None:
    # ruff 0.17.6 on the same tree and arguments (`b.py a .`): A.py, a.b/y.py, a.py, a/x.py, b.py,
    # by path as text. They came in the order given and walked (b.py, a/x.py, A.py, ...).
    for name in ("b.py", "a/x.py", "a.py", "a.b/y.py", "A.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(SOURCE, encoding="utf-8")
    done = child("--isolated", "--select", "CK101", "b.py", "a", ".", cwd=tmp_path)
    paths = [line.split(":")[0] for line in done.stdout.decode().splitlines()]
    assert paths == sorted(paths) and paths[0] == "A.py" and set(paths) == {"b.py", "a/x.py", "a.py", "a.b/y.py", "A.py"}


def test_diff_is_the_whole_of_stdout_with_json_too(tmp_path: pathlib.Path) -> None:
    # `--diff --json` wrote the diff and then the JSON document: neither could be read. ruff 0.17.6
    # writes the diff alone with --output-format json (measured), as with every other format.
    (tmp_path / "a.py").write_text(SOURCE, encoding="utf-8")
    diff = child("--isolated", "--diff", "a.py", cwd=tmp_path)
    assert diff.returncode == 1 and diff.stdout.startswith(b"--- a.py\n+++ a.py\n")
    for form in (["--json"], ["--output-format", "json"], ["--output-format", "sarif"], ["--output-format", "github"]):
        done = child("--isolated", "--diff", *form, "a.py", cwd=tmp_path)
        assert (done.returncode, done.stdout) == (1, diff.stdout), form


def test_a_file_met_twice_is_linted_once(tmp_path: pathlib.Path) -> None:
    # `lint b.py a .`: b.py named and walked, a/x.py under two folders given; both were reported
    # twice (ruff 0.17.6, measured: a/x.py once, b.py twice).
    for name in ("b.py", "a/x.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(SOURCE, encoding="utf-8")
    done = child("--isolated", "--select", "CK101", "b.py", "a", ".", "./b.py", cwd=tmp_path)
    assert [line.split(":")[0] for line in done.stdout.decode().splitlines()] == ["a/x.py", "b.py"]
    assert done.stderr == b"Found 2 problems (2 fixable with --fix).\n"


@pytest.mark.skipif(sys.version_info < (3, 12), reason="a comment inside an f-string's braces parses from 3.12 (PEP 701)")
def test_a_comment_inside_an_f_string_spanning_lines_is_no_noqa() -> None:
    # ruff 0.17.6 reports F821 in `z = (undefined_x, f"""{1 # noqa` + `}""")` (measured): the
    # finding's line counts as the string's last line. It was silenced here on 3.12 and 3.13.
    from ckptkeys.lint import lint_source

    source = HEAD + 'z = (sd["param_shapes"], f"""{1 # noqa\n}""")\n'
    assert [f.code for f in lint_source(source, "k.py")] == ["CK101"]
    assert [f.code for f in lint_source(source + "\n", "k.py")] == ["CK101"]
    assert lint_source(HEAD + 'z = (sd["param_shapes"], f"""{1 # x\n}""")  # noqa\n', "k.py") == []
