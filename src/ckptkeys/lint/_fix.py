"""``--fix``: findings rewritten in the source, and the ``from ckptkeys import ...`` they need put where isort would."""

from __future__ import annotations

import ast
import os
import sys

from ._codes import Finding
from ._files import physical_lines
from ._linter import FUNCTIONS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable


def fix_source(source: str, findings: Iterable[Finding]) -> tuple[str, list[Finding]]:
    """``source`` with every fixable finding rewritten, and the findings that were fixed.

    A replacement is only made where the text at the finding's position is exactly the
    literal (or import) the finding is about. The ``from ckptkeys import ...`` the rewrites
    need goes where isort and ruff would put it: merged into an existing one-line
    ``from ckptkeys import``, else among the third-party imports in sorted order, else as a
    section of its own after the standard-library imports. A module that imports DeepSpeed only
    inside functions gets the import inside each function it rewrites, so it stays as lazy as it
    was. Formatting and comments elsewhere are untouched.
    """
    findings = list(findings)
    lines = physical_lines(source)
    encoded = [line.encode("utf-8") for line in lines]
    edits: list[tuple[int, int, int, int, str, Finding]] = []
    for finding in findings:
        if finding.replacement is None or finding._span is None:
            continue
        if not _matches(encoded, finding):
            continue
        line, col, end_line, end_col = finding._span
        edits.append((line, col, end_line, end_col, finding.replacement, finding))
    if not edits:
        return source, []
    tree = ast.parse(source)
    bound = _module_names(tree)
    clashing = {n for *_, f in edits for n in f.imports if bound.get(n, "ckptkeys") != "ckptkeys"}
    edits = [e for e in edits if not set(e[5].imports) & clashing]
    # Where each edit's names are imported: the module, or (lazy modules) the outermost function.
    lazy = _imports_deepspeed_lazily(tree)
    targets: dict[int, tuple[ast.FunctionDef | ast.AsyncFunctionDef | None, set[str]]] = {}
    kept = []
    for edit in edits:
        names = {n for n in edit[5].imports if n not in bound}
        function = _outermost_function(tree, edit[0]) if lazy and names else None
        if function is not None and function.body[0].lineno == function.lineno:
            continue  # `def f(): return s["k"]`: no line to import on; left for the user
        entry = targets.setdefault(id(function), (function, set()))
        entry[1].update(names)
        kept.append(edit)
    insertions: list[tuple[int, bytes, bytes | None]] = []  # (0-based line, text, replaced line)
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    for function, names in targets.values():
        if not names:
            continue
        if function is None:
            insertions.append(_module_import(tree, lines, sorted(names), newline, findings[0].path))
        else:
            insertions.append(_function_import(function, lines, sorted(names), newline))
    kept.sort(key=lambda e: (e[0], e[1]), reverse=True)
    # Bottom up, so that no edit moves the lines of those still to come; an insertion before a
    # line comes after the edits on that line.
    plan: list[
        tuple[tuple[int, int], tuple[int, int, int, int, str, Finding] | None, tuple[int, bytes, bytes | None] | None]
    ]
    plan = [((e[0], e[1]), e, None) for e in kept] + [((i[0] + 1, -1), None, i) for i in insertions]
    plan.sort(key=lambda item: item[0], reverse=True)
    previous: tuple[int, int] | None = None
    applied = []
    for _, planned, insertion in plan:
        if insertion is not None:
            index, text, replaced = insertion
            if replaced is not None:
                encoded[index] = text
                continue
            if index and index <= len(encoded) and not encoded[index - 1].endswith((b"\n", b"\r")):
                encoded[index - 1] += newline.encode("utf-8")
            encoded[index:index] = [text]
            continue
        assert planned is not None
        line, col, end_line, end_col, replacement, finding = planned
        if previous is not None and (end_line, end_col) > previous:
            continue  # overlapping edits (never produced today): keep the later one
        first, last = encoded[line - 1], encoded[end_line - 1]
        encoded[line - 1 : end_line] = [first[:col] + replacement.encode("utf-8") + last[end_col:]]
        previous = (line, col)
        applied.append(finding)
    if not applied:
        return source, []
    applied.reverse()
    return b"".join(encoded).decode("utf-8"), applied


def _imports_deepspeed_lazily(tree: ast.Module) -> bool:
    """Whether DeepSpeed is imported only inside functions (never at the module's top level)."""
    top = inner = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            modules = [node.module or ""]
        else:
            continue
        if any(m == "deepspeed" or m.startswith("deepspeed.") for m in modules):
            if _outermost_function(tree, node.lineno) is None:
                top = True
            else:
                inner = True
    return inner and not top


def _outermost_function(tree: ast.Module, line: int) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    body: list[ast.stmt] = tree.body
    while True:
        for node in body:
            if node.lineno <= line <= (node.end_lineno or node.lineno):
                if isinstance(node, FUNCTIONS):
                    return node
                if isinstance(node, ast.ClassDef):
                    body = node.body
                    break
                return None
        else:
            return None


def _function_import(
    function: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str], names: list[str], newline: str
) -> tuple[int, bytes, bytes | None]:
    """The import as the first statement of ``function`` (after its docstring)."""
    body = function.body
    first = body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        if len(body) > 1:
            first = body[1]
            index = first.lineno - 1
        else:
            index = first.end_lineno or first.lineno  # after the docstring
    else:
        index = first.lineno - 1
    indent = " " * first.col_offset
    text = f"{indent}from ckptkeys import {', '.join(names)}{newline}"
    return index, text.encode("utf-8"), None


def _section(node: ast.Import | ast.ImportFrom, path: str) -> str:
    """isort's section of an import: future, stdlib, thirdparty or firstparty."""
    if isinstance(node, ast.ImportFrom) and node.level:
        return "firstparty"
    module = (node.module or "") if isinstance(node, ast.ImportFrom) else node.names[0].name
    top = module.split(".")[0]
    if top == "__future__":
        return "future"
    if top in sys.stdlib_module_names:
        return "stdlib"
    folders = os.path.abspath(path).split(os.sep)[:-1]
    return "firstparty" if top in folders else "thirdparty"


def _module_import(
    tree: ast.Module, lines: list[str], names: list[str], newline: str, path: str
) -> tuple[int, bytes, bytes | None]:
    """Where and what to insert (or which line to replace) for ``from ckptkeys import names``."""
    statement = f"from ckptkeys import {', '.join(names)}"
    imports: list[ast.Import | ast.ImportFrom] = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imports.append(node)
        elif imports or not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            break
    for node in imports:  # merge into `from ckptkeys import A` (one line, no comment, no alias)
        if isinstance(node, ast.ImportFrom) and node.module == "ckptkeys" and not node.level:
            text = lines[node.lineno - 1].rstrip("\r\n")
            present = [a.name for a in node.names]
            simple = node.end_lineno == node.lineno and not any(a.asname for a in node.names)
            if simple and text.strip() == f"from ckptkeys import {', '.join(present)}":
                indent = text[: len(text) - len(text.lstrip())]
                merged = f"{indent}from ckptkeys import {', '.join(sorted({*present, *names}))}{newline}"
                return node.lineno - 1, merged.encode(), lines[node.lineno - 1].encode()
    sections = [(_section(node, path), node) for node in imports]
    third = [node for section, node in sections if section == "thirdparty"]
    if third:
        froms = [n for n in third if isinstance(n, ast.ImportFrom)]
        after = next((n for n in froms if (n.module or "").lower() > "ckptkeys"), None)
        if after is not None:
            return after.lineno - 1, f"{statement}{newline}".encode(), None
        last = (froms or third)[-1]
        return last.end_lineno or last.lineno, f"{statement}{newline}".encode(), None
    before = [node for section, node in sections if section in ("future", "stdlib")]
    if before:  # a section of its own after the standard-library (or __future__) imports
        last = before[-1]
        index = last.end_lineno or last.lineno
        follows = lines[index] if index < len(lines) else ""
        gap = newline if follows.strip() else ""
        return index, f"{newline}{statement}{newline}{gap}".encode(), None
    if imports:  # only first-party imports: before them
        return imports[0].lineno - 1, f"{statement}{newline}{newline}".encode(), None
    return _first_statement(tree, lines, statement, newline)


def _first_statement(
    tree: ast.Module, lines: list[str], statement: str, newline: str
) -> tuple[int, bytes, bytes | None]:
    """Before the first statement after the docstring and ``__future__`` imports (comments, a
    shebang and a coding line stay above), apart from code that follows it."""
    index = len(lines)
    before_code = False
    for node in tree.body:
        is_docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and node is tree.body[0]
        is_future = isinstance(node, ast.ImportFrom) and node.module == "__future__"
        if not (is_docstring or is_future):
            decorators = getattr(node, "decorator_list", [])
            index = min([node.lineno, *(d.lineno for d in decorators)]) - 1
            before_code = not isinstance(node, (ast.Import, ast.ImportFrom))
            break
    return index, (f"{statement}{newline}" + (newline if before_code else "")).encode("utf-8"), None


def _matches(encoded: list[bytes], finding: Finding) -> bool:
    assert finding._span is not None
    line, col, end_line, end_col = finding._span
    if end_line > len(encoded):
        return False
    chunk = b"".join(encoded[line - 1 : end_line])
    offset = sum(len(b) for b in encoded[line - 1 : end_line - 1])
    try:
        text = (chunk[col : offset + end_col]).decode("utf-8")
    except UnicodeDecodeError:
        return False
    if finding.code in ("CK301", "CK302"):
        return text.startswith(("from", "import"))
    try:
        return bool(ast.literal_eval(text) == finding.value)
    except (ValueError, SyntaxError):
        return False


def _module_names(tree: ast.Module) -> dict[str, str]:
    """Top-level names and where they come from (``"ckptkeys"`` if imported from it)."""
    names: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                names[alias.asname or alias.name] = (node.module or "") if not node.level else "."
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = alias.name
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = "<definition>"
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        names[name.id] = "<assignment>"
    return names
