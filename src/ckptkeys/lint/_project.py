"""Project mode: the files of one project linted together, each with the evidence of the helpers it
imports from the project's other modules.

A *helper* is a function of the project that returns a DeepSpeed checkpoint file name or a path
built from one (``os.path.join(d, "mp_rank_{:02d}_model_states.pt")``, a glob of them, a call of
``get_model_ckpt_name_for_rank``, or of another such helper), or a DeepSpeed checkpoint file it
loads from such a path (or a part of it: ``torch.load(name)["module"]``). It is recognised by the
rules that recognise one in the same module (:class:`._paths.PathReader`: the function read with
its module's top-level assignments, and what the helpers it calls return, in the order of the
calls, a cycle cut). Called in another module, it is evidence there, as a file name written in
that function would be, and what it returns has the helper's :class:`._paths.Origin` there (the
file's kind, the dict level), as a local helper's does.

The project's own imports are resolved statically, never executed: ``import a.b as U``, ``from
.b import f``, ``from pkg import f`` re-exported through ``pkg/__init__.py``, star imports, packages
with and without ``__init__.py``, ``src/`` layouts and a script's own folder. Each module is named
by its path from the project root; those not among the files given are read from disk under the
root only where asked (:func:`lint_project`'s ``read_imports``), each at most once. A cycle of
imports, a relative import beyond the root, a missing or unreadable module: nothing resolved
there, never an error.
"""

from __future__ import annotations

import ast
import gc
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from ._evidence import registry_index
from ._files import decode_source
from ._linter import _Returned, lint_module
from ._paths import Origin, PathReader, dotted

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Final

    from ._codes import Finding

# What marks a project's root folder (as ruff and pip find one), nearest first.
_ROOT_MARKERS: Final = ("pyproject.toml", "setup.py", "setup.cfg", ".git")


def project_root(path: str) -> str:
    """The root of the project ``path`` (a file or folder) is in: the nearest folder at or above it
    that holds ``pyproject.toml``, ``setup.py``, ``setup.cfg`` or ``.git``; else the folder above
    its top package (the highest folder with ``__init__.py`` going up without a gap); else its folder."""
    start = os.path.abspath(path)
    folder = start if os.path.isdir(start) else os.path.dirname(start)
    probe = folder
    while True:
        if any(os.path.exists(os.path.join(probe, marker)) for marker in _ROOT_MARKERS):
            return probe
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    while os.path.isfile(os.path.join(folder, "__init__.py")) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    return folder


@dataclass(slots=True)
class _Module:
    """One module of the project: where it is, its text, and (once parsed) its names."""

    name: str  # dotted, from the project root ("megatron.checkpointing"; "" if outside the root)
    shown: str  # its path in evidence: from the root, with /
    package: str  # the package its relative imports start from
    text: str
    parsed: bool = False
    defs: dict[str, tuple[int, int, int]] | None = None  # top-level functions: (first line, last line, column)
    bindings: dict[str, tuple[str, str | None, bool]] | None = None  # name -> (module, attribute, relative)
    stars: list[tuple[str, bool]] | None = None  # (module, relative) of each `from m import *`
    lines: list[str] | None = None  # its lines, once a function of it is judged
    bound: frozenset[str] | None = None  # the words of its `def` and `import` lines (_may_bind)
    # its top-level assignments (into `if`/`try` blocks; not dict displays: config, no path), which
    # its functions may read a file name from: kept, as small trees, once it is parsed
    assigned: list[ast.stmt] | None = None
    tree: ast.Module | None = None  # its syntax tree, once parsed (kept for the run: see lint_project)


@dataclass(frozen=True, slots=True)
class _Helper:
    where: str  # "megatron/checkpointing.py:120"
    origin: Origin  # what it returns: a DeepSpeed file name or path, or a file loaded from one
    foreign: bool  # a helper because it calls one of another module (which the walk of its own file cannot see)


class _Project:
    """The modules of one project, resolved on demand; helpers memoised per (module, name)."""

    def __init__(self, sources: Mapping[str, str], root: str, base: str, read_imports: bool) -> None:
        self.root = os.path.abspath(root)
        self.read_imports = read_imports
        self.by_name: dict[str, _Module | None] = {}  # dotted name -> module (None: looked for, none)
        self.by_path: dict[str, _Module] = {}  # path as given -> module
        self.helpers: dict[tuple[int, str], _Helper | None] = {}
        self.pending: set[tuple[int, str]] = set()  # queries under way: a cycle resolves to nothing
        self.given: list[_Module] = []  # the modules of the run: the callers a parameter is passed by
        self.passes: dict[tuple[int, str, str], Origin | None] = {}  # (module, function, parameter) -> passed
        self.readers: dict[int, PathReader | None] = {}  # a calling module's reader of paths
        for path, text in sources.items():
            module = self.new_module(os.path.join(base, path), text)
            self.by_path[path] = module
            self.given.append(module)
            if module.name:
                self.by_name.setdefault(module.name, module)

    def new_module(self, path: str, text: str) -> _Module:
        relative = os.path.relpath(os.path.abspath(path), self.root)
        if relative.startswith(os.pardir + os.sep) or relative == os.pardir or os.path.isabs(relative):
            return _Module("", path.replace(os.sep, "/"), "", text)
        parts = relative[:-3].split(os.sep) if relative.endswith(".py") else relative.split(os.sep)
        package = parts[:-1]
        if parts[-1] == "__init__":
            parts = parts[:-1]
            package = parts
        if not all(part.isidentifier() for part in parts):
            return _Module("", relative.replace(os.sep, "/"), "", text)
        return _Module(".".join(parts), relative.replace(os.sep, "/"), ".".join(package), text)

    # -- modules ------------------------------------------------------------------------------

    def find(self, name: str, importer: _Module | None, relative: bool) -> _Module | None:
        """The module an import names: relative ones as resolved; an absolute one from the root, from
        ``src/`` under it, or from the importing script's own folder (its ``sys.path[0]``)."""
        if relative:
            return self.module(name)
        tried = [name, f"src.{name}"]
        if importer is not None and importer.package:  # the importing file's folder
            tried.append(f"{importer.package}.{name}")
        for candidate in tried:
            found = self.module(candidate)
            if found is not None:
                return found
        return None

    def module(self, name: str) -> _Module | None:
        if name in self.by_name:
            return self.by_name[name]
        found: _Module | None = None
        if self.read_imports and name and all(part.isidentifier() for part in name.split(".")):
            base = os.path.join(self.root, *name.split("."))
            for path in (base + ".py", os.path.join(base, "__init__.py")):
                if os.path.isfile(path):
                    found = self.read(path)
                    break
            else:
                if os.path.isdir(base):  # a namespace package: no text, only its submodules
                    found = self.new_module(os.path.join(base, "__init__.py"), "")
        self.by_name[name] = found
        return found

    def read(self, path: str) -> _Module | None:
        """A module read from disk (once: the caller memoises by name); unreadable: ``None``."""
        try:
            with open(path, "rb") as stream:
                text, _ = decode_source(stream.read())
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            return None
        return self.new_module(path, text)

    def parse(self, module: _Module) -> bool:
        """Whether ``module`` parses; parsed once (:meth:`tree`)."""
        if not module.parsed:
            self.tree(module)
        return module.defs is not None

    def tree(self, module: _Module) -> ast.Module | None:
        """The syntax tree of ``module`` (``None``: it does not parse), parsed once: where its
        top-level functions are, and every import in it (at any depth), read then. The tree is
        kept for the run, so that no module is parsed twice (the walk of a linted module, a caller's
        reader and a helper's function all read the same tree); :func:`lint_project` pauses the
        garbage collector meanwhile, which would otherwise walk every kept tree at each collection."""
        if module.parsed:
            return module.tree
        module.parsed = True
        try:
            tree = ast.parse(module.text)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None
        module.tree = tree
        defs: dict[str, tuple[int, int, int]] = {}
        bindings: dict[str, tuple[str, str | None, bool]] = {}
        stars: list[tuple[str, bool]] = []
        assigned: list[ast.stmt] = []
        top: list[ast.stmt] = list(tree.body)
        for statement in top:  # the module's top level, into `if`/`try` blocks
            if isinstance(statement, (ast.Assign, ast.AnnAssign)) and not isinstance(statement.value, ast.Dict):
                assigned.append(statement)
            elif isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
                defs[statement.name] = (
                    statement.lineno,
                    statement.end_lineno or statement.lineno,
                    statement.col_offset,
                )
            elif isinstance(statement, (ast.If, ast.Try)):
                top += _blocks(statement)
        for node in _statements(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        bindings[alias.asname] = (alias.name, None, False)
                    else:
                        first = alias.name.split(".", 1)[0]  # `import a.b` binds a
                        bindings[first] = (first, None, False)
            elif isinstance(node, ast.ImportFrom):
                source = self.absolute(module, node)
                if source is None:
                    continue  # beyond the root
                for alias in node.names:
                    if alias.name == "*":
                        stars.append((source, bool(node.level)))
                    else:
                        bindings[alias.asname or alias.name] = (source, alias.name, bool(node.level))
        module.defs, module.bindings, module.stars, module.assigned = defs, bindings, stars, assigned
        return tree

    def absolute(self, module: _Module, node: ast.ImportFrom) -> str | None:
        """The module an ``ImportFrom`` names, its dots resolved; ``None`` beyond the root."""
        if not node.level:
            return node.module or ""
        if not module.name and not module.package:
            return None
        parts = module.package.split(".") if module.package else []
        if node.level - 1 > len(parts):
            return None
        parts = parts[: len(parts) - (node.level - 1)]
        return ".".join([*parts, *([node.module] if node.module else [])])

    # -- helpers ------------------------------------------------------------------------------

    def exported(self, module: _Module | None, name: str) -> _Helper | None:
        """The helper ``module.name`` is: defined there, imported there (re-exported), or star-imported."""
        if module is None or not _may_bind(module, name) or not self.parse(module):
            return None
        key = (id(module), name)
        if key in self.helpers:
            return self.helpers[key]
        if key in self.pending:
            return None  # a cycle of imports or of calls
        self.pending.add(key)
        try:
            found: _Helper | None = None
            assert module.defs is not None and module.bindings is not None and module.stars is not None
            if name in module.defs:
                function = self.function(module, name)
                found = self.judge(module, function) if function is not None else None
            elif name in module.bindings:
                source, attribute, relative = module.bindings[name]
                if attribute is not None:
                    found = self.exported(self.find(source, module, relative), attribute)
            else:
                for source, relative in module.stars:
                    found = self.exported(self.find(source, module, relative), name)
                    if found is not None:
                        break
            self.helpers[key] = found
            return found
        finally:
            self.pending.discard(key)

    def called(self, module: _Module, dotted: str | None) -> _Helper | None:
        """The helper a call's function is, resolved in ``module``: ``f``, ``U.f``, ``a.b.f``."""
        target = None if dotted is None else self.target(module, dotted)
        return None if target is None else self.exported(*target)

    def target(self, module: _Module, dotted: str) -> tuple[_Module | None, str] | None:
        """The module whose top-level name a call's function (``f``, ``U.f``, ``a.b.f``) is, as
        ``module`` names it, and that name; ``None`` where its first part is bound by no import
        (``self.f()``, a local variable's method)."""
        parts = dotted.split(".")
        if len(parts) == 1:
            return module, parts[0]
        if not _may_bind(module, parts[0]) or not self.parse(module):
            return None
        assert module.bindings is not None
        binding = module.bindings.get(parts[0])
        if binding is None:
            return None
        source, attribute, relative = binding
        base = source if attribute is None else f"{source}.{attribute}"
        return self.find(".".join([base, *parts[1:-1]]), module, relative), parts[-1]

    def function(self, module: _Module, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        """The tree of the top-level function ``name`` of ``module``: from the module's tree where it
        is kept, else parsed from its own lines, line numbers as in the module."""
        assert module.defs is not None
        first, last, column = module.defs[name]
        if module.tree is not None:
            top: list[ast.stmt] = list(module.tree.body)
            for statement in top:  # the top level, into `if`/`try` blocks, as defs was read
                if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    if statement.name == name and statement.lineno == first:
                        return statement
                elif isinstance(statement, (ast.If, ast.Try)):
                    top += _blocks(statement)
        if module.lines is None:
            module.lines = module.text.splitlines(keepends=True)
        lines = module.lines[first - 1 : last]
        if column:  # inside an `if` or `try` block: indented
            if not all(line[:column].isspace() or not line.strip() for line in lines):
                return None  # (a string's continuation less indented than the def: not worth the parse)
            lines = [line[column:] if line.strip() else line for line in lines]
        try:
            tree = ast.parse("\n" * (first - 1) + "".join(lines))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None
        found = tree.body[0] if tree.body else None
        return found if isinstance(found, (ast.FunctionDef, ast.AsyncFunctionDef)) else None

    def judge(self, module: _Module, function: ast.FunctionDef | ast.AsyncFunctionDef) -> _Helper | None:
        """Whether ``function`` returns a DeepSpeed file name (or a path built from one), or a file
        loaded from such a path (or a part of it), read as a function of the same module is read
        (:class:`PathReader`): with its module's top-level assignments, and with what the helpers it
        calls return, each resolved first (a cycle of them resolves to nothing)."""
        known: dict[str, Origin] = {}
        foreign = False  # whether it calls a helper of another module
        for node in ast.walk(function):
            called = dotted(node.func) if isinstance(node, ast.Call) else None
            if called is None or called in known:
                continue
            helper = self.called(module, called)
            if helper is not None:
                known[called] = helper.origin
                foreign = foreign or helper.foreign or helper.where.rsplit(":", 1)[0] != module.shown
        scope = ast.Module(body=[*(module.assigned or ()), function], type_ignores=[])
        try:
            origin = PathReader(scope, known).returns(function)
        except RecursionError:  # a chain of names deeper than the stack: nothing known
            return None
        return _Helper(f"{module.shown}:{function.lineno}", origin, foreign) if origin is not None else None

    def helper_called(self, module: _Module, name: str) -> tuple[str, Origin] | None:
        """The helper ``module`` calls as ``name`` (``f``, ``U.f``), of another module or one of its
        own functions that calls one: (where it is defined, what it returns); ``None`` if none."""
        try:
            helper = self.called(module, name)
        except RecursionError:  # a chain of helpers through hundreds of modules: left unresolved
            return None
        if helper is None or (module.defs is not None and name in module.defs and not helper.foreign):
            return None  # (a function of its own, read by the walk of its file by the same rules)
        return helper.where, helper.origin

    # -- parameters passed by other modules ----------------------------------------------------

    def definition(self, module: _Module | None, name: str, depth: int = 0) -> tuple[int, str] | None:
        """Where the function ``module.name`` is defined (module id, name): there, re-exported, or
        star-imported; ``None`` where it is not a top-level function of the project found so."""
        if module is None or depth > 64 or not _may_bind(module, name) or not self.parse(module):
            return None
        assert module.defs is not None and module.bindings is not None and module.stars is not None
        if name in module.defs:
            return id(module), name
        if name in module.bindings:
            source, attribute, relative = module.bindings[name]
            if attribute is None:
                return None
            return self.definition(self.find(source, module, relative), attribute, depth + 1)
        for source, relative in module.stars:
            found = self.definition(self.find(source, module, relative), name, depth + 1)
            if found is not None:
                return found
        return None

    def resolved(self, module: _Module, called: str) -> tuple[int, str] | None:
        """Where the function a call in ``module`` calls (``f``, ``U.f``, ``a.b.f``) is defined."""
        target = self.target(module, called)
        return None if target is None else self.definition(*target)

    def passed(self, module: _Module, function: ast.FunctionDef | ast.AsyncFunctionDef, name: str) -> Origin | None:
        """What a call in another module of the run passes the parameter ``name`` of ``module``'s
        top-level ``function``: the first DeepSpeed path (or loaded file) one passes, ``via`` the
        call's place; ``None`` where none does. Only the files of the run are callers: a module that
        calls a function is not one it imports, and to look for callers everywhere under the root
        would read the whole project for each file linted alone."""
        key = (id(module), function.name, name)
        if key in self.passes:
            return self.passes[key]
        self.passes[key] = None  # (a cycle of parameters passed on: nothing, while it is read)
        arguments = function.args
        positional = [a.arg for a in (*arguments.posonlyargs, *arguments.args)]
        found: Origin | None = None
        # A caller imports the function, or its module (`import a.utils as U`, `from a import utils`),
        # or star-imports: read from the words of its import lines first (no parse), then its text.
        last = module.name.rsplit(".", 1)[-1]
        for caller in self.given:
            if caller is module or not (_may_bind(caller, function.name) or (last and _may_bind(caller, last))):
                continue
            if f"{function.name}(" not in caller.text:
                continue  # (`f (`: not looked for; a substring test is 10x faster than a pattern's)
            reader = self.caller_reader(caller)
            if reader is None:
                continue
            for call in reader.calls.get(function.name, ()):
                given = next((k.value for k in call.keywords if k.arg == name), None)
                if given is None and name in positional:
                    at = positional.index(name)
                    before = call.args[: at + 1]
                    if len(before) == at + 1 and not any(isinstance(a, ast.Starred) for a in before):
                        given = call.args[at]
                name_called = dotted(call.func)
                if (
                    given is None
                    or name_called is None
                    or self.resolved(caller, name_called) != (id(module), function.name)
                ):
                    continue
                try:
                    origin = reader.origin(given)
                except RecursionError:  # a chain of names deeper than the stack: nothing known
                    origin = None
                if origin is not None:
                    found = Origin(
                        origin.loaded, origin.kind, origin.text, origin.keys, f"{caller.shown}:{call.lineno}"
                    )
                    break
            if found is not None:
                break
        self.passes[key] = found
        return found

    def caller_reader(self, module: _Module) -> PathReader | None:
        """The reader of paths of a calling module: with the helpers it imports, the module-level
        names it imports (``from common import CKPT_NAME``), and what its own callers pass on."""
        if id(module) in self.readers:
            return self.readers[id(module)]
        reader: PathReader | None = None
        tree = self.tree(module)  # (parsed here first where it can be: its imports read from the same tree)
        if tree is None and module.defs is not None:
            try:
                tree = ast.parse(module.text)
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                tree = None
        if tree is not None and self.parse(module):
            reader = PathReader(
                tree,
                _Returned(_Imported(self, module)),
                passed=lambda function, name: self.passed(module, function, name),
                constant=lambda name: self.constant(module, name),
            )
        self.readers[id(module)] = reader
        return reader

    def constant(self, module: _Module, name: str) -> Origin | None:
        """What a module-level name ``module`` imports from another module of the project holds:
        ``CKPT_NAME`` of ``from common import CKPT_NAME`` where ``CKPT_NAME = "mp_rank_00_model_states.pt"``."""
        if not _may_bind(module, name) or not self.parse(module):
            return None
        assert module.bindings is not None
        binding = module.bindings.get(name)
        if binding is None or binding[1] is None:
            return None
        source = self.find(binding[0], module, binding[2])
        if source is None or not self.parse(source) or not source.assigned:
            return None
        scope = ast.Module(body=list(source.assigned), type_ignores=[])
        reader = PathReader(scope)
        for statement in source.assigned:
            if not isinstance(statement, (ast.Assign, ast.AnnAssign)):
                continue
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            if statement.value is not None and any(isinstance(t, ast.Name) and t.id == binding[1] for t in targets):
                try:
                    found = reader.origin(statement.value)
                except RecursionError:
                    found = None
                if found is not None and not found.loaded:
                    return found
        return None


class _Imported(Mapping[str, tuple[str, Origin]]):
    """The helpers one module calls, resolved as the walk of its file asks for them."""

    def __init__(self, project: _Project, module: _Module) -> None:
        self.project, self.module = project, module
        self.found: dict[str, tuple[str, Origin] | None] = {}

    def __getitem__(self, name: str) -> tuple[str, Origin]:
        if name not in self.found:
            self.found[name] = self.project.helper_called(self.module, name)
        helper = self.found[name]
        if helper is None:
            raise KeyError(name)
        return helper

    def __iter__(self) -> Iterator[str]:
        return iter([name for name, helper in self.found.items() if helper is not None])

    def __len__(self) -> int:
        return sum(1 for helper in self.found.values() if helper is not None)


# The lines that may bind a name: a `def`, an import (its parenthesized or continued names too).
_BINDING_LINES: Final = re.compile(
    r"^[ \t]*(?:async[ \t]+)?def[ \t]+(\w+)"
    r"|^[ \t]*(?:from[ \t]+[\w.]+[ \t]+)?import\b(\([^)]*\)|[^\n]*(?:\\\n[^\n]*)*)",
    re.MULTILINE,
)


def _may_bind(module: _Module, name: str) -> bool:
    """Whether ``module`` may define or import ``name`` (a star import: it may): read from its text
    by one regular expression, so that a module is parsed only where a call may resolve there."""
    if module.bound is None:
        words: set[str] = set()
        for defined, imported in _BINDING_LINES.findall(module.text):
            words.add(defined) if defined else words.update(re.findall(r"\w+|\*", imported))
        module.bound = frozenset(words)
    return name in module.bound or "*" in module.bound


def _blocks(statement: ast.stmt) -> list[ast.stmt]:
    """The statements directly inside a compound statement (its body, else, handlers, cases)."""
    inner: list[ast.stmt] = []
    for field in ("body", "orelse", "finalbody"):
        inner += getattr(statement, field, None) or []
    for part in getattr(statement, "handlers", None) or getattr(statement, "cases", None) or []:
        inner += part.body
    return inner


def _statements(tree: ast.Module) -> Iterator[ast.stmt]:
    """Every statement of a module, at any depth (imports are statements: no expression is walked)."""
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        statement = stack.pop()
        yield statement
        stack += _blocks(statement)


def _default_root(paths: Iterable[str]) -> str:
    """The folder of the given files, out of their packages: where their module names start."""
    folders = [os.path.dirname(os.path.abspath(p)) for p in paths]
    if not folders:
        return os.getcwd()
    given = {os.path.abspath(p) for p in paths}
    folder = os.path.commonpath(folders)
    while True:
        init = os.path.join(folder, "__init__.py")
        if (init not in given and not os.path.isfile(init)) or os.path.dirname(folder) == folder:
            return folder
        folder = os.path.dirname(folder)


def lint_project(
    sources: Mapping[str, str],
    *,
    select: Iterable[str] | None = None,
    ignore: Iterable[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    read_imports: bool = False,
) -> list[Finding]:
    """The findings in the files of one project, each linted as :func:`lint_source` lints it, with
    the project's helpers it imports as evidence where they are called.

    ``sources`` maps each file's path to its text; a relative path is taken from ``root``. Modules
    are named by their path from ``root`` (default: the folder of the files, above their packages):
    ``megatron/checkpointing.py`` is ``megatron.checkpointing``. With ``read_imports``, a module
    imported but not given is read from disk under ``root`` (each at most once; unreadable ones
    are skipped); without it only the files given are resolved. No module is ever imported or run.
    ``select``/``ignore`` as for :func:`lint_source`. The findings come file by file in the order
    of ``sources``, each file's in order of position; every :attr:`Finding.path` is a key of
    ``sources``.
    """
    select, ignore = (list(select) if select is not None else None), (list(ignore) if ignore is not None else None)
    base = os.getcwd() if root is None else os.fspath(root)  # what relative paths start from
    collecting = gc.isenabled()
    # The trees stay alive for the run (one parse per module): paused, the collector does not walk
    # them at every collection (on DeepSpeed's package that took a third of the time). Syntax trees
    # hold no cycles; whatever the run leaves in one is collected once the collector runs again.
    gc.disable()
    try:
        project = _Project(sources, _default_root(sources) if root is None else base, base, read_imports)
        return _lint_all(project, sources, select, ignore)
    finally:
        if collecting:
            gc.enable()


def _lint_all(
    project: _Project, sources: Mapping[str, str], select: list[str] | None, ignore: list[str] | None
) -> list[Finding]:
    prefilter = registry_index().prefilter
    findings: list[Finding] = []
    with warnings.catch_warnings():
        # Python's compile-time warnings (`"\d"`: invalid escape sequence) are Python's to give when
        # the code runs; here they would come for modules read only for their helpers, unnamed.
        warnings.simplefilter("ignore", SyntaxWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        for path, text in sources.items():
            if not prefilter.search(text):
                continue  # (lint_module finds nothing where this does not match)
            module = project.by_path[path]
            # Parsed once, for its imports, for the walk and for its callers' and helpers' readers.
            tree = project.tree(module)  # None where it does not parse: the walk parses it, to say why
            imported = _Imported(project, module)
            findings += lint_module(
                text,
                path,
                select=select,
                ignore=ignore,
                imported=imported,
                tree=tree,
                passed=lambda function, name, module=module: project.passed(module, function, name),  # type: ignore[misc]
            )
    return findings
