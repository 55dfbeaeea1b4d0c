"""Settings from ``pyproject.toml``: a command's table under ``[tool.ckptkeys]``, found as ruff finds its own.

Discovery, as ruff finds ``[tool.ruff]``: from the current directory upward, the first
``pyproject.toml`` that has a ``[tool.ckptkeys]`` table; one without it is skipped (ruff skips
those without ``[tool.ruff]``). ``--config PATH`` names the file instead and ``--isolated`` reads
none (the two exclude each other, as in ruff). The options given on the command line override
the keys of the table, key by key. An unknown table or key, a wrong type, a file that is not
TOML is a usage error naming the file, the table and the key.

TOML is read by ``tomllib`` (3.11+) or its backport ``tomli`` (the dependency on 3.10), imported
only when a ``pyproject.toml`` is read: ``import ckptkeys`` and a run without one never load it.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from dataclasses import dataclass

from .._check._converters import CONVERTERS
from .._check._select import FAIL_ON, Selection, describe_codes, unknown_converters, unknown_selectors

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any, Final

__all__ = [
    "TABLES",
    "Config",
    "ConfigError",
    "LintSettings",
    "find_config",
    "lint_settings",
    "read_config",
    "selection",
    "split_option",
]

FILE: Final = "pyproject.toml"
TABLES: Final = ("validate", "lint")
"""The tables ``[tool.ckptkeys]`` may hold, one per command that has settings."""
STRINGS: Final = "a list of strings"
STRING: Final = "a string"
TABLE: Final = "a table of lists of strings"
BOOLEAN: Final = "a boolean"
VALIDATE_KEYS: Final[dict[str, str]] = {"select": STRINGS, "ignore": STRINGS, "fail-on": STRING, "require": STRINGS}
"""The keys of ``[tool.ckptkeys.validate]`` (read by ``validate`` and ``inspect``) and their types."""
LINT_KEYS: Final[dict[str, str]] = {
    "select": STRINGS,
    "extend-select": STRINGS,
    "ignore": STRINGS,
    "exclude": STRINGS,
    "extend-exclude": STRINGS,
    "respect-gitignore": BOOLEAN,
    "per-file-ignores": TABLE,
}
"""The keys of ``[tool.ckptkeys.lint]``, as ruff's keys of the same names, and their types."""
LINT_KEY_DOCS: Final[dict[str, tuple[str, str]]] = {
    "select": (
        "every code",
        "the codes checked, as codes or prefixes; `[]` is a usage error (it would hide everything)",
    ),
    "extend-select": ("none", "codes or prefixes checked as well"),
    "ignore": ("none", "codes or prefixes not checked"),
    "exclude": (
        "ruff's default list",
        (
            "globs of the files and folders a walk skips; replaces the default list (keep it with `extend-exclude`); "
            "a file named on the command line is linted all the same, as in ruff"
        ),
    ),
    "extend-exclude": ("none", "globs skipped as well, the default list kept"),
    "respect-gitignore": (
        "true",
        "leave out what git ignores (`.gitignore`, `.git/info/exclude`) inside a git work tree",
    ),
    "per-file-ignores": (
        "none",
        "glob -> codes or prefixes not reported in the files matching the glob; `!glob`: in the files not matching it",
    ),
}
"""The default and the meaning of each key of ``LINT_KEYS``: docs/lint.md's table is generated from
these (``python scripts/regen.py``), and a test fails where a key lacks them."""
MAX_CONFIG_BYTES: Final = 16 * 1024 * 1024
"""The largest ``pyproject.toml`` read (ruff's own is ~30 KB): a device or a huge file is refused."""


class ConfigError(Exception):
    """A configuration that cannot be used: the message names the file, the table and the key."""


@dataclass(frozen=True, slots=True)
class Config:
    """One command's table: the file it came from (``None``: no file) and its keys."""

    path: str | None
    table: str
    """As written in the file: ``[tool.ckptkeys.validate]``."""
    values: dict[str, Any]


def find_config(start: str | None = None) -> str | None:
    """The closest ``pyproject.toml`` with a ``[tool.ckptkeys]`` table, from ``start`` (the current
    directory) upward; ``None`` if there is none. A file on the way that is not TOML is a ConfigError."""
    folder = os.path.abspath(start if start is not None else os.getcwd())
    while True:
        candidate = os.path.join(folder, FILE)
        if os.path.isfile(candidate) and _tool_table(candidate) is not None:
            return candidate
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def read_config(
    table: str, keys: Mapping[str, str], *, config: str | None = None, isolated: bool = False, start: str | None = None
) -> Config:
    """The table ``[tool.ckptkeys.<table>]`` of ``config`` (a file named with ``--config``), or of
    the file :func:`find_config` finds; empty with ``isolated`` or where there is none. Every key
    must be one of ``keys`` and have its type (``STRINGS`` or ``STRING``)."""
    name = f"[tool.ckptkeys.{table}]"
    if isolated:
        return Config(None, name, {})
    path = config if config is not None else find_config(start)
    if path is None:
        return Config(None, name, {})
    tool = _tool_table(path) or {}
    for key in tool:
        if key not in TABLES:
            raise ConfigError(f"{path}: [tool.ckptkeys] {key}: unknown table; the tables are {', '.join(TABLES)}")
    values = tool.get(table, {})
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: {name}: is not a table")
    for key, value in values.items():
        kind = keys.get(key)
        if kind is None:
            raise ConfigError(f"{path}: {name} {key}: unknown key; the keys are {', '.join(keys)}")
        if kind == STRINGS and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            example = '["CK1"]' if table == "lint" else '["missing-"]'  # a value of that table
            raise ConfigError(f"{path}: {name} {key}: must be {STRINGS}, such as {example}, not {value!r}")
        if kind == STRING and not isinstance(value, str):
            raise ConfigError(f"{path}: {name} {key}: must be {STRING}, not {value!r}")
        if kind == BOOLEAN and not isinstance(value, bool):
            raise ConfigError(f"{path}: {name} {key}: must be {BOOLEAN} (true or false), not {value!r}")
        if kind == TABLE and not (
            isinstance(value, dict)
            and all(isinstance(v, list) and all(isinstance(c, str) for c in v) for v in value.values())
        ):
            raise ConfigError(f'{path}: {name} {key}: must be {TABLE}, such as {{"tests/*" = ["CK1"]}}, not {value!r}')
    return Config(path, name, dict(values))


def _tool_table(path: str) -> dict[str, Any] | None:
    """The ``[tool.ckptkeys]`` table of the TOML file at ``path``, or ``None`` where it has none."""
    from .._read._errors import ReadError
    from .._read._files import read_small

    try:
        # As the reader opens files: a regular file only (a FIFO is refused, not waited on) and a
        # bounded read (--config /dev/zero would otherwise fill the memory).
        document = _loads(read_small(path, boundary=None, max_bytes=MAX_CONFIG_BYTES).decode("utf-8"))
    except ReadError as error:
        raise ConfigError(f"{path}: {error.reason}") from None
    except ValueError as error:  # TOMLDecodeError and UnicodeDecodeError are ValueErrors
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    tool = document.get("tool")
    found = tool.get("ckptkeys") if isinstance(tool, dict) else None
    if found is not None and not isinstance(found, dict):
        raise ConfigError(f"{path}: [tool.ckptkeys]: is not a table")
    return found


def _loads(text: str) -> dict[str, Any]:
    reader: Any
    if sys.version_info >= (3, 11):
        import tomllib as reader
    else:
        import importlib

        reader = importlib.import_module("tomli")  # tomllib's backport: the dependency tomli>=1.1 on 3.10
    document: dict[str, Any] = reader.loads(text)
    return document


def split_option(option: str, texts: Sequence[str] | None) -> list[str] | None:
    """The selectors of a list option (``--select``, ``--ignore``, ``--require``) given ``texts``
    times: each comma-separated, the repeats added together (``--select a --select b`` is
    ``--select a,b``, as ruff's list options accumulate); ``None`` if the option is not given.
    An occurrence that lists nothing (``--select ''``, ``--select ,``: an empty shell variable,
    most likely) is a ConfigError: it would otherwise select nothing and hide every problem."""
    if texts is None:
        return None
    values: list[str] = []
    for text in texts:
        parts = [part.strip() for part in text.split(",") if part.strip()]
        if not parts:
            raise ConfigError(f"{option} {text!r}: lists no code; give at least one, or leave {option} out")
        values += parts
    return values


def selection(args: argparse.Namespace) -> tuple[Selection, str | None]:
    """The selection of ``validate``/``inspect``: ``[tool.ckptkeys.validate]``, overridden key by key
    by ``--select``, ``--ignore``, ``--fail-on`` and ``--require``; and the file it came from.
    Raises ConfigError with what is wrong, an option named as typed, a key with its file and table."""
    config = read_config("validate", VALIDATE_KEYS, config=args.config, isolated=args.isolated)
    values: dict[str, Any] = {}
    for key, value in config.values.items():
        where = f"{config.path}: {config.table} {key}"
        if key == "select" and not value:  # selects nothing: every problem hidden, nothing fails
            raise ConfigError(f"{where}: [] selects no problem; list codes, or leave the key out for all")
        if key in ("select", "ignore"):
            _check_codes(where, value)
        elif key == "require":
            _check_converters(where, value)
        elif value not in FAIL_ON:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(FAIL_ON)}")
        values[key.replace("-", "_")] = value
    for option in ("select", "ignore", "require"):
        given = split_option(f"--{option}", getattr(args, option))
        if given is not None:
            if option == "require":
                _check_converters(f"--{option}", given)
            else:
                _check_codes(f"--{option}", given)
            values[option] = given
    if args.fail_on is not None:
        values["fail_on"] = args.fail_on
    return Selection(**values), config.path


def _check_codes(where: str, selectors: list[str]) -> None:
    unknown = unknown_selectors(selectors)
    if unknown:
        raise ConfigError(f"{where}: unknown code or prefix {unknown[0]!r}; {describe_codes()}")


def _check_converters(where: str, names: list[str]) -> None:
    unknown = unknown_converters(names)
    if unknown:
        raise ConfigError(f"{where}: unknown converter {unknown[0]!r}; the converters are {', '.join(CONVERTERS)}")


# -- lint: ruff's rule selection, exclusion and per-file ignores ----------------------------------------


@dataclass(frozen=True, slots=True)
class LintSettings:
    """What ``lint`` checks, from ``[tool.ckptkeys.lint]`` and the options, resolved as ruff resolves them."""

    enabled: frozenset[str]
    """The codes reported."""
    root: str
    """The folder the patterns are relative to: the config file's, else (none, or one named with
    ``--config``, as ruff) the current one."""
    exclude: tuple[str, ...]
    """``exclude`` (ruff's default list where unset) and ``extend-exclude`` together."""
    respect_gitignore: bool
    per_file_ignores: tuple[tuple[str, tuple[str, ...]], ...]
    config: str | None

    def excluded(self, path: str) -> bool:
        """Whether ``exclude`` leaves out ``path`` (a file or folder)."""
        return any(_glob_matches(path, self.root, pattern) for pattern in self.exclude)

    def excluded_named(self, path: str) -> bool:
        """``--force-exclude``: whether ``exclude`` leaves out a path given by name, it or a folder
        above it matching (``build`` leaves out ``build/copy.py``), as ruff checks it; the folders
        above the project's root (a ``build`` folder holding the whole checkout) do not count."""
        current = os.path.abspath(path)
        root = os.path.abspath(self.root)
        while True:
            if self.excluded(current):
                return True
            parent = os.path.dirname(current)
            if parent == current or not parent.startswith(root) or len(parent) <= len(root):
                return False
            current = parent

    def ignored(self, code: str, path: str) -> bool:
        """Whether ``per-file-ignores`` silences ``code`` in ``path`` (a ``!pattern``: every file it does not match)."""
        for pattern, codes in self.per_file_ignores:
            negated = pattern.startswith("!")
            if _glob_matches(path, self.root, pattern[1:] if negated else pattern) != negated and any(
                code.startswith(prefix) for prefix in codes
            ):
                return True
        return False


def _glob_matches(path: str, root: str, pattern: str) -> bool:
    """ruff's matching of ``exclude`` and ``per-file-ignores`` patterns: against the file's name, or
    against its whole path with the pattern taken relative to ``root``; the globs are globset's, as
    ruff's (:func:`_glob`)."""
    absolute = os.path.abspath(path)
    anchored = os.path.normpath(os.path.join(root, pattern))
    return bool(_glob(pattern).fullmatch(os.path.basename(absolute)) or _glob(anchored).fullmatch(absolute))


class GlobError(ValueError):
    """A pattern that is no glob (``[`` unclosed, ``{a,{b}}``): ruff refuses it, and so does lint."""


@functools.lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    """``pattern`` as ruff's globs read it (the globset crate, as ruff 0.17.6 configures it; each
    case measured against ``per-file-ignores`` there): ``*`` and ``?`` cross ``/``; ``**/`` at the
    start and ``/**/`` match zero or more folders, ``/**`` at the end everything below; ``[ab]``,
    ``[!a-z]`` (``^`` too) a character of a class; ``{a,b}`` either glob (``{a,{b,c}}`` too); ``\\``
    escapes the next character. Raises :class:`GlobError` as ruff refuses a pattern."""
    out: list[str] = []
    groups: list[list[list[str]]] = []  # the {...} open, innermost last: each its alternatives so far

    def emit(text: str) -> None:
        (groups[-1][-1] if groups else out).append(text)

    position, size = 0, len(pattern)
    while position < size:
        char = pattern[position]
        if char == "\\":
            if position + 1 == size:
                raise GlobError("dangling '\\'")
            emit(re.escape(pattern[position + 1]))
            position += 2
            continue
        if char == "*":
            stars = 1
            while position + stars < size and pattern[position + stars] == "*":
                stars += 1
            before = pattern[position - 1] if position else "/"
            after = pattern[position + stars] if position + stars < size else None
            if stars >= 2 and before == "/" and after == "/":  # **/ at the start, /**/: zero or more folders
                emit("(?:.*/)?")
                position += stars + 1
                continue
            emit(".*")  # *, and ** elsewhere (/** at the end: everything below)
            position += stars
            continue
        if char == "?":
            emit(".")
        elif char == "[":
            end = position + 1
            negated = end < size and pattern[end] in "!^"
            end += negated
            members = end
            if end < size and pattern[end] == "]":  # a ] right after [ (or [!) is a member
                end += 1
            while end < size and pattern[end] != "]":
                end += 1
            if end >= size:
                raise GlobError("unclosed character class; missing ']'")
            inner = "".join("\\" + c if c in "\\^[]" else c for c in pattern[members:end])
            emit(f"[{'^' if negated else ''}{inner}]")
            position = end + 1
            continue
        elif char == "{":
            groups.append([[]])
        elif char == "," and groups:
            groups[-1].append([])
        elif char == "}":
            if not groups:
                raise GlobError("unopened alternate group; missing '{' (maybe escape '}' with '[}]'?)")
            alternatives = groups.pop()
            emit("(?:" + "|".join("".join(a) for a in alternatives) + ")")
        else:
            emit(re.escape(char))
        position += 1
    if groups:
        raise GlobError("unclosed alternate group; missing '}' (maybe escape '{' with '[{]'?)")
    return re.compile("".join(out), re.DOTALL)


_Level = tuple[list[str] | None, list[str] | None, list[str] | None]


def _resolve(levels: Sequence[_Level], codes: Sequence[str]) -> frozenset[str]:
    """The codes enabled by ``levels`` of (select, extend-select, ignore), lowest priority first
    (the config, then the command line), as ruff resolves them: the last level that has a select
    is the base (every code where none has), its lower levels dropped; each level from there adds
    its (extend-)selected codes and removes its ignored ones, the longer prefix winning where a
    code is both selected and ignored at one level, and ignore winning a tie."""
    start = max((n for n, level in enumerate(levels) if level[0] is not None), default=-1)
    enabled = set(codes) if start < 0 else set()
    for number, (select, extend, ignore) in enumerate(levels):
        if number < start:
            continue
        selectors = [*(select or []), *(extend or [])]
        for code in codes:
            chosen = max((len(s) for s in selectors if code.startswith(s)), default=-1)
            dropped = max((len(s) for s in ignore or [] if code.startswith(s)), default=-1)
            if dropped >= 0 and dropped >= chosen:
                enabled.discard(code)
            elif chosen >= 0:
                enabled.add(code)
    return frozenset(enabled)


def lint_settings(args: argparse.Namespace, *, found: str | None = None) -> LintSettings:
    """``lint``'s settings: ``[tool.ckptkeys.lint]`` (``select``, ``extend-select``, ``ignore``,
    ``exclude``, ``per-file-ignores``), then ``--select``, ``--extend-select``, ``--ignore`` as a
    higher level, as ruff resolves rule selection; ``--exclude`` replaces ``exclude`` (ruff's
    default list where neither is given), ``extend-exclude`` and ``--extend-exclude`` add to it,
    ``--[no-]respect-gitignore`` overrides ``respect-gitignore`` (true by default). Codes are
    upper-cased. ``found``: the ``pyproject.toml`` to read (:func:`lint_settings_of`), not the one
    found from the current folder. Raises ConfigError naming the option as typed or the file,
    table and key."""
    from ..lint import CODES
    from ..lint._files import DEFAULT_EXCLUDE

    config = read_config("lint", LINT_KEYS, config=found or args.config, isolated=args.isolated)
    named = found is None and args.config is not None

    def codes(where: str, selectors: list[str]) -> list[str]:
        # ALL: every code, as ruff's ALL (the least specific selector: the empty prefix)
        selectors = ["" if s.upper() == "ALL" else s.upper() for s in selectors]
        for selector in selectors:
            if not any(known.startswith(selector) for known in CODES):
                raise ConfigError(f"{where} {selector}: unknown code; the codes are {', '.join(CODES)}")
        return selectors

    values = config.values
    where = f"{config.path}: {config.table}"
    if values.get("select") == []:
        raise ConfigError(f"{where} select: [] selects no code; list codes, or leave the key out for all")
    names = ("select", "extend-select", "ignore")
    in_file = [codes(f"{where} {k}:", values[k]) if k in values else None for k in names]
    given = [split_option(f"--{o}", getattr(args, o.replace("-", "_"))) for o in names]
    on_line = [codes(f"--{o}", g) if g is not None else None for o, g in zip(names, given, strict=True)]
    levels: list[_Level] = [(in_file[0], in_file[1], in_file[2]), (on_line[0], on_line[1], on_line[2])]
    exclude = split_option("--exclude", args.exclude)
    extend_exclude = split_option("--extend-exclude", args.extend_exclude) or []
    per_file = tuple(
        (pattern, tuple(codes(f"{where} per-file-ignores {pattern!r}:", selectors)))
        for pattern, selectors in values.get("per-file-ignores", {}).items()
    )
    # A pattern that is no glob is refused as ruff refuses it (it matched nothing, silently).
    for option, patterns in (
        ("--exclude", exclude or []),
        ("--extend-exclude", extend_exclude),
        (f"{where} exclude:", values.get("exclude", [])),
        (f"{where} extend-exclude:", values.get("extend-exclude", [])),
        (f"{where} per-file-ignores:", [p.removeprefix("!") for p, _ in per_file]),
    ):
        for pattern in patterns:
            try:
                _glob(pattern)
            except GlobError as error:
                raise ConfigError(f"{option} {pattern!r}: not a glob: {error}") from None
    return LintSettings(
        enabled=_resolve(levels, list(CODES)),
        # As ruff: a file named with --config has its patterns relative to the current folder, one
        # found (from here or above a file) to its own folder.
        root=os.path.dirname(os.path.abspath(config.path)) if config.path is not None and not named else os.getcwd(),
        exclude=(
            *(exclude if exclude is not None else values.get("exclude", DEFAULT_EXCLUDE)),
            *values.get("extend-exclude", []),
            *extend_exclude,
        ),
        respect_gitignore=(
            args.respect_gitignore if args.respect_gitignore is not None else values.get("respect-gitignore", True)
        ),
        per_file_ignores=per_file,
        config=config.path,
    )


def lint_settings_of(args: argparse.Namespace, base: LintSettings) -> Callable[[str], LintSettings]:
    """The settings of each file (or folder) ``lint`` meets, as ruff finds its configuration
    hierarchically: the closest ``pyproject.toml`` with a ``[tool.ckptkeys]`` table above the
    path, else ``base`` (the one found from the current folder, or none), each with the options
    of the command line over it. ``--config`` and ``--isolated`` make ``base`` the settings of
    every file, as in ruff. Each folder is looked at once, each file read once."""
    if args.config is not None or args.isolated:
        return lambda path: base
    closest: dict[str, str | None] = {}
    made: dict[str, LintSettings] = {base.config: base} if base.config is not None else {}

    def config_of(folder: str) -> str | None:
        passed: list[str] = []
        found: str | None = None
        while True:
            if folder in closest:
                found = closest[folder]
                break
            passed.append(folder)
            candidate = os.path.join(folder, FILE)
            if os.path.isfile(candidate) and _tool_table(candidate) is not None:
                found = candidate
                break
            parent = os.path.dirname(folder)
            if parent == folder:
                break
            folder = parent
        for folder in passed:
            closest[folder] = found
        return found

    def settings_of(path: str) -> LintSettings:
        found = config_of(os.path.dirname(os.path.abspath(path)))
        if found is None:
            return base
        if found not in made:
            made[found] = lint_settings(args, found=found)
        return made[found]

    return settings_of
