"""The exit statuses of every command (documented in docs/cli.md)."""

from __future__ import annotations

__all__ = ["EXIT_MEANINGS", "EXIT_OK", "EXIT_OUTPUT", "EXIT_PROBLEMS", "EXIT_USAGE"]

EXIT_OK = 0
EXIT_PROBLEMS = 1  # the checkpoint has at least one error problem
EXIT_USAGE = 2  # bad arguments, or PATH itself does not exist or cannot be read
EXIT_OUTPUT = 74  # standard output cannot be written (sysexits.h's EX_IOERR): a full disk, /dev/full
# What each means, as the JSON documents of inspect and validate say it.
EXIT_MEANINGS = {
    EXIT_OK: "no error problem (warnings and info may exist)",
    EXIT_PROBLEMS: "at least one error problem",
    EXIT_USAGE: "usage error, or PATH does not exist, cannot be read or holds no checkpoint",
}
