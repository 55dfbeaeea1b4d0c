"""What ``ckptkeys lint DIR`` walks, as ``ruff check DIR``: ruff's default ``exclude``,
``extend-exclude``, and ``.gitignore`` (``respect-gitignore``) checked against git itself."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

from ckptkeys._cli._main import main
from ckptkeys.lint import iter_python_files
from ckptkeys.lint._files import DEFAULT_EXCLUDE
from ckptkeys.lint._gitignore import parse_gitignore

# One CK101 finding in any file it is written to.
SOURCE = "import torch\nsd = torch.load('mp_rank_00_model_states.pt')\nshapes = sd['param_shapes']\n"

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
# ruff, to compare the walks with: the one on PATH, else the 0.17.6 this was measured against.
RUFF = shutil.which("ruff") or ("/tmp/rv/bin/ruff" if os.path.exists("/tmp/rv/bin/ruff") else None)


def git(repo: pathlib.Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """git in ``repo`` with no user or system configuration (no global excludes file)."""
    env = {
        **os.environ,
        "HOME": str(repo),
        "XDG_CONFIG_HOME": str(repo / ".xdg"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    return subprocess.run(["git", *args], cwd=repo, input=stdin, capture_output=True, text=True, env=env, check=False)


def tree(root: pathlib.Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def walked(root: pathlib.Path, **options: object) -> list[str]:
    found = iter_python_files([root], **options)  # type: ignore[arg-type]
    return sorted(pathlib.Path(p).relative_to(root).as_posix() for p in found)


# Patterns as they are written in practice, with the cases gitignore(5) spells out.
GITIGNORE = """\
# a comment, and a blank line

*.pyc
/top_only.py
build/
logs
!logs/keep.py
docs/**/gen_*.py
**/cache/
out/**
!out/kept/
a?c.py
ver[0-9].py
not[!a-z].py
trailing.py{spaces}
space\\ .py
\\#hash.py
\\!bang.py
deep/*/mid.py
""".format(spaces="   ")  # a pattern with trailing spaces, which git drops

NESTED = """\
*.py
!wanted.py
/local_only/
"""

FILES = [
    "main.py",
    "top_only.py",
    "sub/top_only.py",
    "build/gen.py",
    "src/build/gen.py",
    "build.py",
    "logs/keep.py",
    "logs/other.py",
    "docs/gen_a.py",
    "docs/x/y/gen_b.py",
    "docs/x/keep.py",
    "pkg/cache/c.py",
    "cache.py",
    "out/a.py",
    "out/kept/b.py",
    "abc.py",
    "abbc.py",
    "ver1.py",
    "verx.py",
    "not1.py",
    "nota.py",
    "trailing.py",
    "space .py",
    "#hash.py",
    "!bang.py",
    "deep/one/mid.py",
    "deep/one/two/mid.py",
    "nested/a.py",
    "nested/wanted.py",
    "nested/local_only/x.py",
    "nested/inner/local_only/wanted.py",
    "nested/inner/wanted.py",
    "excluded_by_info.py",
    "crlf/x.py",
    "crlf/y.py",
    "crlf/z.py",
]


@needs_git
def test_the_walk_leaves_out_exactly_what_git_leaves_out(tmp_path: pathlib.Path) -> None:
    """git's own answer: ``git ls-files --others --exclude-standard`` lists the untracked files
    that no ignore rule leaves out, the walk must find those very ``.py`` files."""
    assert git(tmp_path, "init", "-q").returncode == 0
    tree(tmp_path, {name: SOURCE for name in FILES})
    tree(tmp_path, {".gitignore": GITIGNORE, "nested/.gitignore": NESTED, "sub/.gitignore": "!top_only.py\n"})
    (tmp_path / "crlf" / ".gitignore").write_bytes(b"x.py\r\ny.py  \r\n")  # CRLF line ends, trailing spaces
    (tmp_path / ".git" / "info").mkdir(exist_ok=True)
    (tmp_path / ".git" / "info" / "exclude").write_text("excluded_by_info.py\n", encoding="utf-8")
    listed = git(tmp_path, "ls-files", "--others", "--exclude-standard", "-z")
    assert listed.returncode == 0, listed.stderr
    expected = sorted(p for p in listed.stdout.split("\0") if p.endswith(".py"))
    found = walked(tmp_path, excluded=lambda p: os.path.basename(p) == ".git", respect_gitignore=True)
    assert found == expected
    # Not vacuous: the rules left out a good part, and kept some by negation.
    assert len(expected) < len(FILES) - 15
    assert {"nested/wanted.py", "nested/inner/wanted.py", "sub/top_only.py", "verx.py", "crlf/z.py"} <= set(found)
    assert not {"crlf/x.py", "crlf/y.py"} & set(found)
    # git's rule the walk keeps by not entering an ignored folder: no re-including under one.
    assert not {"logs/keep.py", "out/kept/b.py", "space .py"} & set(found)
    assert "nested/inner/local_only/wanted.py" in found  # `/local_only/` is anchored to nested/
    # Without respect_gitignore every file is found.
    assert len(walked(tmp_path, excluded=lambda p: os.path.basename(p) == ".git")) == len(FILES)


@needs_git
@pytest.mark.skipif(RUFF is None, reason="ruff is not installed")
def test_the_walk_is_ruffs(tmp_path: pathlib.Path) -> None:
    """The same tree, with a virtual environment, .github and build besides: ``ruff check
    --show-files`` lists the very .py files the walk finds."""
    assert git(tmp_path, "init", "-q").returncode == 0
    tree(tmp_path, {name: SOURCE for name in FILES})
    tree(tmp_path, {".gitignore": GITIGNORE, "nested/.gitignore": NESTED, "sub/.gitignore": "!top_only.py\n"})
    tree(tmp_path, {".venv/lib/site-packages/x.py": "", ".github/w.py": "", "build/b.py": "", ".tox/t.py": ""})
    tree(tmp_path, {".ignore": "verx.py\n", "nested/.ignore": "!a.py\n"})  # over .gitignore both ways
    (tmp_path / "crlf" / ".gitignore").write_bytes(b"x.py\r\ny.py  \r\n")
    (tmp_path / ".git" / "info" / "exclude").write_text("excluded_by_info.py\n", encoding="utf-8")
    shown = subprocess.run(
        [str(RUFF), "check", "--isolated", "--show-files", "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    ruffs = sorted(
        pathlib.Path(line).relative_to(tmp_path).as_posix()
        for line in shown.stdout.splitlines()
        if line.endswith(".py")
    )
    assert ruffs and walked(tmp_path, respect_gitignore=True) == ruffs


@needs_git
@pytest.mark.parametrize(
    ("pattern", "ignored", "kept"),
    [
        ("*.py", ["a.py", "d/b.py"], ["a.pyc"]),
        ("/a.py", ["a.py"], ["d/a.py"]),
        ("d/a.py", ["d/a.py"], ["e/d/a.py", "a.py"]),
        ("d/", ["d/a.py", "e/d/a.py"], ["d.py"]),
        ("**/d/a.py", ["d/a.py", "e/d/a.py"], ["d/e/a.py"]),
        ("d/**", ["d/a.py", "d/e/a.py"], ["e/d/a.py"]),
        ("d/**/a.py", ["d/a.py", "d/e/f/a.py"], ["e/d/a.py"]),
        ("d/*.py", ["d/a.py"], ["d/e/a.py"]),
        ("d**.py", ["d1.py"], ["d/a.py"]),
        ("[ab].py", ["a.py", "b.py"], ["c.py"]),
        ("[!ab].py", ["c.py"], ["a.py"]),
        ("[a-c]?.py", ["a1.py", "d/c2.py"], ["d1.py", "a.py"]),
        ("\\[x].py", ["[x].py"], ["x.py"]),
        ("[[:digit:]]?.py", ["1a.py", "d/2b.py"], ["a1.py"]),
        ("[![:upper:]_].py", ["a.py", "1.py"], ["A.py", "_.py"]),
        ("[[:punct:]x].py", ["!.py", "x.py", "-.py"], ["a.py"]),
    ],
)
def test_each_pattern_as_git_check_ignore_reads_it(
    tmp_path: pathlib.Path, pattern: str, ignored: list[str], kept: list[str]
) -> None:
    assert git(tmp_path, "init", "-q").returncode == 0
    (tmp_path / ".gitignore").write_text(pattern + "\n", encoding="utf-8")
    paths = ignored + kept
    answer = git(tmp_path, "check-ignore", "--no-index", "--stdin", stdin="\n".join(paths) + "\n")
    assert sorted(answer.stdout.splitlines()) == sorted(ignored), "the case itself is wrong"
    rules = parse_gitignore(pattern, str(tmp_path))

    def ours(path: str) -> bool:
        # As the walk asks it: the path, else a folder above it.
        parts = path.split("/")
        for depth in range(1, len(parts) + 1):
            entry = str(tmp_path.joinpath(*parts[:depth]))
            is_dir = depth < len(parts)
            if any(r.matches(entry, is_dir) and not r.negated for r in rules):
                return True
        return False

    assert sorted(p for p in paths if ours(p)) == sorted(ignored)


def test_gitignore_is_read_inside_a_work_tree_only(tmp_path: pathlib.Path) -> None:
    """As ruff (its walker requires git): a ``.gitignore`` outside any work tree is not read
    (measured: ruff 0.17.6 lints `ign/a.py` under `ign/` in .gitignore until `git init`)."""
    tree(tmp_path, {"a.py": SOURCE, "ign/b.py": SOURCE, ".gitignore": "ign/\n"})
    assert walked(tmp_path, respect_gitignore=True) == ["a.py", "ign/b.py"]
    (tmp_path / ".git").mkdir()
    assert walked(tmp_path, respect_gitignore=True) == ["a.py"]
    # A walk that starts below the top still reads the .gitignore files above it.
    tree(tmp_path, {"sub/ign/c.py": SOURCE, "sub/d.py": SOURCE})
    assert walked(tmp_path / "sub", respect_gitignore=True) == ["d.py"]


def test_dot_ignore_files_as_ruff_reads_them(tmp_path: pathlib.Path) -> None:
    """ruff 0.17.6, measured: a ``.ignore`` counts outside a work tree too, and it wins over a
    ``.gitignore`` (its `!a/` does not re-include what .ignore leaves out)."""
    tree(tmp_path, {f"{d}/{f}": SOURCE for d in "abc" for f in ("f.py", "g.py")})
    tree(tmp_path, {".ignore": "a/\n"})
    assert walked(tmp_path, respect_gitignore=True) == ["b/f.py", "b/g.py", "c/f.py", "c/g.py"]
    (tmp_path / ".git").mkdir()
    tree(tmp_path, {".gitignore": "b/\n!a/\n", "c/.ignore": "g.py\n", "c/.gitignore": "!g.py\n"})
    assert walked(tmp_path, respect_gitignore=True) == ["c/f.py"]
    assert len(walked(tmp_path)) == 6


def test_a_nested_repository_starts_afresh(tmp_path: pathlib.Path) -> None:
    tree(tmp_path, {".gitignore": "*.py\n", "inner/.gitignore": "", "inner/a.py": SOURCE, "b.py": SOURCE})
    (tmp_path / ".git").mkdir()
    (tmp_path / "inner" / ".git").mkdir()
    # The outer *.py leaves out b.py, not inner/a.py: the outer rules stop at inner's .git.
    assert walked(tmp_path, respect_gitignore=True) == ["inner/a.py"]
    (tmp_path / "inner" / ".git").rmdir()
    assert walked(tmp_path, respect_gitignore=True) == []


def test_the_default_exclude_is_ruffs(tmp_path: pathlib.Path) -> None:
    """ruff 0.17.6's default list (`ruff check --show-settings`): a virtual environment, .git,
    .tox, dist, ... are skipped; other hidden folders (.github) and build are linted, as ruff does."""
    names = [f"{name}/a.py" for name in DEFAULT_EXCLUDE] + [".github/scripts/a.py", "build/a.py", "pkg/a.py"]
    tree(tmp_path, {name: SOURCE for name in names})
    tree(tmp_path, {".venv/lib/python3.11/site-packages/torch/x.py": SOURCE})
    assert walked(tmp_path) == [".github/scripts/a.py", "build/a.py", "pkg/a.py"]
    assert {".venv", "venv", ".git", ".tox", ".nox", "dist", "site-packages", "__pypackages__"} <= set(DEFAULT_EXCLUDE)


@pytest.fixture
def checkout(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """A CI checkout: a package, a .venv full of site-packages, an ignored folder, vendored code."""
    tree(
        tmp_path,
        {
            "pkg/train.py": SOURCE,
            ".venv/lib/python3.11/site-packages/deepspeed/engine.py": SOURCE,
            "generated/out.py": SOURCE,
            "third_party/vendored.py": SOURCE,
            ".gitignore": "generated/\n",
        },
    )
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def paths_reported(capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    main(["lint", *args])
    return sorted({line.split(":")[0] for line in capsys.readouterr().out.splitlines()})


def test_the_command_walks_as_ruff(checkout: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    third = os.path.join("third_party", "vendored.py")
    train = os.path.join("pkg", "train.py")
    assert paths_reported(capsys, ".") == [train, third]
    assert paths_reported(capsys, "--no-respect-gitignore", ".") == [os.path.join("generated", "out.py"), train, third]
    assert paths_reported(capsys, "--extend-exclude", "third_party", ".") == [train]
    # --exclude replaces the default list, as ruff's exclude: the .venv is walked again.
    found = paths_reported(capsys, "--exclude", "third_party", ".")
    assert found[0].startswith(".venv") and found[1:] == [train]


def test_the_table_keys(checkout: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    (checkout / "pyproject.toml").write_text(
        '[tool.ckptkeys.lint]\nextend-exclude = ["third_party"]\nrespect-gitignore = false\n', encoding="utf-8"
    )
    assert paths_reported(capsys, ".") == [os.path.join("generated", "out.py"), os.path.join("pkg", "train.py")]
    assert paths_reported(capsys, "--respect-gitignore", ".") == [os.path.join("pkg", "train.py")]
    (checkout / "pyproject.toml").write_text('[tool.ckptkeys.lint]\nrespect-gitignore = "no"\n', encoding="utf-8")
    assert main(["lint", "."]) == 2
    assert "respect-gitignore: must be a boolean" in capsys.readouterr().err


def test_a_file_named_is_linted_whatever_gitignore_says(
    checkout: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As ruff: ignore rules (and exclude, without --force-exclude) are for what the walk finds."""
    named = os.path.join("generated", "out.py")
    assert paths_reported(capsys, named) == [named]
    assert paths_reported(capsys, "--force-exclude", named) == [named]
    # ruff's default list is exclude: --force-exclude applies it to a file named (ruff 0.17.6 alike).
    engine = os.path.join(".venv", "lib", "python3.11", "site-packages", "deepspeed", "engine.py")
    assert paths_reported(capsys, engine) == [engine]
    assert paths_reported(capsys, "--force-exclude", engine) == []
