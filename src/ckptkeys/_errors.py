"""The root of ckptkeys' exceptions, and the errors of the key groups.

Every error ckptkeys raises on purpose derives from :class:`CkptKeysError`. Each family lives
beside its concept: reading errors in ``ckptkeys._read._errors``, export errors in
``ckptkeys._export._types``; the package exports them all.
"""

from __future__ import annotations

__all__ = ["CkptKeysError", "StructureError", "UnknownKeyError"]


class CkptKeysError(Exception):
    """Base class of every error ckptkeys raises on purpose."""


class UnknownKeyError(CkptKeysError, ValueError):
    """A value that is not a member of the key group it was looked up in."""


class StructureError(CkptKeysError, ValueError):
    """A nested structure that cannot be processed (a cycle, for example)."""
