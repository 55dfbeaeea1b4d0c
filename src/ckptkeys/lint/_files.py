"""Python files: which to lint under the paths given, their text decoded, and their lines as Python counts them."""

from __future__ import annotations

import io
import os
import tokenize

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import Final

_SKIPPED_DIRS: Final = frozenset({"__pycache__", "node_modules", "site-packages"})


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
    paths: Iterable[str | os.PathLike[str]], *, excluded: Callable[[str], bool] | None = None
) -> Iterator[str]:
    """Every ``.py`` file under ``paths`` (files as given; folders walked, sorted, skipping
    hidden folders, ``__pycache__``, ``node_modules`` and ``site-packages``, and the files and
    folders found there for which ``excluded(path)`` is true: ruff's ``exclude``)."""
    for path in paths:
        path = os.fspath(path)
        if not os.path.isdir(path):
            yield path
            continue
        for folder, dirs, files in os.walk(path):
            dirs[:] = sorted(
                d
                for d in dirs
                if not d.startswith(".")
                and d not in _SKIPPED_DIRS
                and not (excluded is not None and excluded(os.path.join(folder, d)))
            )
            for name in sorted(files):
                found = os.path.normpath(os.path.join(folder, name))
                if name.endswith(".py") and not (excluded is not None and excluded(found)):
                    yield found
