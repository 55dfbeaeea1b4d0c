"""Python files: which to lint under the paths given, their text decoded, and their lines as Python counts them."""

from __future__ import annotations

import io
import os
import tokenize

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import Final

DEFAULT_EXCLUDE: Final = (
    ".bzr",
    ".direnv",
    ".eggs",
    ".git",
    ".git-rewrite",
    ".hg",
    ".ipynb_checkpoints",
    ".mypy_cache",
    ".nox",
    ".pants.d",
    ".pyenv",
    ".pytest_cache",
    ".pytype",
    ".ruff_cache",
    ".svn",
    ".tox",
    ".venv",
    ".vscode",
    "__pypackages__",
    "_build",
    "buck-out",
    "dist",
    "node_modules",
    "site-packages",
    "venv",
)
"""The names a walk skips where no ``exclude`` is set: ruff 0.17.6's default ``exclude``, as
``ruff check --show-settings`` prints it (ruff's docs of older versions add ``build``; 0.17.6
lints a ``build`` folder, and so does this)."""


def physical_lines(source: str) -> list[str]:
    """The lines as Python counts them (\\n, \\r\\n or \\r; not form feeds), with their endings."""
    return io.StringIO(source, newline="").readlines()


def decode_source(raw: bytes) -> tuple[str, str]:
    """The text of a Python file and its encoding (PEP 263 declaration or BOM; UTF-8 by default).

    Raises :class:`SyntaxError` for an unknown or wrong encoding declaration and
    :class:`UnicodeDecodeError` for bytes that are not in the encoding.
    """
    encoding, _ = tokenize.detect_encoding(io.BytesIO(raw).readline)
    return raw.decode(encoding), encoding


def iter_python_files(
    paths: Iterable[str | os.PathLike[str]],
    *,
    excluded: Callable[[str], bool] | None = None,
    respect_gitignore: bool = False,
) -> Iterator[str]:
    """Every ``.py`` file under ``paths``, as ``ruff check`` finds them: files as given; folders
    walked, sorted, leaving out the files and folders found there for which ``excluded(path)``
    is true (ruff's ``exclude``; by default a name in :data:`DEFAULT_EXCLUDE`, ruff's default)
    and, with ``respect_gitignore``, those git ignores (``.gitignore`` files and
    ``.git/info/exclude``, inside a git work tree) or an ``.ignore`` file leaves out (ruff's
    ``respect-gitignore``)."""
    from ._gitignore import GitIgnores

    if excluded is None:
        excluded = _excluded_by_default
    ignores = GitIgnores() if respect_gitignore else None
    for path in paths:
        path = os.fspath(path)
        if not os.path.isdir(path):
            yield path
            continue
        for folder, dirs, files in os.walk(path):
            dirs[:] = sorted(
                d
                for d in dirs
                if not excluded(os.path.join(folder, d))
                and not (ignores is not None and ignores.ignored(os.path.join(folder, d), True))
            )
            for name in sorted(files):
                found = os.path.normpath(os.path.join(folder, name))
                if (
                    name.endswith(".py")
                    and not excluded(found)
                    and not (ignores is not None and ignores.ignored(found, False))
                ):
                    yield found


def _excluded_by_default(path: str) -> bool:
    return os.path.basename(path) in DEFAULT_EXCLUDE
