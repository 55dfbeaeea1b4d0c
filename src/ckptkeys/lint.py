"""Find loose checkpoint-key strings in Python code, and rewrite them to the key registry.

:func:`lint_source` reports each string literal whose value is a registry value *in a key
position* (a subscript, ``.get``/``.pop``/``.setdefault``, an ``in`` test, a dict-display key,
an ``==`` with a key variable, a ``key=`` argument), each f-string, ``+``, ``%`` or
``.format`` that rebuilds a checkpoint file name from :class:`~ckptkeys.NamingKeys` pieces,
each literal checkpoint file name, and each import of ``deepspeed.checkpoint.constants``.
:func:`fix_source` rewrites the findings whose target is unambiguous. docs/lint.md has the
rules and every code.
"""

from __future__ import annotations

import ast
import io
import os
import re
import tokenize
from dataclasses import dataclass, field

from . import _registry
from ._strenum import KeyGroup
from .naming import CheckpointName, FileKind, parse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import Final

__all__ = ["CODES", "Finding", "decode_source", "fix_source", "iter_python_files", "lint_source"]

CODES: Final[dict[str, str]] = {
    "CK001": "the file cannot be read or decoded, or does not parse as Python",
    "CK101": "checkpoint key in a subscript: d['key']",
    "CK102": "checkpoint key passed to get, pop or setdefault",
    "CK103": "checkpoint key in an `in` / `not in` test",
    "CK104": "checkpoint key as a dict-display key: {'key': ...}",
    "CK105": "checkpoint key compared with == or != to a key variable",
    "CK106": "checkpoint key as a key= keyword argument",
    "CK201": "checkpoint file name rebuilt from naming pieces (f-string, +, % or .format)",
    "CK202": "literal checkpoint file name",
    "CK301": "import from deepspeed.checkpoint.constants",
}

# Values that are ordinary words: reported in a key position only when the same function (or
# module, outside functions) also uses a distinctive checkpoint key there (see docs/lint.md).
_DISTINCTIVE: Final = re.compile(r"[_.\-]")
# Naming pieces specific enough that a string holding one and a placeholder builds a file name.
_FILE_NAME_PIECE: Final = re.compile(r"mp_rank_|zero_pp_rank_|expp_rank_|[_-]optim_states|[_-]model_states|states\.pt")
# Methods whose first argument is a key, and those among them that store it in the mapping.
_KEY_METHODS: Final = frozenset({"get", "pop", "setdefault"})
_STORING_METHODS: Final = frozenset({"setdefault"})
_IGNORE_COMMENT: Final = re.compile(r"#\s*ckptkeys:\s*ignore(?:\[([A-Z0-9,\s]+)\])?")
_CONSTANTS_MODULE: Final = "deepspeed.checkpoint.constants"
_SKIPPED_DIRS: Final = frozenset({"__pycache__", "node_modules", "site-packages"})


@dataclass(frozen=True, slots=True)
class Finding:
    """One loose string (or import) and the registry spelling to use instead."""

    path: str
    line: int
    """1-based line of the start of the offending expression."""
    col: int
    """1-based column, in characters."""
    code: str
    message: str
    value: str | None = None
    """The string literal's value (``None`` for imports and rebuilt names)."""
    candidates: tuple[str, ...] = ()
    """Registry members with that value, most likely first: ``("OptimizerKeys.ZERO_STAGE",)``."""
    replacement: str | None = None
    """What ``fix_source`` writes in place of the expression; ``None`` if it is not fixable."""
    imports: tuple[str, ...] = ()
    """Names ``fix_source`` imports from ``ckptkeys`` for the replacement."""
    _span: tuple[int, int, int, int] | None = field(default=None, repr=False, compare=False)
    # (line, byte col, end line, end byte col): where fix_source writes

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col} {self.code} {self.message}"

    @property
    def fixable(self) -> bool:
        return self.replacement is not None


# -- the registry, indexed by value ------------------------------------------------------------


class _Index:
    """Registry values, their members in registry order, and the pre-filters built from them."""

    def __init__(self) -> None:
        members: dict[str, list[KeyGroup]] = {}
        for group in _registry.GROUPS:
            for member in group:
                members.setdefault(member.value, []).append(member)
        self.members = members
        self.group_of_value = {value: {type(m).__name__ for m in found} for value, found in members.items()}
        naming = sorted(_registry.NamingKeys, key=lambda m: -len(m.value))
        self.naming = [(m.value, f"NamingKeys.{m.name}") for m in naming]
        quoted = "|".join(re.escape(v) for v in sorted(members, key=len, reverse=True))
        # A file is only walked if one of these appears in its text at all.
        self.prefilter = re.compile(
            rf"""['"](?:{quoted})['"]|{_FILE_NAME_PIECE.pattern}|deepspeed\.checkpoint|from\s+\.+\s*constants\s+import"""
        )


_INDEX: _Index | None = None


def _index() -> _Index:
    global _INDEX
    if _INDEX is None:
        _INDEX = _Index()
    return _INDEX


def _physical_lines(source: str) -> list[str]:
    """The lines as Python counts them (\\n, \\r\\n or \\r; not form feeds), with their endings."""
    return io.StringIO(source, newline="").readlines()


def decode_source(raw: bytes) -> tuple[str, str]:
    """The text of a Python file and its encoding (PEP 263 declaration or BOM; UTF-8 by default).

    Raises :class:`SyntaxError` for an unknown or wrong encoding declaration and
    :class:`UnicodeDecodeError` for bytes that are not in the encoding.
    """
    encoding, _ = tokenize.detect_encoding(io.BytesIO(raw).readline)
    return raw.decode(encoding), encoding


# -- finding ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Candidate:
    """A registry-valued literal in a key position, before the context is known."""

    node: ast.Constant
    value: str
    code: str
    store: bool  # the key would be stored in the mapping: the fix writes ``Member.value``
    scope: int


def _key_literal(node: ast.AST | None) -> ast.Constant | None:
    if isinstance(node, ast.Constant) and type(node.value) is str:
        return node
    return None


def _is_key_name(node: ast.AST) -> bool:
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
    return name is not None and (name.lower() == "k" or "key" in name.lower())


def _is_literal_type(node: ast.AST) -> bool:
    """``Literal`` or ``typing.Literal``: ``Literal["module"]`` is a type, not a look-up."""
    return (isinstance(node, ast.Name) and node.id == "Literal") or (
        isinstance(node, ast.Attribute) and node.attr == "Literal"
    )


def _scopes(tree: ast.Module) -> list[tuple[int, int, int]]:
    """(first line, last line, id) of every function, innermost last among those overlapping."""
    found: list[tuple[int, int, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            found.append((node.lineno, node.end_lineno or node.lineno, len(found) + 1))
    found.sort()
    return found


def _scope_of(scopes: list[tuple[int, int, int]], line: int) -> int:
    best = 0  # the module
    for first, last, ident in scopes:
        if first > line:
            break
        if line <= last:
            best = ident  # sorted by first line: a later match is nested deeper
    return best


def _pieces(node: ast.AST) -> tuple[list[str], bool] | None:
    """The literal pieces of a string built from parts, and whether it has a dynamic part."""
    if isinstance(node, ast.JoinedStr):
        texts = [v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
        return texts, len(texts) < len(node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        parts: list[ast.AST] = []
        stack: list[ast.AST] = [node]
        while stack:  # flatten a + b + c
            item = stack.pop()
            if isinstance(item, ast.BinOp) and isinstance(item.op, ast.Add):
                stack += [item.right, item.left]
            else:
                parts.append(item)
        literal: list[str] = []
        dynamic = False
        for part in parts:
            if isinstance(part, ast.Constant) and isinstance(part.value, str):
                literal.append(part.value)
            elif isinstance(part, ast.JoinedStr):
                inner = _pieces(part)
                assert inner is not None
                literal += inner[0]
                dynamic = dynamic or inner[1]
            else:
                dynamic = True
        return (literal, dynamic) if literal else None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) and _key_literal(node.left):
        return [node.left.value], True  # type: ignore[attr-defined]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "format"
        and _key_literal(node.func.value)
    ):
        return [node.func.value.value], True  # type: ignore[attr-defined]
    return None


_BUILDERS: Final = (  # (pieces that must all appear, the naming function to suggest)
    (("expp_rank_",), "expert_optim_states(ep_rank, mp_rank)"),
    (("expert_", "model_states"), "expert_model_states(expert, mp_rank, layer)"),
    (("layer_", "-model_states"), "layer_model_states(layer, mp_rank)"),
    (("zero_pp_rank_", "optim_states"), "optim_states(dp_rank, mp_rank, precision)"),
    (("zero_pp_rank_", "model_states"), "zero3_model_states(dp_rank, mp_rank)"),
    (("mp_rank_", "model_states"), "model_states(mp_rank)"),
)


def _naming_members(text: str) -> list[str]:
    """NamingKeys members whose values appear in ``text``, longest first, none inside another."""
    found: list[tuple[str, str]] = []
    for value, name in _index().naming:
        if value in text and not any(value in longer for longer, _ in found) and len(value) > 3:
            found.append((value, name))
    return [name for _, name in found]


def _call_for(record: CheckpointName) -> str | None:
    kind, mp = record.kind, record.mp_rank
    if kind is FileKind.MODEL_STATES:
        return f"model_states({mp})"
    if kind is FileKind.ZERO3_MODEL_STATES:
        return f"zero3_model_states({record.dp_rank}, {mp})"
    if kind is FileKind.OPTIM_STATES:
        precision = f", {record.precision!r}" if record.precision else ""
        return f"optim_states({record.dp_rank}, {mp}{precision})"
    if kind is FileKind.LAYER_MODEL_STATES:
        return f"layer_model_states({record.layer}{'' if mp is None else f', {mp}'})"
    if kind is FileKind.EXPERT_MODEL_STATES:
        return f"expert_model_states({record.expert}, {mp}{'' if record.layer is None else f', {record.layer}'})"
    if kind is FileKind.EXPERT_OPTIM_STATES:
        return f"expert_optim_states({record.ep_rank}, {mp})"
    return None


class _Linter:
    def __init__(self, source: str, path: str) -> None:
        self.source = source
        self.path = path
        self.lines = [line.rstrip("\r\n") for line in _physical_lines(source)]
        self.findings: list[Finding] = []
        self.covered: set[int] = set()  # ids of string-building nodes inside one already checked

    def column(self, line: int, byte_col: int) -> int:
        if 0 < line <= len(self.lines):
            return len(self.lines[line - 1].encode("utf-8")[:byte_col].decode("utf-8", "replace")) + 1
        return byte_col + 1

    def span(self, node: ast.AST) -> tuple[int, int, int, int]:
        start_line, start_col = node.lineno, node.col_offset  # type: ignore[attr-defined]
        end_line, end_col = node.end_lineno, node.end_col_offset  # type: ignore[attr-defined]
        return start_line, start_col, end_line or start_line, end_col if end_col is not None else start_col

    def add(self, node: ast.AST, code: str, message: str, **extra: object) -> None:
        line, col, *_ = self.span(node)
        self.findings.append(
            Finding(self.path, line, self.column(line, col), code, message, _span=self.span(node), **extra)  # type: ignore[arg-type]
        )

    def run(self) -> list[Finding]:
        index = _index()
        if not index.prefilter.search(self.source):
            return []
        try:
            tree = ast.parse(self.source, self.path)
        except (SyntaxError, ValueError) as error:  # ValueError: null bytes
            line = getattr(error, "lineno", None) or 1
            self.findings.append(Finding(self.path, line, getattr(error, "offset", None) or 1, "CK001", f"{error}"))
            return self.findings
        candidates: list[_Candidate] = []
        scopes = _scopes(tree)
        members = index.members
        for node in ast.walk(tree):
            kind = type(node)
            literal: ast.Constant | None = None
            if kind is ast.Subscript:
                if not _is_literal_type(node.value):  # type: ignore[attr-defined]
                    literal = _key_literal(node.slice)  # type: ignore[attr-defined]
                code, store = "CK101", isinstance(node.ctx, ast.Store)  # type: ignore[attr-defined]
            elif kind is ast.Call:
                func = node.func  # type: ignore[attr-defined]
                if isinstance(func, ast.Attribute) and func.attr in _KEY_METHODS and node.args:  # type: ignore[attr-defined]
                    literal = _key_literal(node.args[0])  # type: ignore[attr-defined]
                    code, store = "CK102", func.attr in _STORING_METHODS
                for keyword in node.keywords:  # type: ignore[attr-defined]
                    found = _key_literal(keyword.value) if keyword.arg == "key" else None
                    if found is not None and found.value in members:
                        candidates.append(
                            _Candidate(found, found.value, "CK106", True, _scope_of(scopes, found.lineno))
                        )
                if func.__class__ is ast.Attribute and func.attr == "format":
                    self.file_name(node)
            elif kind is ast.Compare:
                left, ops, right = node.left, node.ops, node.comparators  # type: ignore[attr-defined]
                if len(ops) == 1 and isinstance(ops[0], (ast.In, ast.NotIn)):
                    literal, code, store = _key_literal(left), "CK103", False
                elif len(ops) == 1 and isinstance(ops[0], (ast.Eq, ast.NotEq)):
                    if _is_key_name(right[0]):
                        literal, code, store = _key_literal(left), "CK105", False
                    elif _is_key_name(left):
                        literal, code, store = _key_literal(right[0]), "CK105", False
            elif kind is ast.Dict:
                for key in node.keys:  # type: ignore[attr-defined]
                    found = _key_literal(key)
                    if found is not None and found.value in members:
                        candidates.append(
                            _Candidate(found, found.value, "CK104", True, _scope_of(scopes, found.lineno))
                        )
            elif kind is ast.JoinedStr or kind is ast.BinOp:
                self.file_name(node)
            elif kind is ast.Constant:
                value = node.value  # type: ignore[attr-defined]
                if type(value) is str and value.endswith(".pt") and "states" in value:
                    self.literal_file_name(node, value)  # type: ignore[arg-type]
            elif kind is ast.ImportFrom or kind is ast.Import:
                self.constants_import(node)
            if literal is not None and literal.value in members:
                candidates.append(_Candidate(literal, literal.value, code, store, _scope_of(scopes, literal.lineno)))
        self.keys(candidates)
        self.findings.sort(key=lambda f: (f.line, f.col, f.code))
        return self.findings

    # -- keys ---------------------------------------------------------------------------------

    def keys(self, candidates: list[_Candidate]) -> None:
        index = _index()
        by_scope: dict[int, list[str]] = {}
        for candidate in candidates:
            by_scope.setdefault(candidate.scope, []).append(candidate.value)
        for candidate in candidates:
            value = candidate.value
            around = [v for v in by_scope[candidate.scope] if v != value]
            found = index.members[value]
            # Rank the members by how many other keys of the same scope their group holds.
            score = {
                type(m).__name__: sum(1 for v in around if type(m).__name__ in index.group_of_value[v]) for m in found
            }
            ranked = sorted(found, key=lambda m: -score[type(m).__name__])
            names = tuple(f"{type(m).__name__}.{m.name}" for m in ranked)
            best = score[type(ranked[0]).__name__]
            if not _DISTINCTIVE.search(value):
                # An ordinary word ("step", "module", "version"): only beside a distinctive key of
                # the same group, as in `state["module"]` next to `state["buffer_names"]`.
                group = type(ranked[0]).__name__
                if not any(_DISTINCTIVE.search(v) and group in index.group_of_value[v] for v in around):
                    continue
            unambiguous = len(ranked) == 1 or best > score[type(ranked[1]).__name__]
            replacement = names[0] + (".value" if candidate.store else "") if unambiguous else None
            if len(names) == 1:
                use = f"use {names[0]}"
            elif unambiguous:
                use = f"use {names[0]} (by the keys around it; or {', '.join(names[1:])})"
            else:
                use = f"use one of {', '.join(names)}"
            what = "file-name piece" if names[0].startswith("NamingKeys.") else "key"
            if candidate.store:
                use += "; .value keeps a plain str in what is saved" if replacement else ""
            self.add(
                candidate.node,
                candidate.code,
                f"{value!r} is a checkpoint {what}: {use}",
                value=value,
                candidates=names,
                replacement=replacement,
                imports=(names[0].split(".")[0],) if replacement else (),
            )

    # -- file names ---------------------------------------------------------------------------

    def file_name(self, node: ast.AST) -> None:
        if id(node) in self.covered:
            return
        found = _pieces(node)
        if found is None:
            return
        for inner in ast.walk(node):  # a + b + c and the f-strings in it: one finding, for the whole
            if inner is not node and isinstance(inner, (ast.BinOp, ast.JoinedStr)):
                self.covered.add(id(inner))
        literal, dynamic = found
        text = "".join(literal)
        if not dynamic or not _FILE_NAME_PIECE.search(text) or any(c.isspace() for c in text):
            return  # no placeholder, no naming piece, or a sentence (a message that mentions a name)
        names = _naming_members(text)
        builder = next((call for needed, call in _BUILDERS if all(p in text for p in needed)), None)
        use = f"use ckptkeys.naming.{builder}" if builder else "use the NamingKeys members"
        self.add(node, "CK201", f"file name rebuilt from {', '.join(names) or 'naming pieces'}: {use}")

    def literal_file_name(self, node: ast.Constant, value: str) -> None:
        record = parse(os.path.basename(value))
        call = _call_for(record) if record is not None else None
        if call is not None:
            self.add(node, "CK202", f"{value!r} is a checkpoint file name: use ckptkeys.naming.{call}", value=value)

    # -- imports ------------------------------------------------------------------------------

    def constants_import(self, node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == _CONSTANTS_MODULE:
                    fix = (
                        f"import ckptkeys.constants as {alias.asname}"
                        if alias.asname and len(node.names) == 1
                        else None
                    )
                    self.add(
                        node,
                        "CK301",
                        f"import of {_CONSTANTS_MODULE}: use ckptkeys.constants (same names, no torch) or the groups",
                        replacement=fix,
                    )
            return
        assert isinstance(node, ast.ImportFrom)
        module = self.absolute(node)
        if module == _CONSTANTS_MODULE:
            target = "ckptkeys.constants"
        elif module == "deepspeed.checkpoint" and any(a.name == "constants" for a in node.names):
            if len(node.names) != 1:
                self.add(node, "CK301", "import of deepspeed.checkpoint.constants: use ckptkeys.constants")
                return
            target = "ckptkeys"
        else:
            return
        segment = self.segment(node)
        spec = re.match(r"from\s+([.\w\s]+?)\s+import\b", segment or "")
        fix = None
        # A relative import is DeepSpeed's own package importing its constants: rewriting it
        # would stop the package from importing its submodule, so it is only reported.
        if segment is not None and spec is not None and not node.level:
            fix = segment[: spec.start(1)] + target + segment[spec.end(1) :]
        self.add(
            node,
            "CK301",
            f"import from {module}: use {target}{'.constants' if target == 'ckptkeys' else ''} "
            "(same names and values, no torch) or the key groups",
            replacement=fix,
        )

    def absolute(self, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        package = os.path.dirname(os.path.abspath(self.path)).split(os.sep)
        if node.level > 1:
            package = package[: -(node.level - 1)]
        return ".".join([*package[-2:], *([node.module] if node.module else [])])

    def segment(self, node: ast.AST) -> str | None:
        line, col, end_line, end_col = self.span(node)
        lines = [text.encode("utf-8") for text in self.lines[line - 1 : end_line]]
        if not lines:
            return None
        if len(lines) == 1:
            return lines[0][col:end_col].decode("utf-8")
        return b"\n".join([lines[0][col:], *lines[1:-1], lines[-1][:end_col]]).decode("utf-8")


def _ignored(finding: Finding, lines: list[str]) -> bool:
    if not 0 < finding.line <= len(lines):
        return False
    match = _IGNORE_COMMENT.search(lines[finding.line - 1])
    if match is None:
        return False
    codes = match.group(1)
    return codes is None or finding.code in {c.strip() for c in codes.split(",")}


def _selected(code: str, select: Iterable[str] | None, ignore: Iterable[str] | None) -> bool:
    if select is not None and not any(code.startswith(prefix) for prefix in select):
        return False
    return not (ignore is not None and any(code.startswith(prefix) for prefix in ignore))


def lint_source(
    source: str,
    path: str = "<string>",
    *,
    select: Iterable[str] | None = None,
    ignore: Iterable[str] | None = None,
) -> list[Finding]:
    """The findings in ``source`` (the text of the file at ``path``), in order of position.

    ``select``/``ignore`` are code prefixes (``"CK1"``, ``"CK301"``); a line with a
    ``# ckptkeys: ignore`` (or ``# ckptkeys: ignore[CK101]``) comment reports nothing (or
    nothing of those codes).
    """
    select, ignore = (list(select) if select is not None else None), (list(ignore) if ignore is not None else None)
    linter = _Linter(source, path)
    return [f for f in linter.run() if _selected(f.code, select, ignore) and not _ignored(f, linter.lines)]


# -- fixing -------------------------------------------------------------------------------------


def fix_source(source: str, findings: Iterable[Finding]) -> tuple[str, list[Finding]]:
    """``source`` with every fixable finding rewritten, and the findings that were fixed.

    A replacement is only made where the text at the finding's position is exactly the
    literal (or import) the finding is about; the ``from ckptkeys import ...`` the rewrites
    need is added before the module's first top-level import (after its docstring and
    ``__future__`` imports). Formatting and comments elsewhere are untouched.
    """
    lines = _physical_lines(source)
    encoded = [line.encode("utf-8") for line in lines]
    edits: list[tuple[int, int, int, int, str, Finding]] = []
    for finding in findings:
        if finding.replacement is None or finding._span is None:
            continue
        line, col, end_line, end_col = finding._span
        if not _matches(encoded, finding):
            continue
        edits.append((line, col, end_line, end_col, finding.replacement, finding))
    if not edits:
        return source, []
    tree = ast.parse(source)
    bound = _module_names(tree)
    needed = sorted({name for *_, f in edits for name in f.imports})
    clashing = {name for name in needed if bound.get(name, "ckptkeys") != "ckptkeys"}
    edits = [e for e in edits if not set(e[5].imports) & clashing]
    needed = [name for name in needed if name not in clashing and name not in bound]
    edits.sort(key=lambda e: (e[0], e[1]), reverse=True)
    previous: tuple[int, int] | None = None
    applied = []
    for line, col, end_line, end_col, text, finding in edits:
        if previous is not None and (end_line, end_col) > previous:
            continue  # overlapping edits (never produced today): keep the later one
        first, last = encoded[line - 1], encoded[end_line - 1]
        new = first[:col] + text.encode("utf-8") + last[end_col:]
        encoded[line - 1 : end_line] = [new]
        previous = (line, col)
        applied.append(finding)
    result = b"".join(encoded).decode("utf-8")
    if needed and applied:
        result = _add_import(result, needed)
    applied.reverse()
    return result, applied


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
    if finding.code == "CK301":
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


def _add_import(source: str, names: list[str]) -> str:
    """``source`` with ``from ckptkeys import names`` before its first statement after the
    docstring and ``__future__`` imports (comments, a shebang and a coding line stay above)."""
    tree = ast.parse(source)
    lines = _physical_lines(source)
    line = len(lines)  # insert before this 0-based line
    for node in tree.body:
        is_docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and node is tree.body[0]
        is_future = isinstance(node, ast.ImportFrom) and node.module == "__future__"
        if not (is_docstring or is_future):
            decorators = getattr(node, "decorator_list", [])
            line = min([node.lineno, *(d.lineno for d in decorators)]) - 1
            before_code = not isinstance(node, (ast.Import, ast.ImportFrom))
            break
    else:
        before_code = False
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    # A blank line keeps the new import apart from code that follows it directly.
    statement = f"from ckptkeys import {', '.join(names)}{newline}" + (newline if before_code else "")
    if line and line <= len(lines) and not lines[line - 1].endswith(("\n", "\r")):
        lines[line - 1] += newline
    return "".join([*lines[:line], statement, *lines[line:]])


# -- files --------------------------------------------------------------------------------------


def iter_python_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[str]:
    """Every ``.py`` file under ``paths`` (files as given; folders walked, sorted, skipping
    hidden folders, ``__pycache__``, ``node_modules`` and ``site-packages``)."""
    for path in paths:
        path = os.fspath(path)
        if not os.path.isdir(path):
            yield path
            continue
        for folder, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIPPED_DIRS)
            for name in sorted(files):
                if name.endswith(".py"):
                    yield os.path.normpath(os.path.join(folder, name))
