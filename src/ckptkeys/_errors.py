"""Exceptions. Every error ckptkeys raises on purpose derives from :class:`CkptKeysError`."""

from __future__ import annotations

__all__ = [
    "CkptKeysError",
    "CorruptCheckpointError",
    "LimitError",
    "NotACheckpointError",
    "ReadError",
    "StructureError",
    "UnknownKeyError",
]


class CkptKeysError(Exception):
    """Base class of every error ckptkeys raises on purpose."""


class UnknownKeyError(CkptKeysError, ValueError):
    """A value that is not a member of the key group it was looked up in."""


class StructureError(CkptKeysError, ValueError):
    """A nested structure that cannot be processed (a cycle, for example)."""


class ReadError(CkptKeysError):
    """A file could not be read. ``path`` names it; ``reason`` says what is wrong."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[type[ReadError], tuple[str, str]]:
        return (type(self), (self.path, self.reason))


class NotACheckpointError(ReadError):
    """The file is not a torch checkpoint (neither torch's zip format nor its legacy format)."""


class CorruptCheckpointError(ReadError):
    """The file looks like a checkpoint but is truncated, inconsistent or malformed."""


class LimitError(ReadError):
    """Reading the file would exceed one of the reader's :class:`~ckptkeys.Limits`."""

    def __init__(self, path: str, limit: str, value: int) -> None:
        super().__init__(path, f"exceeds the reader's limit {limit}={value} (raise it with Limits({limit}=...))")
        self.limit = limit
        self.value = value

    def __reduce__(self) -> tuple[type[ReadError], tuple[str, str, int]]:  # type: ignore[override]
        return (type(self), (self.path, self.limit, self.value))
