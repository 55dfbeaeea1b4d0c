"""The reading of names and paths: which expressions hold a DeepSpeed checkpoint file's name or
path, which mappings are what ``torch.load`` returned for one, and the dict level a key is read at.

A file name counts wherever it is written: a literal (``"mp_rank_00_model_states.pt"``), a glob
(``"*_optim_states.pt"``), a string built from parts, a piece of ``os.path.join``, ``Path(...)``,
``/``, given to ``glob``, ``sorted`` or ``open``. A path is followed through the module: a name
assigned one (``p = os.path.join(d, name)``), a loop or comprehension variable over paths
(``for f in glob(...)``), a parameter's default or what the module's calls pass it, a function of
the module that returns one. What ``torch.load`` returns for such a path is a *loaded* mapping,
and the keys read from it (``sd["optimizer_state_dict"]["overflow"]``) are at a known level of
a known file.

:func:`returned_origin` says of a function definition whether it returns a DeepSpeed file name
or path, or what loading one returned: what a helper gives its callers.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from ..naming import FileKind, parse
from ._evidence import DS_NAME_FUNCTIONS, built_template, is_ds_file_name, registry_index

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import Final

_FUNCTIONS: Final = (ast.FunctionDef, ast.AsyncFunctionDef)
# Calls whose result is a path (or paths) when an argument is one; and those that load a file.
_JOINING: Final = frozenset({"join", "Path", "PurePath", "PosixPath", "WindowsPath", "UPath"})
_GLOBBING: Final = frozenset({"glob", "iglob", "rglob"})
_KEEPING: Final = frozenset(
    {"sorted", "list", "tuple", "reversed", "str", "fspath", "abspath", "realpath", "normpath", "expanduser", "open"}
)
_KEEPING_METHODS: Final = frozenset({"resolve", "absolute", "as_posix", "expanduser", "with_name", "joinpath"})
LOADING: Final = frozenset({"load"})
_READING_METHODS: Final = frozenset({"get", "pop", "setdefault"})
# A glob's tail: "*_optim_states.pt", "*model_states.pt" (its kind by the suffix).
_GLOB_TAIL: Final = re.compile(r"\0[^\0/]*?[_-]?(model_states|optim_states)\.pt$")
# The group of a file's top level, and of the dict below a key of a group ("" : no key group,
# a torch state_dict). As docs/migration.md: optim["optimizer_state_dict"]["overflow"] is
# OptimFileKeys, then OptimizerKeys.
TOP_GROUP: Final[dict[FileKind, str]] = {
    FileKind.MODEL_STATES: "ModuleKeys",
    FileKind.ZERO3_MODEL_STATES: "ModuleKeys",
    FileKind.OPTIM_STATES: "OptimFileKeys",
    FileKind.UNIVERSAL_OPTIMIZER_STATE: "OptimizerKeys",
}
BELOW: Final[dict[tuple[str, str], str]] = {
    ("OptimFileKeys", "optimizer_state_dict"): "OptimizerKeys",
    ("OptimFileKeys", "folding"): "FoldingKeys",
    ("ModuleKeys", "optimizer"): "OptimizerKeys",
    ("ModuleKeys", "checkpoint_parallel_dimensions"): "ParallelDimsKeys",
    ("ModuleKeys", "universal_checkpoint_info"): "UniversalKeys",
    ("ModuleKeys", "folding"): "FoldingKeys",
    ("ModuleKeys", "module"): "",
    ("OptimizerKeys", "universal_checkpoint_info"): "UniversalKeys",
    ("OptimizerKeys", "optimizer_state_dict"): "",
    ("OptimizerKeys", "base_optimizer_state"): "",
}


@dataclass(frozen=True, slots=True)
class Origin:
    """What an expression holds, as far as DeepSpeed checkpoint files go."""

    loaded: bool
    """``False``: a DeepSpeed file's name or path (or several); ``True``: what ``torch.load`` returned for one."""
    kind: FileKind | None
    """Which kind of file, where the name says (a glob of ``*_optim_states.pt``: ``OPTIM_STATES``)."""
    text: str
    """The file name as written, ``{}`` for a placeholder: ``'mp_rank_{}_model_states.pt'``."""
    keys: tuple[str, ...] = ()
    """Loaded only: the keys read from the file's mapping to get here (``("optimizer_state_dict",)``)."""
    via: str = ""
    """Where a call in another module of the project passes it to a parameter (``"train.py:12"``), if so."""

    def group(self) -> str | None:
        """The key group of the dict this loaded mapping is (``""``: no group; ``None``: not known)."""
        group = TOP_GROUP.get(self.kind) if self.kind is not None else None
        for key in self.keys:
            if group is None or group == "":
                return None if group is None else ""
            group = BELOW.get((group, key))
        return group


def file_name(node: ast.AST) -> tuple[str, FileKind | None] | None:
    """The text and kind of a DeepSpeed file name (or glob of them) written or built in ``node``."""
    if isinstance(node, ast.Constant):
        if type(node.value) is not str or not node.value or any(c.isspace() for c in node.value):
            return None
        template = node.value
    else:
        built = built_template(node)
        if built is None or any(c.isspace() for c in built):
            return None
        template = built
    base = template.replace("\\", "/").rsplit("/", 1)[-1]
    pattern = re.sub(r"\*+|\?|\[[^\]/]*\]", "\0", base)  # a glob's wildcards as placeholders
    if "\0" not in pattern:
        record = parse(base)
        if record is None or record.kind not in _FILE_KINDS:
            return None
        return base, record.kind
    tail = _GLOB_TAIL.search(pattern)
    if not is_ds_file_name(pattern) and not (tail and pattern.startswith("\0")):
        return None
    record = parse(pattern.replace("\0", "0"))
    if record is None:
        record = parse(pattern.lstrip("\0").replace("\0", "0"))
    kind = record.kind if record is not None else None
    if kind is None and tail is not None:
        kind = FileKind.OPTIM_STATES if tail.group(1) == "optim_states" else FileKind.MODEL_STATES
    shown = template.replace("\0", "{}")
    return shown.replace("\\", "/").rsplit("/", 1)[-1], kind


_FILE_KINDS: Final = frozenset(TOP_GROUP) | {
    FileKind.LAYER_MODEL_STATES,
    FileKind.EXPERT_MODEL_STATES,
    FileKind.EXPERT_OPTIM_STATES,
    FileKind.UNIVERSAL_PARAM_STATE,
}
_BY_FUNCTION: Final[dict[str, FileKind]] = {
    "get_model_state_file": FileKind.MODEL_STATES,
    "get_model_state_files": FileKind.MODEL_STATES,
    "get_optim_files": FileKind.OPTIM_STATES,
    "get_zero_ckpt_name_for_rank": FileKind.OPTIM_STATES,
    "_get_zero_ckpt_name": FileKind.OPTIM_STATES,
    "_get_optimizer_ckpt_name": FileKind.EXPERT_OPTIM_STATES,
    "expert_optim_states": FileKind.EXPERT_OPTIM_STATES,
    "get_layer_ckpt_name_for_rank": FileKind.LAYER_MODEL_STATES,
    "_get_layer_ckpt_name": FileKind.LAYER_MODEL_STATES,
    "layer_model_states": FileKind.LAYER_MODEL_STATES,
    "_get_expert_ckpt_name": FileKind.EXPERT_MODEL_STATES,
    "expert_model_states": FileKind.EXPERT_MODEL_STATES,
    "get_model_ckpt_name_for_rank": FileKind.MODEL_STATES,
    "_get_ckpt_name": FileKind.MODEL_STATES,
    "model_states": FileKind.MODEL_STATES,
    "zero3_model_states": FileKind.ZERO3_MODEL_STATES,
    "optim_states": FileKind.OPTIM_STATES,
}


def _called(node: ast.Call) -> str | None:
    func = node.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def dotted(node: ast.AST) -> str | None:
    """``U.get_name`` for ``U.get_name``, ``f`` for ``f``; ``None`` for any other expression."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


class PathReader:
    """The origins of the expressions of one module, each worked out once, on demand.

    ``known``: functions defined elsewhere (by the name they are called by: ``f``, ``U.f``) and
    what they return; the module's own functions are read here. It is only asked about names
    called (``name in known``), so project mode passes a mapping that resolves them as asked.
    ``passed``: what calls in the project's other modules pass a parameter of a top-level function
    of the module (project mode), asked where the module's own calls pass it nothing known;
    ``constant``: what a name the module does not bind holds (one it imports: project mode).
    """

    def __init__(
        self,
        tree: ast.AST,
        known: Mapping[str, Origin] | None = None,
        parents: dict[int, ast.AST] | None = None,
        functions: Iterable[ast.FunctionDef | ast.AsyncFunctionDef] | None = None,
        calls: Iterable[tuple[ast.AST, str]] | None = None,
        passed: Callable[[ast.FunctionDef | ast.AsyncFunctionDef, str], Origin | None] | None = None,
        constant: Callable[[str], Origin | None] | None = None,
    ) -> None:
        self.tree = tree
        self.known: Mapping[str, Origin] = known if known is not None else {}
        self.passed, self.constant = passed, constant
        if parents is None or functions is None or calls is None:  # (the linter passes what its walk found)
            parents, functions, calls = {}, [], []
            for node in ast.walk(tree):
                for child in ast.iter_child_nodes(node):
                    parents[id(child)] = node
                if isinstance(node, _FUNCTIONS):
                    functions.append(node)
                elif isinstance(node, ast.Call) and (called := _called(node)) is not None:
                    calls.append((node, called))
        self.parents = parents
        self.calls: dict[str, list[ast.Call]] = {}  # the module's calls by the name called
        for call, name in calls:
            if isinstance(call, ast.Call):
                self.calls.setdefault(name, []).append(call)
        self.functions: dict[str, list[ast.FunctionDef | ast.AsyncFunctionDef]] = {}
        for function in functions:
            self.functions.setdefault(function.name, []).append(function)
        self._bindings: dict[int, dict[str, list[ast.AST]]] = {}
        self._returns: dict[int, Origin | None] = {}
        self._busy: set[int] = set()

    # -- scopes and bindings ------------------------------------------------------------------

    def scopes(self, node: ast.AST) -> list[ast.AST]:
        """The functions holding ``node``, innermost first, then the module."""
        found: list[ast.AST] = []
        parent = self.parents.get(id(node))
        while parent is not None:
            if isinstance(parent, _FUNCTIONS):
                found.append(parent)
            parent = self.parents.get(id(parent))
        return [*found, self.tree]

    def bindings(self, scope: ast.AST) -> dict[str, list[ast.AST]]:
        """Name -> the expressions bound to it in ``scope`` (not in functions inside it): assigned,
        iterated over (a loop's or comprehension's variable: an element of them; a path list and its
        paths have one origin), a parameter's default, ``with ... as`` it."""
        cached = self._bindings.get(id(scope))
        if cached is not None:
            return cached
        found: dict[str, list[ast.AST]] = {}

        def bind(target: ast.AST, value: ast.AST, each: bool = False) -> None:
            if isinstance(target, ast.Name):
                found.setdefault(target.id, []).append(value)
            elif (  # for i, f in enumerate(files)
                each
                and isinstance(target, ast.Tuple)
                and len(target.elts) == 2
                and isinstance(value, ast.Call)
                and _called(value) == "enumerate"
                and value.args
            ):
                bind(target.elts[1], value.args[0])

        if isinstance(scope, _FUNCTIONS):
            arguments = scope.args
            positional = [*arguments.posonlyargs, *arguments.args]
            with_defaults = positional[len(positional) - len(arguments.defaults) :]
            for argument, default in zip(with_defaults, arguments.defaults, strict=True):
                bind(ast.Name(argument.arg), default)
            for argument, kw_default in zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True):
                if kw_default is not None:
                    bind(ast.Name(argument.arg), kw_default)
            body: list[ast.AST] = list(scope.body)
        else:
            body = [scope]
        stack = body
        while stack:
            node = stack.pop()
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    bind(target, node.value)
            elif isinstance(node, (ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
                bind(node.target, node.value)
            elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
                bind(node.target, node.iter, each=True)
            elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                bind(node.optional_vars, node.context_expr)
            for child in ast.iter_child_nodes(node):
                if not isinstance(child, (*_FUNCTIONS, ast.ClassDef)):
                    stack.append(child)
        self._bindings[id(scope)] = found
        return found

    # -- origins ------------------------------------------------------------------------------

    def origin(self, node: ast.AST) -> Origin | None:
        """What ``node`` holds: a DeepSpeed file's name or path, what loading one returned, or ``None``."""
        if id(node) in self._busy:
            return None
        self._busy.add(id(node))
        try:
            return self._origin(node)
        finally:
            self._busy.discard(id(node))

    def _origin(self, node: ast.AST) -> Origin | None:
        if isinstance(node, (ast.Constant, ast.JoinedStr)) or (
            isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod))
        ):
            named = file_name(node)
            if named is not None:
                return Origin(False, named[1], named[0])
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
                return self._path(node.right)  # a folder + "/" + name
            return None
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):  # Path(d) / tag / name
            return self._path(node.right) or self._path(node.left)
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.Subscript):
            return self.read(node.value, node.slice)
        if isinstance(node, (ast.ListComp, ast.GeneratorExp, ast.SetComp)):
            return self.origin(node.elt)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            return next((o for o in map(self.origin, node.elts) if o is not None), None)
        if isinstance(node, ast.IfExp):
            return self.origin(node.body) or self.origin(node.orelse)
        if isinstance(node, ast.Await):
            return self.origin(node.value)
        if isinstance(node, ast.Call):
            return self.call(node)
        return None

    def _path(self, node: ast.AST) -> Origin | None:
        found = self.origin(node)
        return found if found is not None and not found.loaded else None

    def call(self, node: ast.Call) -> Origin | None:
        name = _called(node)
        if name is None:
            return None
        func = node.func
        if name == "format" and isinstance(func, ast.Attribute) and isinstance(func.value, ast.Constant):
            named = file_name(node)
            return Origin(False, named[1], named[0]) if named is not None else None
        arguments = [*node.args, *(k.value for k in node.keywords if k.arg in (None, "f", "path", "pathname"))]
        if name in LOADING and node.args:
            found = self._path(node.args[0])
            return Origin(True, found.kind, found.text, via=found.via) if found is not None else None
        if name in _JOINING or name in _KEEPING:
            for argument in reversed(arguments if name in _JOINING else arguments[:1]):
                found = self._path(argument)
                if found is not None:
                    return found
            return None
        if name in _GLOBBING:  # glob.glob(pattern), Path(d).glob(pattern): the files it matches
            return self._path(arguments[0]) if arguments else None
        if name in _KEEPING_METHODS and isinstance(func, ast.Attribute):
            if name in ("with_name", "joinpath") and node.args:
                return self._path(node.args[-1])
            return self._path(func.value)
        if name in _READING_METHODS and isinstance(func, ast.Attribute) and node.args:
            return self.read(func.value, node.args[0])
        if name in DS_NAME_FUNCTIONS:  # get_checkpoint_files(d, "*_model_states.pt"): the glob's kind
            given = next((found for found in map(self._path, arguments) if found is not None), None)
            return given or Origin(False, _BY_FUNCTION.get(name), f"{name}()")
        called = dotted(func)
        if called is not None and called in self.known:  # a helper of another module (project mode)
            return self.known[called]
        for function in self.functions.get(name, ()):
            found = self.returns(function)
            if found is not None:
                return found
        return None

    def read(self, mapping: ast.AST, key: ast.AST) -> Origin | None:
        """``mapping[key]`` or ``mapping.get(key)``: an element of paths, or a level down a loaded file."""
        found = self.origin(mapping)
        if found is None:
            return None
        if not found.loaded:
            return found  # files[0]
        if isinstance(key, ast.Constant) and type(key.value) is str:
            return Origin(True, found.kind, found.text, (*found.keys, key.value), found.via)
        return found  # states[i]: one of the files loaded

    def name(self, node: ast.Name) -> Origin | None:
        for scope in self.scopes(node):
            for value in self.bindings(scope).get(node.id, ()):
                found = self.origin(value)
                if found is not None:
                    return found
            if isinstance(scope, _FUNCTIONS):
                found = self.argument(scope, node.id)
                if found is not None:
                    return found
        if self.constant is not None and node.id not in self.bindings(self.tree):
            return self.constant(node.id)
        return None

    def argument(self, function: ast.FunctionDef | ast.AsyncFunctionDef, name: str) -> Origin | None:
        """What the module's calls of ``function`` pass as its parameter ``name``: ``files`` of
        ``parse_model_states(files)`` called as ``parse_model_states(get_model_state_files(d))``."""
        arguments = function.args
        positional = [a.arg for a in (*arguments.posonlyargs, *arguments.args)]
        if name not in positional and name not in (a.arg for a in arguments.kwonlyargs):
            return None
        method = isinstance(self.parents.get(id(function)), ast.ClassDef) and positional[:1] in (["self"], ["cls"])
        for call in self.calls.get(function.name, ()):
            given = next((k.value for k in call.keywords if k.arg == name), None)
            if given is None and name in positional:
                at = positional.index(name) - (1 if method and isinstance(call.func, ast.Attribute) else 0)
                before = call.args[: at + 1] if at >= 0 else []
                if at >= 0 and len(before) == at + 1 and not any(isinstance(a, ast.Starred) for a in before):
                    given = call.args[at]  # (at -1: `self` of a method called through its instance)
            found = self.origin(given) if given is not None else None
            if found is not None:
                return found
        if self.passed is not None and self.parents.get(id(function)) is self.tree:
            return self.passed(function, name)  # (a top-level function: what other modules pass it)
        return None

    def returns(self, function: ast.FunctionDef | ast.AsyncFunctionDef) -> Origin | None:
        """What ``function`` returns: a DeepSpeed file name or path, what loading one returned, or ``None``."""
        if id(function) in self._returns:
            return self._returns[id(function)]
        self._returns[id(function)] = None  # a recursive helper: nothing, while it is read
        found: Origin | None = None
        stack: list[ast.AST] = list(function.body)
        while stack and found is None:
            node = stack.pop(0)
            if isinstance(node, ast.Return) and node.value is not None:
                found = self.origin(node.value)
            inner = ast.iter_child_nodes(node)
            stack += [c for c in inner if not isinstance(c, (*_FUNCTIONS, ast.ClassDef, ast.Lambda))]
        self._returns[id(function)] = found
        return found


def returned_origin(
    function: ast.FunctionDef | ast.AsyncFunctionDef,
    known: Mapping[str, Origin] | None = None,
    module: ast.Module | None = None,
) -> Origin | None:
    """What a function definition returns, as far as DeepSpeed files go: ``Origin(loaded=False, ...)``
    when it returns a DeepSpeed checkpoint file's name or path (or a list of them: a glob), an
    ``Origin(loaded=True, ...)`` when it returns what ``torch.load`` gave for one (or a mapping
    read from it, ``keys`` saying which), ``None`` otherwise.

    Pure: reads only ``function`` (its body, its parameters' defaults), the functions and
    module-level names of ``module`` when given (the module that defines it, whose calls of its
    functions also give their parameters), and ``known``:
    what helpers defined elsewhere return, by the name they are called by (so that project mode
    can pass what it found in other modules). Names are followed through assignments, loops and
    comprehensions; DeepSpeed's and ckptkeys' name functions (``get_optim_files``,
    ``naming.model_states``) count as names.
    """
    reader = PathReader(module if module is not None else function, known)
    return reader.returns(function)


def level_group(value: str, chain: tuple[str, ...], kind: FileKind | None, below: str | None) -> str | None:
    """The key group of ``value`` by the dict level it is read at, or ``None`` where that says nothing.

    ``chain``: the literal keys read before it, from the file's mapping down (``kind`` known) or
    from whatever mapping the expression starts at (``kind`` ``None``); ``below``: a literal key
    read from what ``value`` looks up, if any. ``optim["optimizer_state_dict"]["overflow"]``:
    ``'optimizer_state_dict'`` is read at a file's top level, since ``'overflow'`` below it is a
    key of the optimizer state, ``OptimFileKeys``; ``'overflow'`` below that key, ``OptimizerKeys``.
    """
    index = registry_index()
    groups = index.group_of_value.get(value, set())
    if len(groups) < 2:
        return None
    # From the file (or from any group, where the file is not known) down the chain of keys.
    levels: set[str] | None = {TOP_GROUP[kind]} if kind in TOP_GROUP else None
    for key in chain:
        starts = levels if levels is not None else index.group_of_value.get(key, set())
        levels = {BELOW[(group, key)] for group in starts if (group, key) in BELOW}
        if not levels:
            levels = None
            break
    fits = groups & levels if levels is not None else set(groups)
    if below is not None:
        beneath = index.group_of_value.get(below, set())
        narrowed = {group for group in fits if BELOW.get((group, value)) in beneath}
        if narrowed:
            fits = narrowed
    if len(fits) == 1 and fits != groups:
        return next(iter(fits))
    return None
