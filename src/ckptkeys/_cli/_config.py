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

import os
import sys
from dataclasses import dataclass

from .._check._converters import CONVERTERS
from .._check._select import FAIL_ON, Selection, describe_codes, unknown_converters, unknown_selectors

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping, Sequence
    from typing import Any, Final

__all__ = ["TABLES", "Config", "ConfigError", "find_config", "read_config", "selection", "split_option"]

FILE: Final = "pyproject.toml"
TABLES: Final = ("validate",)
"""The tables ``[tool.ckptkeys]`` may hold, one per command that has settings."""
STRINGS: Final = "a list of strings"
STRING: Final = "a string"
VALIDATE_KEYS: Final[dict[str, str]] = {"select": STRINGS, "ignore": STRINGS, "fail-on": STRING, "require": STRINGS}
"""The keys of ``[tool.ckptkeys.validate]`` (read by ``validate`` and ``inspect``) and their types."""
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
            raise ConfigError(f'{path}: {name} {key}: must be {STRINGS}, such as ["missing-"], not {value!r}')
        if kind == STRING and not isinstance(value, str):
            raise ConfigError(f"{path}: {name} {key}: must be {STRING}, not {value!r}")
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
