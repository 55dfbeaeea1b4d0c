"""One-line reprs for the REPL: ``<Class 'path': fact, fact>``, short whatever the object holds.

The results of ``read``, ``scan``, ``validate`` and ``plan_export`` hold whole structures; their
dataclass reprs ran to kilobytes. Their reprs say instead what the object is and how much it
holds (files, tensors, bytes, problems by severity); the structure stays in its attributes.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Final

__all__ = ["counted", "nbytes", "one_line", "severities"]

# A subject (a path, a tensor's name) longer than this shows its end: the file or tag name.
_SUBJECT_CHARS: Final = 64
_ELLIPSIS: Final = "..."
# Sizes from here on are shown rounded, in three digits.
_EXACT_BYTES: Final = 10**15
# Severities in the order a summary names them (the values of ckptkeys.Severity).
_SEVERITIES: Final = ("error", "warning", "info")


def one_line(obj: object, subject: str, facts: Iterable[str]) -> str:
    """``<Class 'subject': facts>``; a long ``subject`` keeps its last characters."""
    head = f"{type(obj).__name__} {_shortened(subject, _SUBJECT_CHARS)}"
    text = ", ".join(facts)
    return f"<{head}: {text}>" if text else f"<{head}>"


def _shortened(text: str, chars: int) -> str:
    """``repr(text)`` in at most ``chars`` characters and the quotes: if it is longer, an ellipsis
    and the end of ``text``. Escapes count: a control character takes four characters."""
    if len(shown := repr(text)) <= chars + 2:
        return shown
    keep = min(len(text), chars)
    while keep and len(repr(text[len(text) - keep :])) > chars + 2 - len(_ELLIPSIS):
        keep -= 1
    part = repr(text[len(text) - keep :])
    return part[0] + _ELLIPSIS + part[1:]


def counted(number: int, noun: str, plural: str | None = None) -> str:
    """``"1 tensor"``, ``"3 tensors"``."""
    return f"{number:,} {noun if number == 1 else plural or noun + 's'}"


def nbytes(number: int) -> str:
    """``"14,319 bytes"``: exact up to a petabyte, then ``"1.23e+18 bytes"``."""
    return counted(number, "byte") if number < _EXACT_BYTES else f"{number:.3g} bytes"


def severities(levels: Iterable[str]) -> str:
    """``"2 errors, 1 warning"`` from the problems' severities; ``"no problems"`` if there are none."""
    counts = dict.fromkeys(_SEVERITIES, 0)
    for level in levels:
        counts[str(level)] = counts.get(str(level), 0) + 1
    parts = [counted(n, level, "info" if level == "info" else None) for level, n in counts.items() if n]
    return ", ".join(parts) if parts else "no problems"
