"""``--storage-options``: what the command passes to the filesystem of a URL (docs/remote.md).

Given as one JSON object (``--storage-options '{"endpoint_url": "http://..."}'``) or as
``KEY=VALUE`` pairs, the option repeated for each (``--storage-options anon=true``). A VALUE is read
as JSON when it is JSON (``true``, ``3``, ``"x"``, ``{...}``) and as the text it is otherwise
(``endpoint_url=http://127.0.0.1:9000``). Several options merge, a later key replacing an earlier.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .._read._source import is_url

__all__ = ["add_storage_options", "storage_options"]


def add_storage_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--storage-options",
        metavar="JSON|KEY=VALUE",
        action="append",
        help="a URL's filesystem options (fsspec), e.g. endpoint_url=http://... or '{\"anon\": true}'; repeatable",
    )


def storage_options(given: list[str] | None, path: str | None) -> dict[str, Any] | None:
    """The options ``given`` (``--storage-options``, each one JSON object or KEY=VALUE) merged, or
    None if none was given. ValueError, with the message the command prints, for one that is neither,
    or for options given with a local ``path`` (they are for a URL's filesystem)."""
    if not given:
        return None
    if path is not None and not is_url(path):
        raise ValueError(f"--storage-options apply to a URL (s3://, gs://, hf://, ...), not to the local path {path!r}")
    options: dict[str, Any] = {}
    for text in given:
        options.update(_one(text))
    return options


def _one(text: str) -> dict[str, Any]:
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError as error:
            raise ValueError(f"--storage-options {text!r}: not a JSON object ({error.msg})") from None
        if not isinstance(value, dict):  # '{' starts no other JSON value; kept for a reader of this code
            raise ValueError(f"--storage-options {text!r}: not a JSON object")
        return value
    key, equals, raw = text.partition("=")
    key = key.strip()
    if not equals or not key:
        raise ValueError(f"--storage-options {text!r}: give a JSON object or KEY=VALUE")
    try:
        return {key: json.loads(raw)}
    except json.JSONDecodeError:
        return {key: raw}
