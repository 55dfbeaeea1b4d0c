"""Which files git ignores: the ``.gitignore`` files of a work tree, read as git reads them.

``lint`` walks a folder as ``ruff check`` does, and ruff (through the ``ignore`` crate) leaves
out what git ignores: the patterns of ``.gitignore`` in every folder from the top of the work
tree down, and of ``.git/info/exclude``, inside a git work tree only (a folder with ``.git``
at or above it; elsewhere a ``.gitignore`` is not read, as ruff does not read it).

The patterns are those of gitignore(5): blank lines and ``#`` comments skipped, trailing spaces
dropped unless escaped (``\\ ``), ``!`` negates (``\\!`` is a literal ``!``), a trailing ``/``
matches folders only, a ``/`` at the start or in the middle anchors the pattern to the folder of
its ``.gitignore`` (without one it matches at any depth), ``*`` and ``?`` do not cross ``/``,
``[a-z]``/``[!a-z]``/``[[:digit:]]`` are classes, a leading ``**/``, a trailing ``/**`` and a middle ``/**/``
match any number of folders (other ``**`` are ``*``), ``\\`` escapes the next character.
Within a work tree the last pattern that matches decides, ``.git/info/exclude`` first, then each
``.gitignore`` from the top down (so a deeper one overrides a higher one). The walk skips an
ignored folder whole, so, as in git, a file cannot be re-included under an ignored folder. A
folder holding its own ``.git`` (a nested repository) starts afresh.

ruff also reads ``.ignore`` files (ripgrep's, same patterns) in every folder from the root of
the file system down, inside a work tree or not, and they win over ``.gitignore``: a path one of
them matches (ignored or re-included by ``!``) is decided by them. So does this. Not read: the global
excludes file (``core.excludesFile``), ``.git/info/exclude`` of a work tree whose ``.git`` is a
file. ``.gitignore`` symlinks are not followed, as git
2.32 and later do not follow them.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = ["GitIgnores", "Rule", "parse_gitignore"]

MAX_GITIGNORE_BYTES: Final = 100 * 1024 * 1024
"""A larger ``.gitignore`` is not read (git's own limit, ``PATTERN_MAX_FILE_SIZE``)."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One pattern of a ``.gitignore``: the folder it is relative to, and what it matches."""

    base: str
    """The absolute folder of the file the pattern is in (the work tree's top for ``info/exclude``)."""
    regex: re.Pattern[str]
    """Matches the whole path relative to ``base``, with ``/`` between its parts."""
    negated: bool
    dir_only: bool

    def matches(self, path: str, is_dir: bool) -> bool:
        """Whether the pattern matches ``path`` (absolute and normalised, under ``base``)."""
        if self.dir_only and not is_dir:
            return False
        return self.regex.fullmatch(_relative(path, self.base)) is not None


def _relative(path: str, base: str) -> str:
    """``path`` relative to ``base``, a folder above it, with ``/`` between the parts (a slice:
    ``os.path.relpath`` per rule and entry took 2.3 s of a 2.6 s walk of 14,895 files)."""
    relative = path[len(base) :].lstrip(os.sep)
    return relative if os.sep == "/" else relative.replace(os.sep, "/")


def parse_gitignore(text: str, base: str) -> list[Rule]:
    """The rules of one ``.gitignore``'s text, whose folder is ``base``, in their order."""
    rules = []
    for line in text.split("\n"):
        rule = _rule(line, base)
        if rule is not None:
            rules.append(rule)
    return rules


def _rule(line: str, base: str) -> Rule | None:
    line = line.removesuffix("\r")  # a CRLF file: git (2.39, measured) and ruff drop the CR first
    if not line or line.startswith("#"):
        return None
    # Trailing spaces go, unless the last is escaped (`foo\ `: a name ending in a space).
    end = len(line)
    while end > 0 and line[end - 1] == " " and not (end > 1 and line[end - 2] == "\\"):
        end -= 1
    line = line[:end]
    negated = line.startswith("!")
    if negated:
        line = line[1:]
    dir_only = line.endswith("/") and not line.endswith("\\/")
    if dir_only:
        line = line[:-1]
    anchored = "/" in line
    line = line.removeprefix("/")
    if not line:
        return None
    body = _translate(line)
    if body is None:
        return None  # an unfinished escape: git's pattern matches nothing
    regex = re.compile(body if anchored else f"(?:.*/)?{body}", re.DOTALL)
    return Rule(os.path.abspath(base), regex, negated, dir_only)


def _translate(pattern: str) -> str | None:
    """The regular expression of one pattern's glob (git's wildmatch with its pathname rule)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "*":
            j = i
            while j < n and pattern[j] == "*":
                j += 1
            whole_part = (i == 0 or pattern[i - 1] == "/") and (j == n or pattern[j] == "/")
            if j - i >= 2 and whole_part:
                if j == n:
                    out.append(".*")  # `/**` at the end, or `**` alone: everything
                else:
                    out.append("(?:.*/)?")  # `**/`: zero or more folders
                    j += 1
            else:
                out.append("[^/]*")
            i = j
        elif char == "?":
            out.append("[^/]")
            i += 1
        elif char == "[":
            found = _bracket(pattern, i)
            if found is None:
                out.append(re.escape(char))
                i += 1
            else:
                text, i = found
                out.append(text)
        elif char == "\\":
            if i + 1 >= n:
                return None
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(char))
            i += 1
    return "".join(out)


_POSIX_CLASSES: Final = {
    "alnum": "a-zA-Z0-9",
    "alpha": "a-zA-Z",
    "blank": " \\t",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
    "space": " \\t\\n\\r\\f\\v",
    "upper": "A-Z",
    "xdigit": "0-9a-fA-F",
}
"""The POSIX classes of git's wildmatch (``[[:digit:]]``), in the C locale, as regular-expression class bodies."""


def _bracket(pattern: str, start: int) -> tuple[str, int] | None:
    """A ``[...]`` class at ``start`` as a regular-expression class and the index after it;
    ``None`` where it is not closed (then the ``[`` is literal). A class never matches ``/``."""
    i = start + 1
    negated = i < len(pattern) and pattern[i] in "!^"
    if negated:
        i += 1
    parts: list[str] = []
    first = True
    while i < len(pattern):
        char = pattern[i]
        if char == "]" and not first:
            body = "".join(parts)
            return (f"[^/{body}]" if negated else f"(?!/)[{body}]"), i + 1
        if char == "[" and pattern.startswith("[:", i):
            end = pattern.find(":]", i + 2)
            name = pattern[i + 2 : end] if end > 0 else ""
            if name not in _POSIX_CLASSES:
                return None  # an unknown class: the `[` literal (git's wildmatch then matches nothing)
            parts.append(_POSIX_CLASSES[name])
            i = end + 2
        elif char == "\\" and i + 1 < len(pattern):
            parts.append(re.escape(pattern[i + 1]))
            i += 2
        elif char == "-" and parts and i + 1 < len(pattern) and pattern[i + 1] != "]":
            parts.append("-")
            i += 1
        else:
            parts.append(re.escape(char))
            i += 1
        first = False
    return None


class GitIgnores:
    """The rules in force in each folder of a walk, read once per folder.

    :meth:`ignored` tells whether git ignores an entry found in a folder; outside a git work
    tree nothing is ignored.
    """

    def __init__(self) -> None:
        self._rules: dict[str, tuple[Rule, ...] | None] = {}
        self._dot_ignore: dict[str, tuple[Rule, ...]] = {}

    def dot_ignore(self, folder: str) -> tuple[Rule, ...]:
        """The rules of the ``.ignore`` files of ``folder`` and every folder above it."""
        folder = os.path.abspath(folder)
        found = self._dot_ignore.get(folder)
        if found is None:
            parent = os.path.dirname(folder)
            inherited = () if parent == folder else self.dot_ignore(parent)
            found = (*inherited, *_read(os.path.join(folder, ".ignore"), folder))
            self._dot_ignore[folder] = found
        return found

    def rules(self, folder: str) -> tuple[Rule, ...] | None:
        """The rules that apply to the entries of ``folder``: ``None`` outside a work tree."""
        folder = os.path.abspath(folder)
        if folder in self._rules:
            return self._rules[folder]
        git = os.path.join(folder, ".git")
        inherited: tuple[Rule, ...] | None
        if os.path.lexists(git):  # the top of a work tree, or a nested repository: afresh
            inherited = tuple(_read(os.path.join(git, "info", "exclude"), folder)) if os.path.isdir(git) else ()
        else:
            parent = os.path.dirname(folder)
            inherited = None if parent == folder else self.rules(parent)
        found = None if inherited is None else (*inherited, *_read(os.path.join(folder, ".gitignore"), folder))
        self._rules[folder] = found
        return found

    def ignored(self, path: str, is_dir: bool) -> bool:
        """Whether git ignores ``path``, an entry of a folder the walk reached (its folders above
        are taken as not ignored: the walk does not enter an ignored one)."""
        path = os.path.abspath(path)
        folder = os.path.dirname(path)
        for rules in (self.dot_ignore(folder), self.rules(folder) or ()):  # .ignore first, as ruff
            relative: dict[str, str] = {}  # by base: computed once for the rules of one file
            for rule in reversed(rules):
                if rule.dir_only and not is_dir:
                    continue
                text = relative.get(rule.base)
                if text is None:
                    text = relative[rule.base] = _relative(path, rule.base)
                if rule.regex.fullmatch(text) is not None:
                    return not rule.negated
        return False


def _read(path: str, base: str) -> list[Rule]:
    """The rules of the ignore file at ``path`` (none where there is no regular file there)."""
    try:
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_GITIGNORE_BYTES:
            return []
        with open(path, "rb") as stream:
            data = stream.read(MAX_GITIGNORE_BYTES + 1)
    except OSError:
        return []
    text = data.decode("utf-8", "surrogateescape")
    return parse_gitignore(text.removeprefix("\ufeff"), base)
