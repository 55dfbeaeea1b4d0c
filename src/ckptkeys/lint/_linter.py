"""The walk: the syntax tree of one file read for key candidates, built names and imports, and the findings.

:class:`_Linter` walks the tree once, notes the candidates (a registry value in a key position or
a collection) and the evidence around them (file names, calls, other formats' keys, ``if``
branches without DeepSpeed), then reports what the rules of ``_evidence`` let through.
:func:`lint_source` runs it with ``--select``/``--ignore``, ``# noqa`` comments read as ruff reads
them (:func:`noqa_codes`) and ``# ckptkeys: ignore`` comments.
"""

from __future__ import annotations

import ast
import io
import os
import re
import tokenize
from collections.abc import Iterator, Mapping

from ..naming import parse
from ._codes import Finding, selected
from ._evidence import (
    BUILDERS,
    CONSTANT_NAME,
    CONSTANTS_MODULE,
    DS_FILE_TEXT,
    DS_NAME_FUNCTIONS,
    LATEST_FILE,
    LATEST_NAMES,
    OTHER_FORMAT_KEYS,
    OTHER_NAME,
    PARSING_CALLS,
    PATH_CALLS,
    TAG_PREFIX,
    Candidate,
    built_template,
    call_for,
    common_word_evidence,
    is_ds_file_name,
    key_literal,
    naming_members,
    ranked_members,
    registry_index,
)
from ._files import physical_lines
from ._paths import LOADING, TOP_GROUP, Origin, PathReader, file_name, level_group
from ._paths import dotted as _dotted

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Final

    # dotted name of a call -> (where its function is defined, "path:line"; what it returns)
    Imported = Mapping[str, tuple[str, Origin]]
    Passed = Callable[[ast.FunctionDef | ast.AsyncFunctionDef, str], Origin | None]

# Methods whose first argument is a key, and those among them that store it in the mapping.
_KEY_METHODS: Final = frozenset({"get", "pop", "setdefault"})
_STORING_METHODS: Final = frozenset({"setdefault"})
_PATH_PIECES: Final = frozenset({"join", "Path", "PurePath", "PosixPath", "joinpath"})
_GLOB: Final = re.compile(r"[*?]|\[[^\]]*\]")
# The keys of DeepSpeed's model-states top level that every PyTorch checkpoint has too (a model,
# an optimizer, a scheduler): the others (`mp_world_size`, `dp_world_size`, `global_samples`,
# `skipped_steps`...) are each a word of configs or arguments, but two of them read from one
# loaded checkpoint are DeepSpeed's layout.
_EVERY_CHECKPOINT: Final = frozenset({"module", "optimizer", "lr_scheduler"})
_IGNORE_COMMENT: Final = re.compile(r"#\s*ckptkeys:\s*ignore(?:\[([A-Z0-9,\s]+)\])?")


# -- finding ------------------------------------------------------------------------------------


def _is_key_name(node: ast.AST) -> bool:
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
    return name is not None and (name.lower() == "k" or "key" in name.lower())


def _is_literal_type(node: ast.AST) -> bool:
    """``Literal`` or ``typing.Literal``: ``Literal["module"]`` is a type, not a look-up."""
    return (isinstance(node, ast.Name) and node.id == "Literal") or (
        isinstance(node, ast.Attribute) and node.attr == "Literal"
    )


def _call_name(node: ast.AST) -> str | None:
    """``join`` for ``os.path.join(...)``, ``glob`` for ``glob(...)``: the called name."""
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Name):
            return func.id
        if isinstance(func, ast.Attribute):
            return func.attr
    return None


def _looked_up(node: ast.AST) -> tuple[str, ast.AST] | None:
    """``(key, mapping)`` of ``mapping["key"]`` or ``mapping.get("key")``; ``None`` for anything else."""
    if isinstance(node, ast.Subscript):
        key = key_literal(node.slice)
        return (str(key.value), node.value) if key is not None else None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _KEY_METHODS:
        key = key_literal(node.args[0]) if node.args else None
        return (str(key.value), node.func.value) if key is not None else None
    return None


def _origin(reader: PathReader, node: ast.AST) -> Origin | None:
    try:
        return reader.origin(node)
    except RecursionError:  # a chain of names or path pieces deeper than the stack: nothing known
        return None


def _unparse(node: ast.AST) -> str:
    try:
        return ast.unparse(node)
    except (ValueError, RecursionError):  # pragma: no cover - ast.unparse of a parsed tree
        return ""


FUNCTIONS: Final = (ast.FunctionDef, ast.AsyncFunctionDef)


class _Returned(Mapping[str, Origin]):
    """What the helpers of other modules return, by the name they are called by: the ``known`` of
    the path reader, so that what they return is read as a local helper's (project mode)."""

    def __init__(self, imported: Imported) -> None:
        self.imported = imported

    def __getitem__(self, name: str) -> Origin:
        return self.imported[name][1]

    def __iter__(self) -> Iterator[str]:
        return iter(self.imported)

    def __len__(self) -> int:
        return len(self.imported)


# -- tests of DeepSpeed -------------------------------------------------------------------------

_OFF_NAME: Final = re.compile(r"(?:no|not|without|disable|disabled|skip)_?deepspeed", re.IGNORECASE)


def _deepspeed_test(test: ast.AST) -> tuple[bool, bool, bool, bool]:
    """What a test's truth says of DeepSpeed: (true => on, true => off, false => on, false => off).

    A test that mentions DeepSpeed (``args.deepspeed``, ``is_deepspeed_zero3_enabled()``,
    ``strategy == "deepspeed"``) is on where true and off where false; ``not``, ``is None``,
    ``== False``, ``!=`` and names such as ``no_deepspeed`` turn it round; ``and``/``or`` combine
    their parts as logic does: ``args.deepspeed and x`` true means on, false means nothing
    (``x`` may be false); ``args.deepspeed or x`` true means nothing, false means off. Any other
    test says nothing.
    """
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        on, off, false_on, false_off = _deepspeed_test(test.operand)
        return false_on, false_off, on, off
    if isinstance(test, ast.BoolOp):
        parts = [_deepspeed_test(value) for value in test.values]
        if isinstance(test.op, ast.And):  # true: every part true; false: one of them false
            return (
                any(p[0] for p in parts),
                any(p[1] for p in parts),
                all(p[2] for p in parts),
                all(p[3] for p in parts),
            )
        return (  # or: true where one part is true; false where all are false
            all(p[0] for p in parts),
            all(p[1] for p in parts),
            any(p[2] for p in parts),
            any(p[3] for p in parts),
        )
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        op, right = test.ops[0], test.comparators[0]
        if isinstance(right, ast.Constant) and (right.value is None or right.value is False):
            if isinstance(op, (ast.Is, ast.Eq)):  # `args.deepspeed is None`, `== False`: its negation
                return _deepspeed_test(ast.UnaryOp(ast.Not(), test.left))
            if isinstance(op, (ast.IsNot, ast.NotEq)):  # `is not None`: the test itself
                return _deepspeed_test(test.left)
        if isinstance(op, (ast.NotEq, ast.NotIn, ast.IsNot)):  # `strategy != "deepspeed"`
            on, off, false_on, false_off = _deepspeed_test(ast.Compare(test.left, [ast.Eq()], [right]))
            return false_on, false_off, on, off
    text = _unparse(test).lower()
    if "deepspeed" not in text:
        return False, False, False, False
    if _OFF_NAME.search(text):  # `args.no_deepspeed`: true where DeepSpeed is off
        return False, True, True, False
    return True, False, False, True


class _Linter:
    def __init__(
        self,
        source: str,
        path: str,
        imported: Imported | None = None,
        tree: ast.Module | None = None,
        passed: Passed | None = None,
    ) -> None:
        self.source = source
        self.path = path
        self.imported = imported  # the helpers of other modules of the project (lint_project)
        self.passed = passed  # what the project's other modules pass its functions' parameters
        self.given_tree = tree  # the tree of source, where lint_project parsed it already
        self.lines = [line.rstrip("\r\n") for line in physical_lines(source)]
        self.findings: list[Finding] = []
        self.parents: dict[int, ast.AST] = {}
        # id of a test -> whether its being true, and false, shows DeepSpeed off (_deepspeed_test)
        self.deepspeed_tests: dict[int, tuple[bool, bool]] = {}
        self.other_format: dict[int, str] = {}  # scope id -> a key of another format used there
        self.built: set[int] = set()  # ids of string-building nodes (and their literal parts) already judged
        self.tag_scopes: set[int] = set()  # ids of scopes that build or parse a tag by hand

    def column(self, line: int, byte_col: int) -> int:
        if 0 < line <= len(self.lines):
            return len(self.lines[line - 1].encode("utf-8")[:byte_col].decode("utf-8", "replace")) + 1
        return byte_col + 1

    def span(self, node: ast.AST) -> tuple[int, int, int, int]:
        start_line, start_col = node.lineno, node.col_offset  # type: ignore[attr-defined]
        end_line, end_col = node.end_lineno, node.end_col_offset  # type: ignore[attr-defined]
        return start_line, start_col, end_line or start_line, end_col if end_col is not None else start_col

    def add(self, node: ast.AST, code: str, message: str, **extra: object) -> None:
        line, col, end_line, end_col = span = self.span(node)
        where = {"end_line": end_line, "end_col": self.column(end_line, end_col), "_span": span}
        self.findings.append(
            Finding(self.path, line, self.column(line, col), code, message, **where, **extra)  # type: ignore[arg-type]
        )

    # -- context ------------------------------------------------------------------------------

    def scope(self, node: ast.AST) -> ast.AST:
        """The innermost function holding ``node``, or the module."""
        parent = self.parents.get(id(node))
        while parent is not None and not isinstance(parent, FUNCTIONS):
            parent = self.parents.get(id(parent))
        return parent if parent is not None else self.tree

    def outside_deepspeed(self, node: ast.AST) -> bool:
        """Only reached without DeepSpeed: in the body of ``if not args.deepspeed:``, the ``else:`` of
        ``if args.deepspeed:`` (and its ``elif``), the same branches of a conditional expression, or
        an operand of ``and``/``or`` evaluated only so.

        Each test is judged by its parts (:func:`_deepspeed_test`): the ``else:`` of ``if
        args.deepspeed and not args.no_pipeline_parallel:`` also runs with DeepSpeed, so it is not
        outside; nor is the body of ``if not args.deepspeed or x:``.
        """
        child, parent = node, self.parents.get(id(node))
        while parent is not None:
            kind = type(parent)
            if kind is ast.If or kind is ast.IfExp:
                test = parent.test  # type: ignore[attr-defined]
                if child is not test:
                    body = parent.body  # type: ignore[attr-defined]
                    in_body = child is body if kind is ast.IfExp else any(child is n for n in body)
                    if self.test_reading(test)[0 if in_body else 1]:
                        return True
            elif kind is ast.BoolOp:
                # `a and b`: b is evaluated only where a is true; `a or b`: only where a is false
                index = 0 if isinstance(parent.op, ast.And) else 1  # type: ignore[attr-defined]
                for value in parent.values:  # type: ignore[attr-defined]
                    if value is child:
                        break
                    if self.test_reading(value)[index]:
                        return True
            child, parent = parent, self.parents.get(id(parent))
        return False

    def test_reading(self, test: ast.AST) -> tuple[bool, bool]:
        """Whether ``test`` being true, and being false, shows DeepSpeed is off (cached per test)."""
        reading = self.deepspeed_tests.get(id(test))
        if reading is None:
            truth = _deepspeed_test(test)
            reading = self.deepspeed_tests[id(test)] = (truth[1], truth[3])
        return reading

    def assigned_name(self, node: ast.AST) -> str:
        """The name a display is assigned, passed or returned as: ``x = {...}``, ``f(x={...})``."""
        parent = self.parents.get(id(node))
        if isinstance(parent, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = parent.targets if isinstance(parent, ast.Assign) else [parent.target]
            return " ".join(_unparse(t) for t in targets)
        if isinstance(parent, ast.keyword):
            return parent.arg or ""
        if isinstance(parent, ast.Dict):  # a nested dict: the key it is stored under
            for key, value in zip(parent.keys, parent.values, strict=True):
                if value is node and isinstance(key, ast.Constant):
                    return str(key.value)
        return ""

    # -- the walk -----------------------------------------------------------------------------

    def run(self) -> list[Finding]:
        index = registry_index()
        if not index.prefilter.search(self.source):
            return []
        try:
            tree = self.given_tree if self.given_tree is not None else ast.parse(self.source, self.path)
        except (SyntaxError, ValueError) as error:  # ValueError: null bytes
            line = getattr(error, "lineno", None) or 1
            self.findings.append(Finding(self.path, line, getattr(error, "offset", None) or 1, "CK001", f"{error}"))
            return self.findings
        self.tree = tree
        self.path_reader: PathReader | None = None
        self.loads_deepspeed: bool | None = None  # (None: not read yet)
        self.saved_displays: dict[int, Origin] | None = None
        self.used_names: dict[int, set[str]] = {}  # module-level statement id -> the names it reads
        self.top_evidence: dict[int, str] = {}  # module-level statement id -> why it is about DeepSpeed files
        parents = self.parents
        candidates: list[Candidate] = []
        functions: list[ast.FunctionDef | ast.AsyncFunctionDef] = []
        members = index.members
        # scope id -> why its code is about DeepSpeed checkpoint files (a file name, a call)
        self.file_evidence: dict[int, str] = {}
        calls: list[tuple[ast.AST, str]] = []
        nodes: list[ast.AST] = [tree]
        for node in nodes:  # breadth first, as ast.walk; parents known before their children
            for child in ast.iter_child_nodes(node):
                parents[id(child)] = node
                nodes.append(child)
            kind = type(node)
            literal: ast.Constant | None = None
            holder: ast.AST | None = None
            if kind is ast.Subscript:
                if not _is_literal_type(node.value):  # type: ignore[attr-defined]
                    literal = key_literal(node.slice)  # type: ignore[attr-defined]
                code, store, holder = "CK101", isinstance(node.ctx, ast.Store), node.value  # type: ignore[attr-defined]
            elif kind is ast.Call:
                func = node.func  # type: ignore[attr-defined]
                if isinstance(func, ast.Attribute) and func.attr in _KEY_METHODS and node.args:  # type: ignore[attr-defined]
                    literal = key_literal(node.args[0])  # type: ignore[attr-defined]
                    code, store, holder = "CK102", func.attr in _STORING_METHODS, func.value
                for keyword in node.keywords:  # type: ignore[attr-defined]
                    found = key_literal(keyword.value) if keyword.arg == "key" else None
                    if found is not None and found.value in members:
                        candidates.append(Candidate(found, found.value, "CK106", True, self.scope(found), ""))
                name = _call_name(node)
                if name is not None:
                    calls.append((node, name))
                if func.__class__ is ast.Attribute and func.attr == "format":
                    self.built_string(node)
            elif kind is ast.Compare:
                left, ops, right = node.left, node.ops, node.comparators  # type: ignore[attr-defined]
                if len(ops) == 1 and isinstance(ops[0], (ast.In, ast.NotIn)):
                    literal, code, store, holder = key_literal(left), "CK103", False, right[0]
                elif len(ops) == 1 and isinstance(ops[0], (ast.Eq, ast.NotEq)):
                    if _is_key_name(right[0]):
                        literal, code, store = key_literal(left), "CK105", False
                    elif _is_key_name(left):
                        literal, code, store = key_literal(right[0]), "CK105", False
            elif kind is ast.Dict:
                name = self.assigned_name(node)
                for key in node.keys:  # type: ignore[attr-defined]
                    found = key_literal(key)
                    if found is not None and found.value in OTHER_FORMAT_KEYS:
                        self.other_format_key(found)
                    if found is not None and found.value in members:
                        candidates.append(Candidate(found, found.value, "CK104", True, self.scope(found), name, node))
            elif kind is ast.List or kind is ast.Tuple or kind is ast.Set:
                self.collection(node, candidates)
            elif kind is ast.JoinedStr or kind is ast.BinOp:
                self.built_string(node)
            elif kind is ast.Constant:
                value = node.value  # type: ignore[attr-defined]
                if type(value) is str:
                    self.literal(node, value)  # type: ignore[arg-type]
            elif kind is ast.ImportFrom or kind is ast.Import:
                self.constants_import(node)
            elif kind is ast.Assign:
                self.copied_constant(node)  # type: ignore[arg-type]
            elif kind is ast.FunctionDef or kind is ast.AsyncFunctionDef:
                functions.append(node)  # type: ignore[arg-type]
            if literal is not None and literal.value in OTHER_FORMAT_KEYS:
                self.other_format_key(literal)
            if literal is not None and literal.value in members:
                where = _unparse(holder) if holder is not None else ""
                candidates.append(
                    Candidate(literal, literal.value, code, store, self.scope(literal), where, expression=holder)
                )
        # Functions of this file that return or build a DeepSpeed file name, and the scopes that call them.
        self.functions, self.calls = functions, calls
        self.loads = [call for call, name in calls if name in LOADING and call.args]  # type: ignore[attr-defined]
        named = {node.name: why for node in functions if (why := self.file_evidence.get(id(node)))}
        # (helpers of other modules are looked up only where a key may need them: resolving costs)
        keyed = self.keyed = {id(c.scope) for c in candidates} if self.imported is not None else set()
        for call, name in calls:
            scope = self.scope(call)
            if id(scope) in self.file_evidence:
                continue
            if name in DS_NAME_FUNCTIONS:
                why = f"calls {name}(), which names a DeepSpeed checkpoint file"
                if scope is self.tree:
                    self.top_evidence.setdefault(id(self.top_statement(call)), why)
                else:
                    self.file_evidence[id(scope)] = why
            elif name in named and scope is not self.tree:
                self.file_evidence[id(scope)] = f"calls {name}(), which {named[name]}"
            elif id(scope) in keyed:
                why = self.imported_call(call)
                if why:
                    self.file_evidence[id(scope)] = why
        for call, _name in calls:  # 'latest' as an argument beside a tag built by hand
            if id(self.scope(call)) in self.tag_scopes:
                for argument in call.args:  # type: ignore[attr-defined]
                    if isinstance(argument, ast.Constant) and argument.value in LATEST_NAMES:
                        self.latest(argument, "passed beside a checkpoint tag built by hand")
        self.keys(candidates)
        self.findings.sort(key=lambda f: (f.line, f.col, f.code))
        return self.findings

    def imported_call(self, call: ast.AST) -> str:
        """Why a call of a helper of another module (``get_checkpoint_name(d, it)``,
        ``U.get_name()``) shows the code around it is about DeepSpeed files; "" if it is none."""
        name = _dotted(call.func)  # type: ignore[attr-defined]
        helper = self.imported.get(name) if self.imported is not None and name is not None else None
        if helper is None:
            return ""
        where, origin = helper
        what = "a loaded DeepSpeed checkpoint file" if origin.loaded else "a DeepSpeed checkpoint file name"
        parent = self.parents.get(id(call))
        if isinstance(parent, ast.Call) and _call_name(parent) == "load" and any(call is a for a in parent.args):
            return f"loads the file named by {name} ({where}), {what}"
        return f"calls {name}() ({where}), which returns {what}"

    def other_format_key(self, node: ast.Constant) -> None:
        """A key only another format writes: nothing beside it in its function is DeepSpeed's."""
        if not self.outside_deepspeed(node):  # (Megatron's keys in `if not args.deepspeed:` are expected)
            self.other_format.setdefault(id(self.scope(node)), str(node.value))

    def note_file_name(self, node: ast.AST, text: str) -> None:
        scope = self.scope(node)
        why = f"names the DeepSpeed file {text!r}"
        if scope is self.tree:
            # At the module's top level a file name is evidence for its own statement only: not
            # for a config display elsewhere in the module (what is loaded from it is followed).
            self.top_evidence.setdefault(id(self.top_statement(node)), why)
        else:
            self.file_evidence.setdefault(id(scope), why)

    def statement_evidence(self, statement: ast.AST) -> str:
        """Why a statement of the module's top level is about DeepSpeed files: it names one, or it
        binds a name a statement that names one uses (``state = {...}`` then ``torch.save(state,
        f"mp_rank_{r:02d}_model_states.pt")``); "" if neither."""
        why = self.top_evidence.get(id(statement), "")
        if why or not isinstance(statement, (ast.Assign, ast.AnnAssign)):
            return why
        targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
        bound = {t.id for t in targets if isinstance(t, ast.Name)}
        for other in self.tree.body:
            reason = self.top_evidence.get(id(other))
            if reason and other is not statement:
                used = self.used_names.get(id(other))
                if used is None:
                    used = {n.id for n in ast.walk(other) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
                    self.used_names[id(other)] = used
                if bound & used:
                    return reason
        return ""

    def top_statement(self, node: ast.AST) -> ast.AST:
        """The statement of the module's body that holds ``node``."""
        child, parent = node, self.parents.get(id(node))
        while parent is not None and parent is not self.tree:
            child, parent = parent, self.parents.get(id(parent))
        return child

    def paths(self) -> PathReader | None:
        """The reader of paths, or ``None`` where no ``load`` call of the module loads a DeepSpeed
        file (then nothing is loaded from one: the keys' expressions are not followed at all),
        unless other modules of the project may pass its functions one (``passed``)."""
        if self.loads_deepspeed is None:
            reader = self.reader()
            self.loads_deepspeed = any(_origin(reader, call) is not None for call in self.loads) or any(
                self.imported_loads(call) for call, _ in self.calls if id(self.scope(call)) in self.keyed
            )
        # (in project mode a parameter may be given a loaded DeepSpeed file by another module's call)
        return self.path_reader if self.loads_deepspeed or self.passed is not None else None

    def imported_loads(self, call: ast.AST) -> bool:
        """Whether ``call`` calls a helper of another module that returns a loaded DeepSpeed file."""
        name = _dotted(call.func) if isinstance(call, ast.Call) and self.imported is not None else None
        helper = self.imported.get(name) if self.imported is not None and name is not None else None
        return helper is not None and helper[1].loaded

    def reader(self) -> PathReader:
        if self.path_reader is None:
            known = _Returned(self.imported) if self.imported is not None else None
            self.path_reader = PathReader(
                self.tree, known, parents=self.parents, functions=self.functions, calls=self.calls, passed=self.passed
            )
        return self.path_reader

    def saved(self) -> dict[int, Origin]:
        """The dict displays saved as a DeepSpeed file (display id -> the file): ``torch.save({...},
        path)``, or ``state = {...}`` then ``torch.save(state, path)``, the path a DeepSpeed file's."""
        if self.saved_displays is None:
            self.saved_displays = {}
            for call, name in self.calls:
                if name != "save" or not isinstance(call, ast.Call):
                    continue
                given = {k.arg: k.value for k in call.keywords}
                saved = call.args[0] if call.args else given.get("obj")
                path = call.args[1] if len(call.args) > 1 else given.get("f")
                origin = _origin(self.reader(), path) if saved is not None and path is not None else None
                if origin is None or origin.loaded or saved is None:
                    continue
                displays = [saved] if isinstance(saved, ast.Dict) else []
                if isinstance(saved, ast.Name):
                    for scope in self.reader().scopes(saved):
                        bound = self.reader().bindings(scope).get(saved.id, [])
                        displays += [value for value in bound if isinstance(value, ast.Dict)]
                for display in displays:
                    self.saved_displays.setdefault(id(display), Origin(True, origin.kind, origin.text))
        return self.saved_displays

    def bound(self, name: ast.AST, scope: ast.AST) -> ast.AST | None:
        """What the name ``name`` is bound to in ``scope``, where it is bound once; else ``None``."""
        if not isinstance(name, ast.Name):
            return None
        if self.path_reader is None:
            self.paths()
        assert self.path_reader is not None
        values = self.path_reader.bindings(scope).get(name.id, [])
        return values[0] if len(values) == 1 else None

    def loaded(self, candidate: Candidate) -> Origin | None:
        """What ``torch.load`` returned for a DeepSpeed file, where the candidate is a key read from it
        at a level that holds that key (the file's top level where its kind is not known)."""
        if candidate.code == "CK104" and candidate.group is not None and self.saved().get(id(candidate.group)):
            origin: Origin | None = self.saved()[id(candidate.group)]  # a key of a display saved as the file
        else:
            reader = self.paths() if candidate.expression is not None else None
            if reader is None or candidate.expression is None:
                return None
            origin = _origin(reader, candidate.expression)
        if origin is None or not origin.loaded:
            return None
        if origin.kind is None or origin.kind not in TOP_GROUP:
            return origin if not origin.keys and origin.kind is None else None
        group = origin.group()
        return origin if group and group in registry_index().group_of_value[candidate.value] else None

    def level_members(
        self, candidate: Candidate, origin: Origin | None, names: tuple[str, ...], unambiguous: bool
    ) -> tuple[tuple[str, ...], bool, bool]:
        """The members ranked by the dict level the key is read at (docs/migration.md), where that
        says which: ``optim["optimizer_state_dict"]`` of an optimizer-states file is OptimFileKeys."""
        if len(names) < 2 or candidate.code not in ("CK101", "CK102", "CK103", "CK104"):
            return names, unambiguous, False
        if candidate.code == "CK104" and origin is None:
            return names, unambiguous, False  # a display: its level known only where it is saved as a file
        chain: tuple[str, ...] = ()
        kind = None
        if origin is not None:
            chain, kind = origin.keys, origin.kind
        else:
            expression = candidate.expression
            while expression is not None:  # optim["a"]["b"], x = optim["a"]; x["b"]: the literal keys above it
                key = _looked_up(expression)
                if key is None:
                    expression = self.bound(expression, candidate.scope)
                    if expression is None or _looked_up(expression) is None:
                        break
                    continue
                chain = (key[0], *chain)
                expression = key[1]
        below = None  # the literal key read from what it looks up: d["k"]["below"], d.get("k").get("below")
        parent = self.parents.get(id(candidate.node))
        outer = self.parents.get(id(parent)) if parent is not None else None
        if isinstance(outer, ast.Attribute) and outer.value is parent:
            outer = self.parents.get(id(outer))
        found = _looked_up(outer) if outer is not None else None
        if found is not None and found[1] is parent:
            below = found[0]
        elif isinstance(outer, ast.Assign) and outer.value is parent and len(outer.targets) == 1:
            below = self.read_below(outer.targets[0], candidate.scope)  # x = d["k"]; x["below"]
        group = level_group(candidate.value, chain, kind, below)
        if group is None:
            return names, unambiguous, False
        first = [n for n in names if n.split(".")[0] == group]
        return (*first, *(n for n in names if n not in first)), True, True

    def read_below(self, target: ast.AST, scope: ast.AST) -> str | None:
        """The first literal key read from the name ``target`` in ``scope``, where the name is bound once."""
        if not isinstance(target, ast.Name) or self.bound(target, scope) is None:
            return None
        for node in ast.walk(scope):
            found = _looked_up(node)
            if (
                found is not None
                and isinstance(found[1], ast.Name)
                and found[1].id == target.id
                and registry_index().group_of_value.get(found[0])
            ):
                return found[0]
        return None

    # -- keys ---------------------------------------------------------------------------------

    def collection(self, node: ast.AST, candidates: list[Candidate]) -> None:
        """A list, tuple or set of at least two strings, two of them checkpoint keys."""
        elements = node.elts  # type: ignore[attr-defined]
        index = registry_index()
        if len(elements) < 2 or not all(key_literal(e) for e in elements):
            return
        keys = [e for e in elements if e.value in index.members and e.value not in index.naming_only]
        if len(keys) < 2:
            return
        parent = self.parents.get(id(node))
        if isinstance(parent, ast.Subscript) and parent.slice is node:
            return  # d["a", "b"]: one tuple key, not a collection
        name = self.assigned_name(node)
        for element in keys:
            candidates.append(Candidate(element, element.value, "CK107", True, self.scope(element), name, node))

    def keys(self, candidates: list[Candidate]) -> None:
        index = registry_index()
        kept: list[Candidate] = []
        distinctive: dict[int, str] = {}  # scope id -> a distinctive key used there
        origins: dict[int, Origin] = {}  # candidate id -> the DeepSpeed file it is a key of, loaded
        for candidate in candidates:
            if candidate.value in index.naming_only:
                continue  # "global_step", "latest", "mp_rank_": file-name pieces, not keys
            origin = self.loaded(candidate)
            if origin is not None:
                origins[id(candidate)] = origin
            # A mapping loaded from a DeepSpeed file is one, whatever its expression mentions
            # (`args`); a dict saved as one is one in any branch: code run without DeepSpeed that
            # writes `mp_rank_00_model_states.pt` writes DeepSpeed's layout, for DeepSpeed to read.
            saved = origin is not None and candidate.code == "CK104"
            if (not saved and self.outside_deepspeed(candidate.node)) or (
                origin is None and OTHER_NAME.search(candidate.holder)
            ):
                continue
            if id(candidate.scope) in self.other_format:
                continue  # beside "model" or "first_closure_call_this_step": Megatron's own state
            kept.append(candidate)
            if not index.common(candidate.value):
                distinctive.setdefault(id(candidate.scope), candidate.value)
        by_group: dict[int, list[Candidate]] = {}
        for candidate in kept:
            if candidate.group is not None:
                by_group.setdefault(id(candidate.group), []).append(candidate)
        by_scope: dict[int, list[str]] = {}
        for candidate in kept:
            by_scope.setdefault(id(candidate.scope), []).append(candidate.value)
        beside = self.model_states_pairs(kept)
        reported: list[tuple[Candidate, str, tuple[str, ...], str | None, str]] = []
        for candidate in kept:
            value = candidate.value
            if not index.common(value):
                evidence = f"{value!r} is a DeepSpeed checkpoint key no other format uses"
                if candidate.code == "CK107":
                    evidence = f"a collection of DeepSpeed checkpoint keys, with {value!r}"
            else:
                file_evidence = self.file_evidence
                if candidate.scope is self.tree:  # the module's top level: its own statement's
                    why = self.statement_evidence(self.top_statement(candidate.node))
                    file_evidence = {id(self.tree): why} if why else {}
                evidence = common_word_evidence(candidate, distinctive, by_group, file_evidence, self.tree)
                origin = origins.get(id(candidate))
                if not evidence and id(candidate) in beside:
                    evidence = f"a common word, read with {beside[id(candidate)]!r} from what torch.load() returned:"
                    evidence += " two keys of DeepSpeed's model-states top level"
                if not evidence and origin is not None and candidate.code == "CK104":
                    evidence = f"a common word, a key of a dict saved as the DeepSpeed file {origin.text!r}"
                elif not evidence and origin is not None:
                    evidence = "a common word, read from what torch.load() returned for the DeepSpeed file "
                    evidence += repr(origin.text)
                    if origin.keys:
                        evidence += f" under {']['.join(map(repr, origin.keys)).join('[]')}"
                    if origin.via:
                        evidence += f", a path {origin.via} passes"
                if not evidence:
                    continue
            around = [v for v in by_scope[id(candidate.scope)] if v != value]
            names, unambiguous = ranked_members(value, around)
            names, unambiguous, by_level = self.level_members(candidate, origins.get(id(candidate)), names, unambiguous)
            replacement = names[0] + (".value" if candidate.store else "") if unambiguous else None
            if len(names) == 1:
                use = f"use {names[0]}"
            elif by_level:
                use = f"use {names[0]} (by the dict level it is read at; or {', '.join(names[1:])})"
            elif unambiguous:
                use = f"use {names[0]} (by the keys around it; or {', '.join(names[1:])})"
            else:
                use = f"use one of {', '.join(names)}"
            reported.append((candidate, evidence, names, replacement, use))
        # A dict display or collection is rewritten whole or not at all: never half literal.
        unfixable: dict[int, str] = {}
        for candidate, _evidence, _names, replacement, _use in reported:
            if candidate.group is not None and replacement is None:
                unfixable.setdefault(id(candidate.group), candidate.value)
        for candidate, evidence, names, replacement, use in reported:
            value = candidate.value
            blocker = unfixable.get(id(candidate.group)) if candidate.group is not None else None
            if candidate.store and replacement:
                use += "; .value keeps a plain str in what is saved"
            if blocker is not None and replacement is not None:
                replacement = None
                use += f" (not fixed: {blocker!r} beside it is ambiguous, and a half-rewritten display would mix"
                use += " spellings)"
            what = "checkpoint keys" if candidate.code == "CK107" else "checkpoint key"
            self.add(
                candidate.node,
                candidate.code,
                f"{value!r} is {'one of a collection of ' if candidate.code == 'CK107' else 'a '}{what}: {use}",
                value=value,
                candidates=names,
                replacement=replacement,
                imports=(names[0].split(".")[0],) if replacement else (),
                evidence=evidence,
            )

    def model_states_pairs(self, kept: list[Candidate]) -> dict[int, str]:
        """The keys read from a mapping ``torch.load`` returned (a name bound once to a
        ``torch.load`` call, whatever its path) beside another key of DeepSpeed's model-states top level, neither
        of them one every checkpoint has (``_EVERY_CHECKPOINT``): candidate id -> that other key.
        ``sd = torch.load(path); sd["mp_world_size"] = 1; sd["dp_world_size"] = 1`` (GPT-NeoX)."""
        index = registry_index()
        read: dict[tuple[int, str], list[Candidate]] = {}
        for candidate in kept:
            if (
                candidate.code in ("CK101", "CK102", "CK103")
                and isinstance(candidate.expression, ast.Name)
                and candidate.value not in _EVERY_CHECKPOINT
                and index.group_of_value.get(candidate.value) == {"ModuleKeys"}
            ):
                read.setdefault((id(candidate.scope), candidate.expression.id), []).append(candidate)
        found: dict[int, str] = {}
        for same in read.values():
            values = {c.value for c in same}
            if len(values) < 2:
                continue
            bound = self.bound(same[0].expression, same[0].scope)  # type: ignore[arg-type]
            if not (isinstance(bound, ast.Call) and _dotted(bound.func) == "torch.load"):
                continue  # (json.load, yaml.load: a config's keys)
            for candidate in same:
                found[id(candidate)] = min(values - {candidate.value})
        return found

    # -- file names and tags ------------------------------------------------------------------

    def built_string(self, node: ast.AST) -> None:
        if id(node) in self.built:
            return
        template = built_template(node)
        if template is None or isinstance(node, ast.Constant):
            return
        for inner in ast.walk(node):  # a + b + c and the f-strings in it: one finding, for the whole
            if inner is not node and isinstance(inner, (ast.BinOp, ast.JoinedStr, ast.Constant)):
                self.built.add(id(inner))
        if "\0" not in template or any(c.isspace() for c in template):
            return  # no placeholder, or a sentence (a message that mentions a name)
        if DS_FILE_TEXT.search(template):
            self.note_file_name(node, template.replace("\0", "{}"))
        if template.startswith(TAG_PREFIX + "\0"):
            self.tag_scopes.add(id(self.scope(node)))
            self.add(
                node,
                "CK203",
                'checkpoint tag built by hand: use f"{NamingKeys.DEFAULT_TAG_PREFIX}{step}"',
                evidence=f"a string that starts with DeepSpeed's tag prefix {TAG_PREFIX!r} and a placeholder",
            )
            return
        folders = template.replace("\\", "/").split("/")[1:]  # the pieces of a path after its start
        tag = next((piece for piece in folders if piece in (TAG_PREFIX + "\0", TAG_PREFIX + "*")), None)
        if tag is not None:  # f"{path}/global_step{step}", f"{path}/global_step*": the tag folder by hand
            self.tag_scopes.add(id(self.scope(node)))
            globbed = tag.endswith("*")
            self.add(
                node,
                "CK203",
                "checkpoint tags globbed by hand in a path: use NamingKeys.DEFAULT_TAG_PREFIX"
                if globbed
                else 'checkpoint tag built by hand in a path: use f"{NamingKeys.DEFAULT_TAG_PREFIX}{step}"',
                evidence=f"a path piece {tag.replace(chr(0), '{}')!r}: DeepSpeed's tag prefix and "
                + ("a wildcard" if globbed else "a placeholder"),
            )
            return
        if not is_ds_file_name(template):
            return
        names = naming_members(template)
        builder = next((call for needed, call in BUILDERS if all(p in template for p in needed)), None)
        use = f"use ckptkeys.naming.{builder}" if builder else "use the NamingKeys members"
        self.add(
            node,
            "CK201",
            f"file name rebuilt from {', '.join(names) or 'naming pieces'}: {use}",
            evidence=f"{template.replace(chr(0), '{}')!r} is a DeepSpeed checkpoint file name (or its tail)",
        )

    def literal(self, node: ast.Constant, value: str) -> None:
        """A plain string: a file name, a tag, 'latest' as a path."""
        if id(node) in self.built or any(c.isspace() for c in value) or not value:
            return
        if DS_FILE_TEXT.search(value):
            self.note_file_name(node, value)
        parent = self.parents.get(id(node))
        if value.endswith(".pt") and "states" in value:
            record = parse(os.path.basename(value))
            call = call_for(record) if record is not None else None
            if call is not None:
                self.add(
                    node,
                    "CK202",
                    f"{value!r} is a checkpoint file name: use ckptkeys.naming.{call}",
                    value=value,
                    evidence="the string parses as a DeepSpeed checkpoint file name",
                )
                return
        if DS_FILE_TEXT.search(value):
            matcher = self.matcher(node, parent)
            evidence = f"a piece of DeepSpeed's file names given to {matcher}"
            use = self.glob_use(node) if not matcher and _GLOB.search(value) else ""
            if use and file_name(node) is not None:
                # a glob of DeepSpeed's file names as a path piece: os.path.join(d, "mp_rank_*_model_states.pt")
                matcher = "a glob"
                evidence = f"a glob of DeepSpeed's file names, {use}"
            if matcher:
                pieces = naming_members(value)
                self.add(
                    node,
                    "CK204",
                    f"checkpoint file names matched by hand with {value!r}: use ckptkeys.naming.parse"
                    + (f" or {', '.join(pieces)}" if pieces else ""),
                    value=value,
                    evidence=evidence,
                )
            return
        if value.startswith(TAG_PREFIX):
            rest, matcher = value[len(TAG_PREFIX) :], self.matcher(node, parent, tests=False)
            if rest[:1] == "_":
                return  # global_step_(\d+), global_step_*: another framework's folders (DeepSpeed's: global_step{N})
            if rest.isdigit():
                message = (
                    f'{value!r} is a checkpoint tag written by hand: use f"{{NamingKeys.DEFAULT_TAG_PREFIX}}{rest}"'
                )
                evidence = "DeepSpeed's tag prefix followed by a step number"
            elif matcher:
                message = f"checkpoint tags parsed by hand with {value!r}: use NamingKeys.DEFAULT_TAG_PREFIX"
                evidence = f"DeepSpeed's tag prefix given to {matcher}"
            else:
                return
            self.tag_scopes.add(id(self.scope(node)))
            self.add(node, "CK203", message, value=value, evidence=evidence)
            return
        if value in LATEST_NAMES and (
            (isinstance(parent, ast.Call) and _call_name(parent) in PATH_CALLS and node in parent.args)
            or (isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Div))
        ):
            self.latest(node, "a path to the file that names the latest tag")

    def matcher(self, node: ast.Constant, parent: ast.AST | None, *, tests: bool = True) -> str:
        """What matches names against ``node``: ``endswith()``, ``glob()``, ``re.fullmatch()``, an
        ``in`` test (not for the tag prefix: ``"global_step" in checkpoint`` is a dict's key)."""
        if isinstance(parent, ast.Call) and _call_name(parent) in PARSING_CALLS and node in parent.args:
            return f"{_call_name(parent)}()"
        if (
            tests
            and isinstance(parent, ast.Compare)
            and parent.left is node
            and isinstance(parent.ops[0], (ast.In, ast.NotIn))
        ):
            return "an `in` test"
        return ""

    def glob_use(self, node: ast.AST) -> str:
        """Where a glob pattern goes: to ``glob()`` through the path it is a piece of, or a piece
        of a path (``join()``, ``Path()``, ``/``); "" for neither (``pattern = "*_optim_states.pt"``)."""
        parent = self.parents.get(id(node))
        while parent is not None and not isinstance(parent, ast.stmt):
            name = _call_name(parent)
            if name in PARSING_CALLS:
                return f"given to {name}()"
            parent = self.parents.get(id(parent))
        parent = self.parents.get(id(node))
        if isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Div):
            return "a piece of a path built with /"
        name = _call_name(parent) if parent is not None else None
        if name in _PATH_PIECES:
            return f"a piece of {name}()"
        if isinstance(parent, ast.keyword):
            parent = self.parents.get(id(parent))
            name = _call_name(parent) if parent is not None else None
        # given to a function of its own: get_checkpoint_files(folder, "*_model_states.pt")
        return f"given to {name}()" if name else ""

    def latest(self, node: ast.Constant, why: str) -> None:
        if any(f.code == "CK202" and f._span == self.span(node) for f in self.findings):
            return
        member = "LATEST" if node.value == LATEST_FILE else "LATEST_UNIVERSAL"
        self.add(
            node,
            "CK202",
            f"{node.value!r} is DeepSpeed's tag file: use NamingKeys.{member}",
            value=node.value,
            evidence=why,
        )

    # -- constants ----------------------------------------------------------------------------

    def copied_constant(self, node: ast.Assign) -> None:
        """``ZERO_FILE_PREFIX = 'zero_pp_rank_'`` at module (or class) level."""
        if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
            return
        literal = key_literal(node.value)
        if literal is None or isinstance(self.scope(node), FUNCTIONS):
            return
        name, value = node.targets[0].id, literal.value
        index = registry_index()
        if not CONSTANT_NAME.fullmatch(name) or value not in index.members:
            return
        if self.path.replace("\\", "/").endswith("deepspeed/checkpoint/constants.py"):
            return  # where DeepSpeed defines them
        deepspeed_name = index.constants.get(name) == value
        kind = "file-name piece" if value in index.naming_only else "key"
        if index.common(value) and not deepspeed_name and not (name == value.upper() and "_" in value):
            return  # OPTIMIZER = "optimizer": a word any code may name
        found = index.members[value]
        names = tuple(f"{type(m).__name__}.{m.name}" for m in found)
        replacement = f"{names[0]}.value" if len(names) == 1 else None
        use = f"use {names[0]}" if len(names) == 1 else f"use one of {', '.join(names)}"
        if deepspeed_name:
            use += f" (or ckptkeys.constants.{name})"
        self.add(
            literal,
            "CK303",
            f"{name} = {value!r} copies a DeepSpeed constant: {use}",
            value=value,
            candidates=names,
            replacement=replacement,
            imports=(names[0].split(".")[0],) if replacement else (),
            evidence=(
                f"{name} is DeepSpeed's own name for {value!r}"
                if deepspeed_name
                else f"a module-level constant holding the DeepSpeed {kind} {value!r}"
            ),
        )

    # -- imports ------------------------------------------------------------------------------

    def constants_import(self, node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == CONSTANTS_MODULE:
                    fix = (
                        f"import ckptkeys.constants as {alias.asname}"
                        if alias.asname and len(node.names) == 1
                        else None
                    )
                    self.add(
                        node,
                        "CK301",
                        f"import of {CONSTANTS_MODULE}: use ckptkeys.constants (same names, no torch) or the groups",
                        replacement=fix,
                        evidence=f"imports {CONSTANTS_MODULE}",
                    )
            return
        assert isinstance(node, ast.ImportFrom)
        module = self.absolute(node)
        if module == "deepspeed.checkpoint" and not any(a.name == "constants" for a in node.names):
            self.package_import(node)
            return
        if module == CONSTANTS_MODULE:
            target = "ckptkeys.constants"
        elif module == "deepspeed.checkpoint":
            if len(node.names) != 1:
                self.add(
                    node,
                    "CK301",
                    "import of deepspeed.checkpoint.constants: use ckptkeys.constants",
                    evidence="imports deepspeed.checkpoint.constants",
                )
                return
            target = "ckptkeys"
        else:
            return
        fix = self.rewritten_module(node, target)
        self.add(
            node,
            "CK301",
            f"import from {module}: use {target}{'.constants' if target == 'ckptkeys' else ''} "
            "(same names and values, no torch) or the key groups",
            replacement=fix,
            evidence=f"imports {CONSTANTS_MODULE}",
        )

    def package_import(self, node: ast.ImportFrom) -> None:
        """``from deepspeed.checkpoint import ORIGINAL_VOCAB_SIZE``: the constants, through the package."""
        names = [a.name for a in node.names]
        index = registry_index()
        constants = [n for n in names if n in index.constant_names]
        if not constants:
            return
        others = [n for n in names if n not in index.constant_names]
        if others:
            use = f"import {', '.join(constants)} from ckptkeys.constants (keep {', '.join(others)} from DeepSpeed)"
            fix = None
        else:
            use = "import them from ckptkeys.constants (same names and values, no torch) or use the key groups"
            fix = self.rewritten_module(node, "ckptkeys.constants")
        self.add(
            node,
            "CK302",
            f"import of DeepSpeed's key constants {', '.join(constants)} from deepspeed.checkpoint: {use}",
            replacement=fix,
            evidence=f"{', '.join(constants)} {'is' if len(constants) == 1 else 'are'} in {CONSTANTS_MODULE}",
        )

    def rewritten_module(self, node: ast.ImportFrom, target: str) -> str | None:
        segment = self.segment(node)
        spec = re.match(r"from\s+([.\w\s]+?)\s+import\b", segment or "")
        # A relative import is DeepSpeed's own package importing its constants: rewriting it
        # would stop the package from importing its submodule, so it is only reported.
        if segment is None or spec is None or node.level:
            return None
        return segment[: spec.start(1)] + target + segment[spec.end(1) :]

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


def noqa_codes(comment: str) -> frozenset[str] | None:
    """What the ``# noqa`` directive of ``comment`` (the text of one comment) silences, as ruff's
    lexer reads it: ``None`` where it has none or an invalid one, an empty set for a bare
    ``# noqa`` (every code), else the codes listed.

    As ruff: ``noqa`` in any case, right after a ``#`` and spaces, anywhere in the comment
    (``# type: ignore # noqa``); a bare ``# noqa`` may be followed by spaces and more words, or by
    another ``#``; ``# noqa: CK101, CK102`` and ``# noqa:CK101 CK102`` list codes (commas or spaces
    between them), a code being upper-case letters then digits, and the list ends at the first word
    that is none (``# noqa: CK101 the key is a config key``). A lower-case code (``# noqa: ck101``)
    is no code, so the directive lists none: invalid, it silences nothing (ruff warns so), as
    ``#noqaCK101``, ``# noqa; CK101``, ``# noqa: CK101x`` do.
    """
    for rest in _after_hashes(comment):
        if rest[:4].lower() == "noqa":
            return _directive(rest[4:])
    return None


def file_noqa_codes(comment: str) -> frozenset[str] | None:
    """What the file-level ``# ckptkeys: noqa`` directive of ``comment`` silences, as ruff reads
    its own ``# ruff: noqa``: ``None`` where it has none or an invalid one, an empty set for a
    bare one (every code in the file), else the codes listed.

    As ruff (0.17.6, measured): ``ckptkeys`` in lower case, then ``:`` (spaces around it allowed),
    then ``noqa`` in any case and what follows it read as a line's ``# noqa`` (:func:`noqa_codes`:
    ``# ckptkeys: noqa: CK101, CK104``; whole codes, not prefixes; ``# ckptkeys: noqa a note``
    is bare), after any ``#`` of the comment. The comment must stand on a line of its own: the
    caller checks that (after code, ruff warns and ignores it). ``# flake8: noqa`` is read as
    the same directive, as ruff reads it as its own ``# ruff: noqa`` (``# flake8: noqa`` alone
    keeps every linter that honours flake8's directive out of the file).
    """
    for rest in _after_hashes(comment):
        word = next((w for w in ("ckptkeys", "flake8") if rest.startswith(w)), None)
        if word is None:
            continue
        rest = rest[len(word) :].lstrip()
        if rest.startswith(":"):
            rest = rest[1:].lstrip()
            if rest[:4].lower() == "noqa":
                return _directive(rest[4:])
    return None


def _after_hashes(comment: str) -> Iterator[str]:
    """What follows each ``#`` of ``comment``, leading spaces dropped: where a directive may start."""
    position = comment.find("#")
    while position >= 0:
        yield comment[position + 1 :].lstrip()
        position = comment.find("#", position + 1)


_CODE: Final = re.compile(r"[A-Z]+[0-9]+")
_MAYBE_SUPPRESSED: Final = re.compile(r"(?i:noqa)|ckptkeys:")


def _directive(rest: str) -> frozenset[str] | None:
    """The directive after ``noqa``: see :func:`noqa_codes`."""
    if not rest or rest[0] == "#":
        return frozenset()
    if rest[0].isspace():
        rest = rest.lstrip()
        if not rest.startswith(":"):
            return frozenset()
    elif rest[0] != ":":
        return None  # no colon after the word (as `noqa;` or `noqaCK101`): invalid
    rest = rest[1:]
    codes: list[str] = []
    joined = False  # right after a code with no comma or space (`CK101CK102`: ruff takes both, and warns)
    while rest:
        rest = rest.lstrip()
        if rest.startswith(","):
            rest = rest[1:]
            continue
        match = _CODE.match(rest)
        if match is None:
            if joined:
                return None  # `CK101CKx`: invalid
            break  # the first word that is no code: a comment after the codes
        codes.append(match.group())
        rest = rest[match.end() :]
        joined = rest[:1].isupper()
        if rest and not (rest[0] in ",#" or rest[0].isspace() or joined):
            return None  # `CK101x`: invalid
    return frozenset(codes) if codes else None


class _Suppressions:
    """The suppression comments of one file, each on the line a finding there is reported at.

    Comments are read by ``tokenize``, so a ``# noqa`` inside a string is text, not a comment. As
    ruff, a finding inside a string that spans lines is silenced by a comment on the string's last
    line (where a comment can be), besides its own line. A file ``tokenize`` refuses (it parsed, so
    this is rare) falls back to the text after the first ``#`` of the line. A comment on a line of
    its own may be a file-level ``# ckptkeys: noqa`` (:func:`file_noqa_codes`), for every finding.
    """

    def __init__(self, source: str, lines: list[str]) -> None:
        self.comments: dict[int, str] = {}
        self.own_line: set[int] = set()  # the lines whose comment is all there is on them
        self.last_line: dict[int, int] = {}  # a line inside a string spanning lines -> the string's last line
        try:
            opened: list[int] = []
            for token in tokenize.generate_tokens(io.StringIO(source).readline):
                kind, (start, _), (end, _) = token.type, token.start, token.end
                if kind == tokenize.COMMENT:
                    self.comments[start] = token.string
                    if start <= len(lines) and not lines[start - 1][: token.start[1]].strip():
                        self.own_line.add(start)
                elif kind == tokenize.STRING and end > start:
                    self._spans(start, end)
                elif kind == getattr(tokenize, "FSTRING_START", -1):
                    opened.append(start)
                elif kind == getattr(tokenize, "FSTRING_END", -1) and opened:
                    self._spans(opened.pop(), end)
        except (tokenize.TokenError, SyntaxError):
            self.comments = {n: line[line.index("#") :] for n, line in enumerate(lines, 1) if "#" in line}
            self.own_line = {n for n, line in enumerate(lines, 1) if line.lstrip().startswith("#")}
        # As ruff: the lines joined by backslashes count as their last line, where the one comment
        # of the statement can be: a noqa comment after `1` silences `x = s['k'] + \` then `1`.
        for number in range(len(lines), 0, -1):
            if lines[number - 1].endswith("\\") and number not in self.comments and number not in self.last_line:
                self.last_line[number] = self.last_line.get(number + 1, number + 1)
        # The file-level directives: every code (a bare one), else the union of the codes listed.
        self.file_all = False
        self.file_codes: set[str] = set()
        for line in self.own_line:
            codes = file_noqa_codes(self.comments[line])
            if codes is not None:
                self.file_all = self.file_all or not codes
                self.file_codes |= codes

    def _spans(self, start: int, end: int) -> None:
        for line in range(start, end):
            self.last_line.setdefault(line, end)

    def _last(self, line: int) -> int:
        """The line whose comment silences a finding on ``line``: the last line of the string
        spanning lines or of the backslash-joined lines it is in (the two may chain)."""
        seen = {line}
        while line in self.last_line and self.last_line[line] not in seen:
            line = self.last_line[line]
            seen.add(line)
        return line

    def silenced(self, finding: Finding) -> bool:
        """Whether a ``# noqa`` or ``# ckptkeys: ignore`` comment silences ``finding``, or a
        file-level ``# ckptkeys: noqa``. A file that does not parse (CK001) is reported whatever
        they say, as ruff reports a syntax error."""
        if finding.code == "CK001":
            return False
        if self.file_all or finding.code in self.file_codes:
            return True
        # Only the last line of a string spanning lines or of backslash-joined lines, as ruff: a
        # comment on a line before it can only be inside an f-string's braces (3.12+), not a noqa.
        for line in (self._last(finding.line),):
            comment = self.comments.get(line)
            if comment is None:
                continue
            codes = noqa_codes(comment)
            if codes is not None and (not codes or finding.code in codes):
                return True
            match = _IGNORE_COMMENT.search(comment)
            if match is not None and (match.group(1) is None or finding.code in {
                c.strip() for c in match.group(1).split(",")
            }):  # fmt: skip
                return True
        return False


def lint_source(
    source: str,
    path: str = "<string>",
    *,
    select: Iterable[str] | None = None,
    ignore: Iterable[str] | None = None,
) -> list[Finding]:
    """The findings in ``source`` (the text of the file at ``path``), in order of position.

    ``select``/``ignore`` are code prefixes (``"CK1"``, ``"CK301"``); a line with a ``# noqa``
    or ``# ckptkeys: ignore`` comment reports nothing, one with ``# noqa: CK101, CK102`` or
    ``# ckptkeys: ignore[CK101]`` nothing of those codes (:func:`noqa_codes`: as ruff reads them);
    a line of its own ``# ckptkeys: noqa`` (``# ckptkeys: noqa: CK101``) silences the whole file
    (those codes), as ruff's ``# ruff: noqa`` (:func:`file_noqa_codes`).
    """
    return lint_module(source, path, select=select, ignore=ignore)


def lint_module(
    source: str,
    path: str,
    *,
    select: Iterable[str] | None = None,
    ignore: Iterable[str] | None = None,
    imported: Imported | None = None,
    tree: ast.Module | None = None,
    passed: Passed | None = None,
) -> list[Finding]:
    """:func:`lint_source`, with the helpers ``imported`` from the project's other modules as
    evidence where they are called (:func:`ckptkeys.lint.lint_project` finds them); ``tree``:
    the syntax tree of ``source`` where the caller parsed it already (it is only read); ``passed``:
    what calls in the project's other modules pass a parameter of one of its top-level functions."""
    select, ignore = (list(select) if select is not None else None), (list(ignore) if ignore is not None else None)
    linter = _Linter(source, path, imported, tree, passed)
    findings = [f for f in linter.run() if selected(f.code, select, ignore)]
    if not findings or _MAYBE_SUPPRESSED.search(source) is None:
        return findings
    # Tokenized only where something was found and a comment may silence it: tokenize costs
    # more than the walk (on DeepSpeed's 751 files, 0.8 s more on 1.3 s before this test).
    suppressions = _Suppressions(source, linter.lines)
    return [f for f in findings if not suppressions.silenced(f)]
