"""Problems: what scan and validation report, each with a severity, a stable code and a sentence."""

from __future__ import annotations

from dataclasses import dataclass

from .._keys._strenum import StrEnum
from .._read._repr import LINE_CHARS, clipped, shortened

__all__ = ["Problem", "Severity"]


class Severity(StrEnum):
    """How much a problem matters."""

    ERROR = "error"
    """The checkpoint is incomplete or inconsistent: resuming or converting it will fail."""
    WARNING = "warning"
    """Something a user should know: a converter will refuse it, a file was skipped."""
    INFO = "info"
    """Worth knowing, nothing to fix."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding about a checkpoint. ``code`` is stable; ``message`` is for people."""

    severity: Severity
    code: str
    message: str
    file: str | None = None
    """The file (or folder) concerned, as a path."""
    key_path: str | None = None
    """Where in the file's structure, as ``optimizer_state_dict/zero_stage``."""

    def __str__(self) -> str:
        where = self.file or ""
        if self.key_path:
            where += f" [{self.key_path}]"
        return f"{self.severity}: {self.code}: {where + ': ' if where else ''}{self.message}"

    def __repr__(self) -> str:
        """One line of at most ``LINE_CHARS`` characters: severity, code, the file's end, the key
        path, the message's start (``str(problem)`` is the whole line)."""
        head = f"<Problem {clipped(str(self.severity), 12)[1:-1]} {clipped(str(self.code), 40)[1:-1]}"
        if self.file is not None:
            head += f" {shortened(str(self.file), 60)}"
        if self.key_path is not None:
            head += f" [{clipped(str(self.key_path), 40)[1:-1]}]"
        room = max(LINE_CHARS - len(head) - 5, 16)
        return f"{head}: {clipped(str(self.message), room)}>"
