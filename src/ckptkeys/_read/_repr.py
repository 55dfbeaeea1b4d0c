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

__all__ = ["LINE_CHARS", "call", "clipped", "counted", "nbytes", "one_line", "severities", "shortened"]

# A subject (a path, a tensor's name) longer than this shows its end: the file or tag name.
_SUBJECT_CHARS: Final = 64
_ELLIPSIS: Final = "..."
# Sizes from here on are shown rounded, in three digits.
_EXACT_BYTES: Final = 10**15
# A repr is at most this long, whatever the object holds (a message, a path, a list of codes).
LINE_CHARS: Final = 200
# One value of a call-like repr (``Limits(max_depth=50)``): at most this long.
_VALUE_CHARS: Final = 48
# An int of more bits is shown by its size (a huge int's decimal digits are slow, even refused).
_INT_BITS: Final = 64
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


def shortened(text: str, chars: int) -> str:
    """``repr(text)`` in at most ``chars`` characters and the quotes, keeping its end (a path's
    file name): an ellipsis first where it is cut."""
    return _shortened(text, chars)


def clipped(text: str, chars: int) -> str:
    """``repr(text)`` in at most ``chars`` characters and the quotes, keeping its start (a
    message's first words): an ellipsis last where it is cut. One line: escapes count."""
    if len(shown := repr(text)) <= chars + 2:
        return shown
    keep = min(len(text), chars)
    while keep and len(repr(text[:keep])) > chars + 2 - len(_ELLIPSIS):
        keep -= 1
    part = repr(text[:keep])
    return part[:-1] + _ELLIPSIS + part[-1]


def _value(value: object) -> str:
    """One value of a call-like repr, in at most about :data:`_VALUE_CHARS` characters."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > _INT_BITS:
        return f"<{value.bit_length()}-bit int>"
    if isinstance(value, str):
        return clipped(value, _VALUE_CHARS)
    if isinstance(value, tuple) and all(isinstance(item, str) for item in value):
        items: list[str] = []
        for item in value:
            text = clipped(item, _VALUE_CHARS // 2)
            if sum(len(i) + 2 for i in items) + len(text) > _VALUE_CHARS:
                items.append(_ELLIPSIS)
                break
            items.append(text)
        return "(" + ", ".join(items) + ("," if len(value) == 1 else "") + ")"
    shown = repr(value)
    if len(shown) > _VALUE_CHARS or not shown.isprintable():
        return clipped(shown, _VALUE_CHARS)  # quoted: the repr of something long or multi-line
    return shown


def call(obj: object, items: Iterable[tuple[str, object]]) -> str:
    """``Class(name=value, ...)`` in at most :data:`LINE_CHARS` characters: each value shortened,
    and ``...`` for the items that no longer fit."""
    head = f"{type(obj).__name__}("
    shown: list[str] = []
    length = len(head) + 1
    for name, value in items:
        text = f"{name}={_value(value)}"
        if length + len(text) + 2 > LINE_CHARS - len(_ELLIPSIS) - 2:
            shown.append(_ELLIPSIS)
            break
        shown.append(text)
        length += len(text) + 2
    return head + ", ".join(shown) + ")"


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
