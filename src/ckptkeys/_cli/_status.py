"""The exit statuses of every command, one convention for all (docs/cli.md "Exit status").

- 0: done, nothing wrong.
- 1: problems found: error problems in a checkpoint (inspect, validate), findings left (lint),
  a checkpoint export refuses because ``validate`` reports an error for it.
- 2: the command cannot do what was asked as it was asked: a bad option or argument, a PATH that
  does not exist or is not a checkpoint (a file that cannot be read, is corrupt or is something
  else), an output path that is a file, an output that exists without ``--overwrite``, a tag or
  save the checkpoint does not have, a cast that needs numpy where it is not installed.
- 74 (sysexits.h's EX_IOERR): standard output or the output folder cannot be written (a full
  disk, ``> /dev/full``, a read-only folder).
- 128 + N: ended by signal N (129 SIGHUP, 130 SIGINT, 143 SIGTERM; ``_signals``).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

    from .._read._errors import ReadError

__all__ = [
    "EXIT_MEANINGS",
    "EXIT_OK",
    "EXIT_OUTPUT",
    "EXIT_PROBLEMS",
    "EXIT_USAGE",
    "OPTIONS",
    "fail",
    "fail_read",
    "say",
]

EXIT_OK: Final = 0
EXIT_PROBLEMS: Final = 1  # problems found: error problems, lint findings, an export validation refuses
EXIT_USAGE: Final = 2  # bad arguments, or an input (PATH, OUT_DIR's path) that is not what the command needs
EXIT_OUTPUT: Final = 74  # standard output or the output folder cannot be written (sysexits.h's EX_IOERR)
# What each means, as the JSON documents of inspect and validate say it.
EXIT_MEANINGS: Final = {
    EXIT_OK: "no error problem (warnings and info may exist)",
    EXIT_PROBLEMS: "at least one error problem",
    EXIT_USAGE: "usage error, or PATH does not exist, cannot be read or holds no checkpoint",
    EXIT_OUTPUT: "standard output or the output folder cannot be written",
}
# What the command adds to an error whose ``option`` (``ExportError.option``: the keyword argument
# at fault, or the one that resolves it) names one: the option as it is typed on the command line.
# The library's messages name no option in any spelling; "" adds nothing (the message says it).
OPTIONS: Final = {
    "tag": "--tag TAG chooses the tag",
    "tp_rank": "--tp-rank K chooses the rank",
    "overwrite": "--overwrite replaces it",
    "save": "--save NAME chooses the save",
    "dtype": "--dtype chooses the output dtype",
    "weights": "--weights module exports them",
    "index_only": "--index-only is for a sharded export",
    "out_dir": "",
}


def say(line: str) -> None:
    """Write ``line`` and its newline to standard error in one write.

    ``print`` writes the text and then the newline: a signal between the two writes would
    glue the command's ``interrupted`` line to the end of this one. One write lands whole before
    the signal's handler runs, or (interrupted inside its flush) stays buffered and is written
    first, so the ``interrupted`` line always starts a line of its own."""
    import sys

    sys.stderr.write(line + "\n")


def fail(
    command: str,
    status: int,
    message: str,
    *,
    json_too: bool = False,
    path: str | None = None,
    error: str = "UsageError",
    facts: dict[str, object] | None = None,
) -> int:
    """Report a failure of ``command`` as every command does: one line on standard error,
    ``ckptkeys COMMAND: message`` (the message starts with the path or the option at fault),
    and with ``--json`` (``json_too``) one document on standard output as well, so that a
    script never parses standard error. Returns ``status``."""
    import json

    from ._report_text import shown

    # Names from a file or folder (a tag, a save) may hold control characters: escaped on the
    # terminal, so that one error is one line and no escape sequence reaches it; the JSON is exact.
    say(f"ckptkeys {command}: {shown(message)}")
    if json_too:
        document = {
            "schema_version": 1,
            "command": command,
            "path": path,
            "error": {"type": error, "message": message, **(facts or {})},
            "exit": {"status": status, "meaning": EXIT_MEANINGS[status]},
        }
        print(json.dumps(document, indent=2))
    return status


def fail_read(command: str, error: ReadError, *, json_too: bool, path: str | None, status: int = EXIT_USAGE) -> int:
    """:func:`fail` for a :class:`~ckptkeys.ReadError` (a PATH that does not exist, a file that
    cannot be read, a folder that holds no checkpoint), the same for every command: one line, with
    the globals the file's pickles named before the error (those ``torch.load`` would have imported
    before failing where ckptkeys stopped) unless the reason names them already, and a warning
    where one would run code; names from the file escaped on the terminal (``\\n``, ``\\x1b``).
    Its JSON error has the error's class, the exact message, ``code`` (the problem code a file
    would get in a folder) and ``globals`` (each with its class and why)."""
    from ._report import read_error
    from ._report_text import shown

    facts = read_error(error)
    message, names = str(error), ", ".join(ref["name"] for ref in facts["globals"])
    if names and names not in message:
        message += f"; its pickles name {names}"
    dangerous = ", ".join(ref["name"] for ref in facts["globals"] if ref["class"] == "code-execution")
    if dangerous:
        message += f"; {dangerous} would run code on torch.load(weights_only=False): never load it that way"
    return fail(
        command,
        status,
        shown(message),
        json_too=json_too,
        path=path,
        error=type(error).__name__,
        facts={"message": message, **facts},
    )
