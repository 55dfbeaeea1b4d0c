"""A global a pickle names, as the reader records it: never imported, only named."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GlobalRef"]


@dataclass(frozen=True, slots=True)
class GlobalRef:
    """A global (class or function) a pickle names: never imported, only recorded.

    ``module`` and ``name`` are what the real unpickler would import and look up, after the
    renaming it applies (see :func:`ckptkeys._read._pickle.find_class`); a ``name`` with dots is an attribute path it
    walks (protocol 4 and later). ``written`` holds the names as the pickle writes them where
    they differ.
    """

    module: str
    name: str
    written: tuple[str, str] | None = None

    @property
    def qualname(self) -> str:
        """``module.name``, as ``torch.serialization.add_safe_globals`` error messages show it."""
        return f"{self.module}.{self.name}"

    def __repr__(self) -> str:
        if self.written is not None:
            return f"GlobalRef({self.qualname}, written {self.written[0]}.{self.written[1]})"
        return f"GlobalRef({self.qualname})"
