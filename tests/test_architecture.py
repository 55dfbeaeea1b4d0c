"""The package's architecture: its import contracts hold, and fail when broken; public paths work.

The contracts are `[tool.importlinter]` in pyproject.toml (docs/development.md, "Architecture").
Each breaking test copies the package, adds one import that a contract forbids, and runs
`lint-imports` on the copy: it must name that contract as broken, so a contract that could never
fail (a typo in a module name, a layer left out) fails here.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from .conftest import ROOT
from .doc_examples import markdown_files, python_blocks

PACKAGE = ROOT / "src" / "ckptkeys"
PUBLIC_MODULES: tuple[str, ...] = ("ckptkeys", "ckptkeys.constants", "ckptkeys.lint", "ckptkeys.naming")
PUBLIC_MODULES += ("ckptkeys.schema", "ckptkeys.writing")
CONTRACTS = {
    "layers": "Layers:",
    "command": "Nothing in ckptkeys imports the command",
    "acyclic": "No import cycles between sibling modules or packages",
    "heavy": "No torch, DeepSpeed or fsspec anywhere",
}


# import-linter 2.16 (acyclic_siblings, exhaustive layers) runs on Python 3.11 and later; the
# test extra installs it there, and scripts/test.sh checks the contracts on 3.11.
needs_import_linter = pytest.mark.skipif(sys.version_info < (3, 11), reason="import-linter 2.16 needs Python 3.11+")


def lint_imports(root: pathlib.Path, source: pathlib.Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` with ROOT's contracts over the package found under SOURCE."""
    command = shutil.which("lint-imports", path=str(pathlib.Path(sys.executable).parent))
    assert command is not None, "import-linter is a test dependency (pip install -e '.[test]')"
    env = {**os.environ, "PYTHONPATH": str(source), "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [command, "--config", str(root / "pyproject.toml"), "--no-cache", "--no-logo"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def verdicts(output: str) -> dict[str, str]:
    """Contract id -> "KEPT" or "BROKEN", from the summary lines of `lint-imports`."""
    found: dict[str, str] = {}
    text = " ".join(output.split())
    for contract, name in CONTRACTS.items():
        match = re.search(re.escape(name) + r".*?\b(KEPT|BROKEN)\b", text)
        assert match is not None, f"no verdict for {contract!r} in:\n{output}"
        found[contract] = match.group(1)
    return found


@needs_import_linter
def test_contracts_hold() -> None:
    result = lint_imports(ROOT, ROOT / "src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert verdicts(result.stdout) == dict.fromkeys(CONTRACTS, "KEPT")


BREAKS = {
    # a lint module importing export: two independent layers
    "layers": [("lint/__init__.py", "from .._export import _plan  # noqa: F401\n")],
    # a module left out of every layer (the layers contract is exhaustive)
    "layers-new-module": [("_stray.py", '"""A module no layer names."""\n')],
    # export importing the command
    "command": [("_export/_write.py", "from .._cli import _report  # noqa: F401\n")],
    # the loop issue 18 broke: the reader's errors importing its pickle machine
    "acyclic": [("_read/_errors.py", "from ._pickle import Opaque  # noqa: F401\n")],
    # the reader importing torch (lazily, as a function would)
    "heavy": [("_read/_reader.py", "def _load():\n    import torch  # noqa: F401\n")],
    # fsspec anywhere but the remote source (which imports it lazily, and alone may)
    "heavy-fsspec": [("_read/_reader.py", "def _open():\n    import fsspec  # noqa: F401\n")],
}


@needs_import_linter
@pytest.mark.parametrize("case", sorted(BREAKS))
def test_a_broken_contract_fails(case: str, tmp_path: pathlib.Path) -> None:
    copy = tmp_path / "src" / "ckptkeys"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "_example"))
    for relative, line in BREAKS[case]:
        target = copy / relative
        with open(target, "a", encoding="utf-8") as file:
            file.write("\n" + line)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    result = lint_imports(tmp_path, tmp_path / "src")
    assert result.returncode == 1, result.stdout + result.stderr
    broken = {contract for contract, verdict in verdicts(result.stdout).items() if verdict == "BROKEN"}
    assert case.split("-")[0] in broken, result.stdout


def test_every_public_name_imports() -> None:
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        names = getattr(module, "__all__", None)
        assert names, f"{module_name} has no __all__"
        for name in names:
            assert getattr(module, name) is not None, f"{module_name}.{name}"


def _documented_imports() -> list[tuple[str, str]]:
    """(file, statement) for every import of ckptkeys in the README and docs' Python blocks."""
    found: list[tuple[str, str]] = []
    for path in markdown_files():
        for _, block in python_blocks(path):
            try:
                tree = ast.parse(block)
            except SyntaxError:  # a fragment: take its one-line imports
                lines = [line.strip() for line in block.splitlines()]
                found += [(path.name, line) for line in lines if re.match(r"(from|import) ckptkeys\b", line)]
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom):
                    modules = [node.module or ""]
                elif isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                else:
                    continue
                if any(module.split(".")[0] == "ckptkeys" for module in modules):
                    found.append((path.name, ast.unparse(node)))
    return found


def test_every_import_the_docs_show_works() -> None:
    statements = _documented_imports()
    assert len(statements) >= 10, statements  # the docs import ckptkeys in many places
    for file, statement in statements:
        try:
            exec(compile(statement, file, "exec"), {})
        except ImportError as error:
            raise AssertionError(f"{file}: {statement}: {error}") from error


def _resolve(dotted: str) -> object:
    """The module or attribute a dotted name names: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            if isinstance(value, type) and any(attribute in vars(c).get("__annotations__", {}) for c in value.__mro__):
                return value  # an attribute the class declares for its instances (KeyGroup.since)
            value = inspect.getattr_static(value, attribute)
        return value
    raise ModuleNotFoundError(dotted)


def test_every_dotted_name_in_docs_and_docstrings_resolves() -> None:
    """`ckptkeys.x.y` in the docs and in the sources' text names something that exists."""
    files = [*markdown_files(), *sorted(PACKAGE.rglob("*.py"))]
    names: dict[str, str] = {}
    for path in files:
        for name in re.findall(r"\bckptkeys(?:\.[A-Za-z_]\w*)+", path.read_text(encoding="utf-8")):
            names.setdefault(name.rstrip("."), str(path.relative_to(ROOT)))
    assert "ckptkeys._read._pickle.find_class" in names  # the search reaches the docstrings
    for name, where in sorted(names.items()):
        try:
            _resolve(name)
        except (ImportError, AttributeError) as error:
            raise AssertionError(f"{where} names {name}, which does not exist: {error}") from error


def test_every_source_path_in_docs_exists() -> None:
    """`src/ckptkeys/...py` paths the docs give are files of the tree."""
    for path in markdown_files():
        for found in re.findall(r"src/ckptkeys/[\w/]+\.py", path.read_text(encoding="utf-8")):
            assert (ROOT / found).is_file(), f"{path.name}: {found}"


def test_the_architecture_table_names_every_private_module() -> None:
    """docs/development.md's table lists each room's modules: exactly the files in the room."""
    text = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    section = text.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    rooms: dict[str, set[str]] = {}
    for row in re.findall(r"^\| (.+) \|$", section, re.MULTILINE):
        cells = [cell.strip() for cell in row.split(" | ")]
        room = re.match(r"`([\w/]+)`", cells[0])
        if room is None or not (room.group(1).endswith("/") or room.group(1) == "lint"):
            continue
        listed = re.sub(r"\([^()]*\)", "", cells[2])  # the modules, without what they hold
        rooms[room.group(1).rstrip("/")] = set(re.findall(r"`(_\w+)`", listed))
    on_disk = {
        folder.name: {path.stem for path in folder.glob("*.py") if path.stem != "__init__"}
        for folder in PACKAGE.iterdir()
        if (folder / "__init__.py").is_file()
    }
    assert rooms == on_disk


def test_every_folder_of_code_is_a_package() -> None:
    """A folder of modules without ``__init__.py`` would be left out of the wheel (packages.find)."""
    folders = {path.parent for path in PACKAGE.rglob("*.py")}
    assert folders, PACKAGE
    assert sorted(str(f.relative_to(PACKAGE)) for f in folders if not (f / "__init__.py").is_file()) == []
